//! The `rmas` binary end to end: the demo run's JSON, its agreement with the library's demo settings
//! (which the web demo uses too), and clear errors offline and for bad dataset rows.

use std::process::Command;

use burn::backend::NdArray;
use chrono::NaiveDate;
use rmas::engine::Run;
use serde_json::Value;

fn rmas(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rmas")).args(args).env("NO_COLOR", "1").output().expect("the rmas binary runs")
}

#[test]
fn demo_run_json_matches_the_library_demo() {
    let out = rmas(&["run", "--demo", "--backend", "cpu", "--json", "--chat-date", "01 Jan 2026"]);
    assert!(out.status.success(), "rmas run --demo failed: {}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).expect("--json prints one JSON object");
    let ids: Vec<u32> = serde_json::from_value(json["token_ids"].clone()).expect("token_ids");
    let stages = json["stages"].as_array().expect("stages");
    let kinds: Vec<(&str, &str)> =
        stages.iter().map(|s| (s["agent"].as_str().unwrap(), s["kind"].as_str().unwrap())).collect();
    let round = [("math", "latent"), ("code", "latent"), ("science", "latent"), ("summarizer", "text")];
    let expected: Vec<_> = round.iter().copied().chain([("summarizer", "latent")]).chain(round).collect();
    assert_eq!(kinds, expected, "two mixture rounds, the summarizer also speaking in round 1");

    let device = Default::default();
    let system = rmas::demo::mixture::<NdArray>(&device, rmas::demo::SEED, burn::tensor::DType::F32).unwrap();
    let opts = rmas::demo::run_options(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap());
    let result =
        rmas_models::block_on(Run::new(&system, &opts, rmas::demo::QUESTION, None, &mut |_| {}).execute()).unwrap();
    assert_eq!(ids, result.token_ids, "the CLI's demo defaults are the library's");
    assert_eq!(json["answer"], result.answer.as_str());
    assert_eq!(ids.len(), opts.max_new_tokens);
}

#[test]
fn quantized_demo_run_matches_the_library() {
    let args = ["run", "--demo", "--backend", "cpu", "--json", "--chat-date", "01 Jan 2026", "--quantize", "int4"];
    let out = rmas(&args);
    assert!(out.status.success(), "rmas run --demo --quantize int4: {}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).expect("--json prints one JSON object");
    let ids: Vec<u32> = serde_json::from_value(json["token_ids"].clone()).expect("token_ids");
    let precision = rmas_models::Precision::new(
        burn::tensor::DType::F32,
        rmas_models::Blocks::Quantize(rmas_models::BlockFormat::Q4_1),
    );
    let system = rmas::demo::mixture::<NdArray>(&Default::default(), rmas::demo::SEED, precision).unwrap();
    let opts = rmas::demo::run_options(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap());
    let result =
        rmas_models::block_on(Run::new(&system, &opts, rmas::demo::QUESTION, None, &mut |_| {}).execute()).unwrap();
    assert_eq!(ids, result.token_ids, "--quantize int4 is the library's Q4_1 agents");
}

#[test]
fn non_finite_latents_name_the_agent_and_round() {
    // The planner's norms give NaN (rms_norm_eps < 0), so its latents are NaN: the run must stop
    // at its rollout, naming it, instead of passing NaN messages on and decoding token 0.
    let hub = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/golden/systems/sequential-light-r2/hub");
    let snapshots = hub.join("models--RecursiveMAS--Sequential-Light-Planner-Qwen3-1.7B/snapshots");
    let snapshot = std::fs::read_dir(&snapshots).unwrap().next().unwrap().unwrap().path();
    let tmp = std::env::temp_dir().join(format!("rmas-cli-nan-latents-{}", std::process::id()));
    let planner = tmp.join("planner");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&planner).unwrap();
    for entry in std::fs::read_dir(&snapshot).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), planner.join(entry.file_name())).unwrap();
    }
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(planner.join("config.json")).unwrap()).unwrap();
    config["rms_norm_eps"] = serde_json::json!(-1e30);
    std::fs::write(planner.join("config.json"), config.to_string()).unwrap();
    let description = tmp.join("nan.toml");
    let toml = format!(
        "style = \"sequential_light\"\n[[agents]]\nrole = \"planner\"\nsource = \"{}\"\ninner_link = \"adapter(math).pt\"\n",
        planner.display()
    );
    std::fs::write(&description, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rmas"))
        .args(["run", "--system", description.to_str().unwrap(), "--question", "1+1?", "--backend", "cpu"])
        .args(["--greedy", "--max-new-tokens", "4"])
        .env("NO_COLOR", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", &hub)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("agent planner computed non-finite latents in round 1"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn offline_style_without_cache_names_the_repo() {
    let home = std::env::temp_dir().join(format!("rmas-cli-empty-hf-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_rmas"))
        .args(["run", "--style", "mixture", "--question", "1+1?", "--backend", "cpu"])
        .env("HF_HOME", &home)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RecursiveMAS/"), "error should name the missing repo: {err}");
    assert!(!err.contains("panicked"), "no panic: {err}");
}

#[test]
fn dataset_row_errors_name_the_file_and_field() {
    let dir = std::env::temp_dir().join(format!("rmas-cli-row-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let row = dir.join("row.json");
    std::fs::write(&row, r#"{"task_id": 7, "code": "def f(): pass"}"#).unwrap();
    let row = row.to_str().unwrap();
    let out = rmas(&["run", "--style", "mixture", "--dataset", "mbppplus", "--row", row, "--backend", "cpu"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(row) && err.contains("no string field `prompt`"),
        "error should name the file and field: {err}"
    );
    let out = rmas(&["run", "--style", "mixture", "--row", row, "--question", "q"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "--row and --question conflict"
    );
    assert!(!err.contains("panicked"), "no panic: {err}");
}

#[test]
fn zero_rounds_is_an_error() {
    let out = rmas(&["run", "--demo", "--backend", "cpu", "--rounds", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("run option `rounds` must be at least 1 (got 0)"), "{err}");
}

#[test]
fn non_finite_logits_are_an_error_not_text() {
    // rms_norm_eps below zero makes every norm the square root of a negative number: NaN logits,
    // which greedy decoding would print as token 0 over and over.
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden/models/qwen2/model");
    let dir = std::env::temp_dir().join(format!("rmas-cli-nan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config["rms_norm_eps"] = serde_json::json!(-1e30);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let out = rmas(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        "1,2,3",
        "--max-new-tokens",
        "4",
        "--backend",
        "cpu",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("non-finite"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `rmas run --questions-file`: plain lines and JSONL objects, run in batches of 3 (continuous
/// batching over 5 questions): each JSON line, in file order, carries the ids its question gets from
/// `rmas run --question` alone. A file without questions and a bad JSON line are errors naming the file.
#[test]
fn questions_file_runs_each_question_as_alone() {
    let dir = std::env::temp_dir().join(format!("rmas-questions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let questions = [
        "What is 2 + 3?",
        "A train leaves at noon and travels 60 km per hour for three hours. How far does it go?",
        "Why?",
        "List the primes below twenty and add them up, showing each step of the sum.",
        "What is 2 + 3?",
    ];
    let mut lines: Vec<String> = questions[..4].iter().map(|q| q.to_string()).collect();
    lines.push(serde_json::json!({ "question": questions[4] }).to_string());
    let file = dir.join("questions.txt");
    std::fs::write(&file, format!("{}\n\n", lines.join("\n"))).unwrap();
    let common = ["run", "--demo", "--backend", "cpu", "--json", "--chat-date", "01 Jan 2026"];
    let out = rmas(&[&common[..], &["--questions-file", file.to_str().unwrap(), "--batch-size", "3"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), questions.len());
    for (i, (record, question)) in records.iter().zip(questions).enumerate() {
        assert_eq!(record["index"], i, "file order");
        assert_eq!(record["question"], question);
        let alone = rmas(&[&common[..], &["--question", question]].concat());
        assert!(alone.status.success());
        let alone: Value = serde_json::from_slice(&alone.stdout).unwrap();
        assert_eq!(record["token_ids"], alone["token_ids"], "question {i}: ids in the batch vs alone");
        assert_eq!(record["answer"], alone["answer"]);
    }

    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "\n \n").unwrap();
    let out = rmas(&[&common[..], &["--questions-file", empty.to_str().unwrap()]].concat());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no questions"), "{}", String::from_utf8_lossy(&out.stderr));
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "What?\n{\"question\": \n").unwrap();
    let out = rmas(&[&common[..], &["--questions-file", bad.to_str().unwrap()]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.jsonl line 2") && err.contains("not JSON"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A batch whose one question cannot fit in memory fails before anything runs, naming the estimate
/// and the limit (the CPU backend knows the host's free memory).
#[test]
fn a_batch_that_cannot_fit_fails_early_with_the_estimate() {
    let file = std::env::temp_dir().join(format!("rmas-huge-{}.txt", std::process::id()));
    std::fs::write(&file, "What is 2 + 3?\n").unwrap();
    let args = ["run", "--demo", "--backend", "cpu", "--json", "--max-new-tokens", "100000000000"];
    let out = rmas(&[&args[..], &["--questions-file", file.to_str().unwrap()]].concat());
    std::fs::remove_file(&file).ok();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("batch-size") && err.contains("cache needs about") && err.contains("MiB free"), "{err}");
    assert!(out.stdout.is_empty(), "nothing ran");
}
