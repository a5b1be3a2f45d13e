//! `rmas eval` and `rmas score` end to end: the golden systems evaluated over their questions give
//! the reference's result records field for field; shards merge into the single run's file; a
//! killed run resumes; bad input gets errors that name the file, line and column; `rmas score`
//! reproduces every public case of the official scorer (code answers run in the sandbox).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Value, json};

const SYSTEMS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/golden/systems");
const SCORING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/scoring");

fn rmas(args: &[&str], hub: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rmas"));
    cmd.args(args).env("NO_COLOR", "1").env("HF_HUB_OFFLINE", "1");
    if let Some(hub) = hub {
        cmd.env("HF_HUB_CACHE", hub);
    }
    cmd.output().expect("the rmas binary runs")
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rmas failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "rmas should fail");
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    stderr
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rmas-eval-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The keys of a JSON object line, in the order written.
fn key_order(line: &str) -> Vec<String> {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some((key, IgnoredAny)) = map.next_entry::<String, IgnoredAny>()? {
                keys.push(key);
            }
            Ok(keys)
        }
    }
    serde_json::Deserializer::from_str(line).deserialize_map(Keys).unwrap()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

/// A record without rmas's own fields (what the reference writes).
fn reference_part(line: &str) -> (Vec<String>, Value) {
    let mut value: Value = serde_json::from_str(line).unwrap();
    let keys: Vec<String> = key_order(line).into_iter().filter(|k| !k.starts_with("rmas_")).collect();
    value.as_object_mut().unwrap().retain(|k, _| !k.starts_with("rmas_"));
    (keys, value)
}

/// A record without its wall-clock timings (the only field two runs may differ in).
fn without_timing(line: &str) -> Value {
    let mut value: Value = serde_json::from_str(line).unwrap();
    value.as_object_mut().unwrap().remove("rmas_ms");
    value
}

struct Golden {
    hub: PathBuf,
    expected: Value,
    style: String,
}

fn golden(case: &str) -> Golden {
    let dir = Path::new(SYSTEMS).join(case);
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let style = expected["settings"]["style"].as_str().unwrap().replace('_', "-");
    Golden { hub: dir.join("hub"), expected, style }
}

/// The case's questions as a MATH-500 data file (`problem`, `answer`).
fn data_file(g: &Golden, dir: &Path) -> PathBuf {
    let records = g.expected["result_jsonl_records"].as_array().unwrap();
    let rows: Vec<String> = g.expected["questions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(records)
        .map(|(q, r)| serde_json::json!({"problem": q, "answer": r["gold_answer_raw"]}).to_string())
        .collect();
    let path = dir.join("math500.jsonl");
    std::fs::write(&path, rows.join("\n") + "\n").unwrap();
    path
}

/// `rmas eval` with the golden's settings (greedy, no retry, its T/R/budget and chat date).
fn eval_args<'a>(g: &'a Golden, data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let s = &g.expected["settings"];
    let leak = |v: &Value| -> &'a str { Box::leak(v.to_string().into_boxed_str()) };
    let mut args = vec![
        "eval",
        "--style",
        &g.style,
        "--dataset",
        "math500",
        "--data",
        data,
        "--backend",
        "cpu",
        "--greedy",
        "--no-answer-retry",
        "--chat-date",
        "26 Jul 2024",
        "--latent-steps",
        leak(&s["latent_steps"]),
        "--rounds",
        leak(&s["num_recursive_rounds"]),
        "--max-new-tokens",
        leak(&s["max_new_tokens"]),
        "--result-jsonl",
        out,
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn golden_systems_evaluate_to_the_reference_records_batched_or_not() {
    for case in ["mixture-r2", "sequential-light-r2"] {
        let g = golden(case);
        let dir = scratch(case);
        let data = data_file(&g, &dir);
        let out = dir.join("result.jsonl");
        let stdout = ok(&rmas(&eval_args(&g, data.to_str().unwrap(), out.to_str().unwrap(), &[]), Some(&g.hub)));
        let expected = g.expected["result_jsonl_records"].as_array().unwrap();
        let written = lines(&out);
        assert_eq!(written.len(), expected.len(), "{case}: one record per question, then the summary");
        let final_outputs = g.expected["final_outputs"].as_array().unwrap();
        for (i, (line, want)) in written.iter().zip(expected).enumerate() {
            let (keys, got) = reference_part(line);
            assert_eq!(&got, want, "{case} line {i}: the reference's record");
            let want_keys: Vec<String> = want.as_object().unwrap().keys().cloned().collect();
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(sorted, want_keys, "{case} line {i}: the same fields");
            if i < final_outputs.len() {
                let record: Value = serde_json::from_str(line).unwrap();
                assert_eq!(record["rmas_answer"][0], final_outputs[i], "{case}: the golden's final text");
            }
        }
        // Field order as the reference's dicts: the summary's and a sample's.
        assert_eq!(
            key_order(written.last().unwrap()),
            [
                "type",
                "dataset",
                "dataset_split",
                "method",
                "mas_shape",
                "latent_steps",
                "num_samples",
                "num_rollouts",
                "sample_seed_base",
                "per_rollout_num_correct",
                "per_rollout_accuracy",
                "num_correct",
                "accuracy",
                "pass_at_k"
            ]
        );
        assert_eq!(
            reference_part(&written[0]).0,
            [
                "sample_idx",
                "dataset",
                "dataset_split",
                "method",
                "mas_shape",
                "latent_steps",
                "question",
                "gold_answer_raw",
                "gold_answer_parsed",
                "pred_answer_parsed",
                "correct",
                "gold_norm",
                "pred_norm",
                "rollout_idx",
                "sample_seed"
            ]
        );
        let summary = expected.last().unwrap();
        let headline = format!(
            "accuracy={:.2}% ({}/{})",
            summary["accuracy"].as_f64().unwrap(),
            summary["num_correct"],
            summary["num_samples"]
        );
        assert!(stdout.contains(&headline), "{case}: prints {headline}: {stdout}");
        // The run above packs its questions (default --batch-size); one at a time gives the same records.
        let single = dir.join("batch1.jsonl");
        ok(&rmas(
            &eval_args(&g, data.to_str().unwrap(), single.to_str().unwrap(), &["--batch-size", "1"]),
            Some(&g.hub),
        ));
        let records = |lines: &[String]| lines.iter().map(|l| without_timing(l)).collect::<Vec<_>>();
        assert_eq!(records(&lines(&single)), records(&written), "{case}: batch 1 vs batched records");
    }
}

#[test]
fn shards_merge_into_the_single_run_and_a_killed_run_resumes() {
    let g = golden("mixture-r2");
    let dir = scratch("shards");
    let data = data_file(&g, &dir);
    let data = data.to_str().unwrap();
    let single = dir.join("single.jsonl");
    ok(&rmas(&eval_args(&g, data, single.to_str().unwrap(), &[]), Some(&g.hub)));
    let mut shards = Vec::new();
    for k in 1..=2 {
        let path = dir.join(format!("shard{k}.jsonl"));
        let shard = format!("{k}/2");
        ok(&rmas(&eval_args(&g, data, path.to_str().unwrap(), &["--shard", &shard]), Some(&g.hub)));
        assert_eq!(lines(&path).len(), 2, "shard {k}: one question and its summary");
        shards.push(path);
    }
    let merged = dir.join("merged.jsonl");
    let mut args = vec!["eval", "merge"];
    args.extend(shards.iter().map(|p| p.to_str().unwrap()));
    args.extend(["--output", merged.to_str().unwrap()]);
    ok(&rmas(&args, None));
    let (a, b) = (lines(&single), lines(&merged));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(without_timing(x), without_timing(y), "merge == single run");
    }
    assert_eq!(a.last(), b.last(), "identical summary lines");

    // A run killed while writing its second record: the partial line is dropped and redone.
    let killed = dir.join("killed.jsonl");
    let first = &a[0];
    std::fs::write(&killed, format!("{first}\n{}", &a[1][..a[1].len() / 2])).unwrap();
    ok(&rmas(&eval_args(&g, data, killed.to_str().unwrap(), &["--resume"]), Some(&g.hub)));
    let resumed = lines(&killed);
    assert_eq!(resumed[0], *first, "finished records are kept as they were");
    assert_eq!(resumed.len(), a.len());
    for (x, y) in a.iter().zip(&resumed) {
        assert_eq!(without_timing(x), without_timing(y), "resumed == single run");
    }
    // Resuming with other settings is refused.
    let err = failed(&rmas(&eval_args(&g, data, killed.to_str().unwrap(), &["--resume", "--seed", "7"]), Some(&g.hub)));
    assert!(err.contains("other settings") && err.contains("killed.jsonl"), "{err}");
    // A shard's file resumed as another shard is refused.
    let err =
        failed(&rmas(&eval_args(&g, data, shards[0].to_str().unwrap(), &["--resume", "--shard", "2/2"]), Some(&g.hub)));
    assert!(err.contains("does not include"), "{err}");
}

#[test]
fn bad_data_gets_errors_naming_file_line_and_column() {
    let g = golden("mixture-r2");
    let dir = scratch("bad");
    let out = dir.join("out.jsonl");
    let out = out.to_str().unwrap();
    let missing = dir.join("rows.jsonl");
    std::fs::write(
        &missing,
        "{\"problem\": \"1+1?\", \"answer\": \"2\"}\n{\"question_text\": \"x\", \"answer\": \"3\"}\n",
    )
    .unwrap();
    let err = failed(&rmas(&eval_args(&g, missing.to_str().unwrap(), out, &[]), Some(&g.hub)));
    assert!(err.contains("rows.jsonl:2") && err.contains("`problem`"), "names file, line and column: {err}");
    let no_gold = dir.join("nogold.jsonl");
    std::fs::write(&no_gold, "{\"problem\": \"1+1?\"}\n").unwrap();
    let err = failed(&rmas(&eval_args(&g, no_gold.to_str().unwrap(), out, &[]), Some(&g.hub)));
    assert!(err.contains("nogold.jsonl:1") && err.contains("`answer`"), "{err}");
    let parquet = dir.join("broken.parquet");
    std::fs::write(&parquet, b"PAR1 this is not parquet").unwrap();
    let err = failed(&rmas(&eval_args(&g, parquet.to_str().unwrap(), out, &[]), Some(&g.hub)));
    assert!(err.contains("broken.parquet") && err.contains("parquet"), "{err}");
    let txt = dir.join("rows.txt");
    std::fs::write(&txt, "1+1?").unwrap();
    let err = failed(&rmas(&eval_args(&g, txt.to_str().unwrap(), out, &[]), Some(&g.hub)));
    assert!(err.contains("rows.txt") && err.contains(".jsonl"), "{err}");
    let err =
        failed(&rmas(&["eval", "--style", "mixture", "--dataset", "mathvista", "--backend", "cpu"], Some(&g.hub)));
    assert!(err.contains("mathvista"), "names the unknown dataset: {err}");
    let err = failed(&rmas(&["eval", "--style", "mixture", "--dataset", "medqa", "--backend", "cpu"], Some(&g.hub)));
    assert!(err.contains("--data"), "MedQA needs its file: {err}");
    let err = failed(&rmas(&["eval", "--style", "mixture", "--dataset", "math500", "--backend", "cpu"], Some(&dir)));
    assert!(
        err.contains("HuggingFaceH4/MATH-500") && err.contains("HF_HUB_OFFLINE"),
        "offline without the dataset names its repo: {err}"
    );
}

#[test]
fn score_reproduces_the_official_scorer() {
    let dir = scratch("score");
    let text = std::fs::read_to_string(Path::new(SCORING).join("cases.jsonl")).unwrap();
    let cases: Vec<Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap()).filter(|c: &Value| c["kind"] != "medqa_gold").collect();
    let input: Vec<String> = cases
        .iter()
        .map(|c| {
            let mut line =
                serde_json::json!({"id": c["id"], "dataset": c["dataset"], "prediction": c["inputs"]["prediction"]});
            match c["kind"].as_str().unwrap() {
                "code" => line["row"] = c["inputs"]["row"].clone(),
                _ => line["gold_answer_raw"] = c["inputs"]["gold_answer_raw"].clone(),
            }
            line.to_string()
        })
        .collect();
    let input_path = dir.join("in.jsonl");
    std::fs::write(&input_path, input.join("\n")).unwrap();
    let out_path = dir.join("out.jsonl");
    ok(&rmas(&["score", "--input", input_path.to_str().unwrap(), "--output", out_path.to_str().unwrap()], None));
    let out = lines(&out_path);
    assert_eq!(out.len(), cases.len() + 1, "one line per input, then the summary");
    let mut correct = 0;
    for (case, line) in cases.iter().zip(&out) {
        let got: Value = serde_json::from_str(line).unwrap();
        assert_eq!(got["id"], case["id"]);
        let expected = case["expected"].as_object().unwrap();
        for (key, want) in expected {
            let value = match key.as_str() {
                "question" | "fn_name" => continue,
                "error_type" | "passed_tests" | "total_tests" => &got["eval"][key],
                _ => &got[key],
            };
            assert_eq!(value, want, "{} field {key}", case["id"]);
        }
        correct += usize::from(got["correct"] == true);
    }
    let summary: Value = serde_json::from_str(out.last().unwrap()).unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["num_samples"], cases.len());
    assert_eq!(summary["num_correct"], correct);
    // The strict check beside the reference's: `2^{10}` is not 2, though its first integer is; 10% is 0.1.
    std::fs::write(&input_path, "{\"dataset\": \"math500\", \"gold_answer_raw\": \"2^{10}\", \"prediction\": \"\\\\boxed{2}\"}\n{\"dataset\": \"math500\", \"gold_answer_raw\": \"10\\\\%\", \"prediction\": \"\\\\boxed{0.1}\"}\n").unwrap();
    let out = rmas(&["score", "--input", input_path.to_str().unwrap(), "--output", "-", "--scorer", "strict"], None);
    let stdout = ok(&out);
    let scored: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!((&scored[0]["correct"], &scored[0]["strict_correct"]), (&json!(true), &json!(false)));
    assert_eq!((&scored[1]["correct"], &scored[1]["strict_correct"]), (&json!(false), &json!(true)));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("accuracy=50.00% (1/2)")
            && stderr.contains("strict accuracy=50.00% (1/2)")
            && stderr.contains("disagreements on 2"),
        "{stderr}"
    );
    // Bad input names the line.
    std::fs::write(&input_path, "{\"dataset\": \"gsm8k\", \"prediction\": \"3\"}\n").unwrap();
    let err = failed(&rmas(
        &["score", "--input", input_path.to_str().unwrap(), "--output", out_path.to_str().unwrap()],
        None,
    ));
    assert!(err.contains("in.jsonl:1") && err.contains("gold_answer_raw"), "{err}");
}

#[test]
fn latent_steps_sweep_writes_a_file_per_setting_and_a_plot() {
    let g = golden("sequential-light-r2");
    let dir = scratch("sweep");
    let data = data_file(&g, &dir);
    let out = dir.join("sweep.jsonl");
    let plot = dir.join("sweep.svg");
    let mut args = eval_args(&g, data.to_str().unwrap(), out.to_str().unwrap(), &["--plot", plot.to_str().unwrap()]);
    let t = args.iter().position(|a| *a == "--latent-steps").unwrap();
    args[t + 1] = "2,3";
    let stdout = ok(&rmas(&args, Some(&g.hub)));
    assert!(
        stdout.contains("[result] accuracy=") && stdout.contains("ls=2:accuracy=") && stdout.contains("ls=3:accuracy="),
        "{stdout}"
    );
    let t3 = lines(&dir.join("sweep.t3.jsonl"));
    let expected = g.expected["result_jsonl_records"].as_array().unwrap();
    for (line, want) in t3.iter().zip(expected) {
        assert_eq!(&reference_part(line).1, want, "the T = 3 setting is the golden run");
    }
    let t2 = lines(&dir.join("sweep.t2.jsonl"));
    assert_eq!(serde_json::from_str::<Value>(&t2[0]).unwrap()["latent_steps"], 2);
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("T=2") && svg.contains("T=3"), "{svg}");
}

#[test]
fn code_scoring_fails_closed_without_the_sandbox() {
    let dir = scratch("sandbox");
    let input = dir.join("in.jsonl");
    let row =
        json!({"prompt": "add", "test_list": ["assert add(1, 2) == 3"], "test": "assert add(1, 2) == 3", "code": ""});
    let line = json!({"id": 0, "dataset": "mbppplus", "prediction": "```python\ndef add(a, b):\n    return a + b\n```", "row": row});
    std::fs::write(&input, line.to_string()).unwrap();
    // A PATH without bubblewrap: only the interpreter is reachable.
    let python = Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output().unwrap();
    let python = String::from_utf8(python.stdout).unwrap().trim().to_owned();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(&python, bin.join("python3")).unwrap();
    let score = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rmas"));
        cmd.args(["score", "--input", input.to_str().unwrap(), "--output", "-"]).args(extra);
        cmd.env("PATH", &bin).env("RMAS_PYTHON", &python).env_remove("RMAS_UNSAFE_TOOLS");
        cmd.output().unwrap()
    };
    let err = failed(&score(&[]));
    assert!(
        err.contains("sandbox is not available") && err.contains("bubblewrap") && err.contains("--unsafe-tools"),
        "{err}"
    );
    let out = score(&["--unsafe-tools"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("WITHOUT isolation"), "{stderr}");
    let first: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(first["correct"], json!(true), "{first}");

    let doctor =
        Command::new(env!("CARGO_BIN_EXE_rmas")).args(["doctor", "--json"]).env("PATH", &bin).output().unwrap();
    assert!(!doctor.status.success());
    let report: Value = serde_json::from_slice(&doctor.stdout).unwrap();
    assert_eq!(report["sandbox"], json!(false));
    assert!(report["reason"].as_str().unwrap().contains("bubblewrap"), "{report}");
}
