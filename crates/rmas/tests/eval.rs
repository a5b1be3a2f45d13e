//! Evaluation pieces: code answers run against LiveCodeBench functional and stdin/stdout cases in
//! the sandbox with the reference's outcomes; data files (JSONL, JSON, CSV, parquet) and Hub dataset
//! repos read as rows; the reference's selection orders (CPython `random`, numpy for `datasets`);
//! shards; record layouts for code answers and several rollouts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rmas::eval::data::{self, Shuffle, load_rows, read_rows, select, shard};
use rmas::eval::record::{CodeOutcome, sample_record};
use rmas::eval::{EvalItem, Outcome, RecordHead, RmasFields, Rollout, RunLabel, evaluate_code};
use rmas::hub::Hub;
use rmas::tools::PythonConfig;
use rmas_text::Dataset;
use rmas_text::scoring::{CodeTests, compare_answers};
use serde_json::{Value, json};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/eval");

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

fn run(code: &str, tests: &CodeTests, timeout_s: u64) -> rmas::eval::CodeEval {
    evaluate_code(&PythonConfig::from_env(), code, tests, Duration::from_secs(timeout_s))
}

fn functional(fn_name: &str, cases: &[(&str, &str)]) -> CodeTests {
    CodeTests::Functional {
        fn_name: fn_name.into(),
        inputs: cases.iter().map(|c| c.0.to_owned()).collect(),
        outputs: cases.iter().map(|c| c.1.to_owned()).collect(),
    }
}

fn stdio(cases: &[(&str, &str)]) -> CodeTests {
    CodeTests::Stdio {
        inputs: cases.iter().map(|c| c.0.to_owned()).collect(),
        outputs: cases.iter().map(|c| c.1.to_owned()).collect(),
    }
}

#[test]
fn livecodebench_functional_cases() {
    let tests = functional("twoSum", &[("[2, 7, 11, 15]\n9", "[0, 1]"), ("[3, 2, 4]\n6", "[1, 2]")]);
    let solution = "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        seen = {}\n        for i, x in enumerate(nums):\n            if target - x in seen:\n                return (seen[target - x], i)\n            seen[x] = i\n";
    let ok = run(solution, &tests, 6);
    assert!(
        ok.all_passed && ok.passed_tests == 2 && ok.total_tests == 2 && ok.error_type.is_none() && ok.detail == "OK",
        "{ok:?}"
    );
    let wrong = run("def twoSum(nums, target):\n    return [0, 1]\n", &tests, 6);
    assert_eq!(
        (wrong.error_type.as_deref(), wrong.passed_tests, wrong.failed_test_index),
        (Some("WA"), 1, Some(1)),
        "{wrong:?}"
    );
    assert!(wrong.detail.contains("\"expected\": \"[1, 2]\""), "{}", wrong.detail);
    let crash = run("def twoSum(nums, target):\n    return nums[99]\n", &tests, 6);
    assert_eq!(crash.error_type.as_deref(), Some("RE"));
    assert!(crash.detail.contains("IndexError"), "{}", crash.detail);
    assert_eq!(run("x = 1\n", &tests, 6).error_type.as_deref(), Some("NO_FUNC"));
    assert_eq!(run("def twoSum(:\n", &tests, 6).error_type.as_deref(), Some("CE/RE"));
    // Printing from the candidate breaks the runner's one-line result, as in the reference.
    assert_eq!(
        run("print('debug')\ndef twoSum(n, t):\n    return [0, 1]\n", &tests, 6).error_type.as_deref(),
        Some("EVAL_BAD_OUTPUT")
    );
    assert_eq!(
        run("def twoSum(n, t):\n    return 1\n", &functional("twoSum", &[("not json", "1")]), 6).error_type.as_deref(),
        Some("BAD_TEST_FORMAT")
    );
    let slow = run("def twoSum(n, t):\n    while True:\n        pass\n", &tests, 1);
    assert_eq!((slow.error_type.as_deref(), slow.detail.as_str()), (Some("TLE"), "function timeout"));
    let empty = run("  \n", &tests, 6);
    assert_eq!((empty.error_type.as_deref(), empty.failed_test_index), (Some("EMPTY_CODE"), Some(0)));
    let none = run("def twoSum(n, t):\n    return 1\n", &functional("twoSum", &[]), 6);
    assert_eq!((none.error_type.as_deref(), none.total_tests), (Some("NO_TESTS"), 0));
}

#[test]
fn livecodebench_stdio_cases() {
    let tests = stdio(&[("3\n1 2 3\n", "6\n"), ("2\n0.5 0.25\n", "0.750\n")]);
    let sum = "n = int(input())\nprint(sum(float(x) if '.' in x else int(x) for x in input().split()))\n";
    let ok = run(sum, &tests, 6);
    assert!(ok.all_passed && ok.passed_tests == 2, "numbers compare as decimals: {ok:?}");
    let wrong = run("print(6)\n", &tests, 6);
    assert_eq!((wrong.error_type.as_deref(), wrong.passed_tests, wrong.failed_test_index), (Some("WA"), 1, Some(1)));
    assert!(wrong.detail.starts_with("{\"input\": \"2\\n0.5 0.25\\n\", \"expected\": "), "{}", wrong.detail);
    let crash = run("raise SystemExit(4)\n", &tests, 6);
    assert_eq!((crash.error_type.as_deref(), crash.failed_test_index), (Some("RE"), Some(0)));
    let slow = run("import time\ntime.sleep(30)\n", &tests, 1);
    assert_eq!((slow.error_type.as_deref(), slow.detail.as_str()), (Some("TLE"), "subprocess timeout"));
}

#[test]
fn livecodebench_rows_give_their_public_tests() {
    let row = json!({
        "question_content": "Add two numbers.",
        "starter_code": "class Solution:\n    def add(self, a: int, b: int) -> int:\n        ",
        "metadata": "{\"func_name\": \"add\"}",
        "public_test_cases": "[{\"input\": \"1\\n2\", \"output\": \"3\", \"testtype\": \"functional\"}]",
        "solution": "ref",
    });
    let item = EvalItem::from_row(Dataset::LiveCodeBench, &row, 0, 42, "row").unwrap();
    assert_eq!(item.fn_name.as_deref(), Some("add"));
    assert_eq!(item.gold_answer_raw, "ref");
    let answer = "```python\nclass Solution:\n    def add(self, a, b):\n        return a + b\n```";
    let Outcome::Code(code) =
        rmas::eval::score(&item, Dataset::LiveCodeBench, "livecodebench", answer, &PythonConfig::from_env())
    else {
        panic!("a code outcome")
    };
    assert!(code.correct && code.parse_ok && code.eval.passed_tests == 1, "{code:?}");
    // Private tests: base64 of zlib of a pickled JSON string (Python: base64.b64encode(zlib.compress(
    // pickle.dumps(json.dumps([{"input": "5\n6", "output": "11", "testtype": "functional"}]))))).
    let mut private = row.clone();
    private["private_test_cases"] = json!(PRIVATE_BLOB);
    let item = EvalItem::from_row(Dataset::LiveCodeBench, &private, 0, 42, "row")
        .unwrap()
        .with_private_tests(&private, "row")
        .unwrap();
    assert_eq!(item.tests, Some(functional("add", &[("1\n2", "3"), ("5\n6", "11")])));
    private["private_test_cases"] = json!("bm90IHpsaWI=");
    let err = EvalItem::from_row(Dataset::LiveCodeBench, &private, 0, 42, "rows.jsonl:9")
        .unwrap()
        .with_private_tests(&private, "rows.jsonl:9")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("rows.jsonl:9") && err.contains("not zlib"), "{err}");
    let bad = json!({"question_content": "q", "public_test_cases": "[{\"input\": 1}]"});
    let err = EvalItem::from_row(Dataset::LiveCodeBench, &bad, 0, 42, "rows.jsonl:3").unwrap_err().to_string();
    assert!(err.starts_with("rows.jsonl:3") && err.contains("test case 0 has no string `input`"), "{err}");
}

#[test]
fn data_files_read_as_rows() {
    let gsm = read_rows(&fixture("gsm8k-test.parquet")).unwrap();
    assert_eq!(gsm.len(), 3);
    assert!(gsm[1].0.ends_with("gsm8k-test.parquet#1"));
    let item = EvalItem::from_row(Dataset::Gsm8k, &gsm[1].1, 1, 42, &gsm[1].0).unwrap();
    assert_eq!(item.question, "A box holds 12 eggs. How many in 3 boxes?");
    assert!(compare_answers(&item.gold_answer_raw, "\\boxed{36}", "gsm8k").correct);

    let mbpp = read_rows(&fixture("mbppplus-test.parquet")).unwrap();
    assert_eq!(mbpp[0].1["task_id"], 2);
    assert_eq!(mbpp[1].1["test_list"], json!(["assert is_not_prime(2) == False", "assert is_not_prime(10) == True"]));
    let item = EvalItem::from_row(Dataset::MbppPlus, &mbpp[1].1, 1, 42, &mbpp[1].0).unwrap();
    // The reference takes the last `assert name(` of the test script: here the checker's argument.
    assert_eq!(item.fn_name.as_deref(), Some("candidate"));
    assert_eq!(
        item.tests,
        Some(CodeTests::Script { script: mbpp[1].1["test"].as_str().unwrap().to_owned(), num_tests: 2 })
    );

    let gpqa = read_rows(&fixture("gpqa.csv")).unwrap();
    assert_eq!(gpqa[0].1["Question"], "Which gas do plants\nabsorb?");
    assert_eq!(gpqa[1].1["Question"], "Pick the prime, \"carefully\".");
    assert_eq!(gpqa[1].0, format!("{}:4", fixture("gpqa.csv").display()), "a record's line counts the quoted newline");
    let item = EvalItem::from_row(Dataset::Gpqa, &gpqa[0].1, 0, 42, &gpqa[0].0).unwrap();
    let gold_line = item.question.lines().find(|l| l.ends_with("Carbon dioxide")).unwrap();
    assert_eq!(&gold_line[..1], item.gold_answer_raw, "GPQA's gold is the letter its correct answer lands on");

    let dir = std::env::temp_dir().join(format!("rmas-eval-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("medqa.json");
    std::fs::write(&list, json!([{"question": "Q?", "options": ["A. x", "B. y"], "answer": "y"}]).to_string()).unwrap();
    let rows = read_rows(&list).unwrap();
    assert_eq!(EvalItem::from_row(Dataset::MedQa, &rows[0].1, 0, 42, &rows[0].0).unwrap().gold_answer_raw, "B");
    std::fs::write(&list, "{\"not\": \"a list\"}").unwrap();
    assert!(read_rows(&list).unwrap_err().to_string().contains("expected a JSON list of row objects"));
    let jsonl = dir.join("rows.jsonl");
    std::fs::write(&jsonl, "{\"problem\": \"1\"}\n\n[1, 2]\n").unwrap();
    let err = read_rows(&jsonl).unwrap_err().to_string();
    assert!(err.contains("rows.jsonl:3") && err.contains("expected a JSON object"), "{err}");
    let csv = dir.join("ragged.csv");
    std::fs::write(&csv, "a,b\n1,2\n3\n").unwrap();
    assert!(read_rows(&csv).unwrap_err().to_string().contains("ragged.csv:3"));
}

#[test]
fn hub_dataset_repos_resolve_through_the_cache() {
    let cache = std::env::temp_dir().join(format!("rmas-eval-hub-{}", std::process::id()));
    let snapshot = cache.join("datasets--openai--gsm8k/snapshots/abc123/main");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::write(cache.join("datasets--openai--gsm8k/refs/main"), "abc123").unwrap_or_else(|_| {
        std::fs::create_dir_all(cache.join("datasets--openai--gsm8k/refs")).unwrap();
        std::fs::write(cache.join("datasets--openai--gsm8k/refs/main"), "abc123").unwrap();
    });
    std::fs::copy(fixture("gsm8k-test.parquet"), snapshot.join("test-00000-of-00001.parquet")).unwrap();
    let hub = Hub::new(&cache).with_offline(true).with_progress(false);
    let rows = load_rows(Dataset::Gsm8k, None, Some("test"), &hub).unwrap();
    assert_eq!(rows.len(), 3);
    let err = load_rows(Dataset::Gsm8k, None, Some("train"), &hub).unwrap_err().to_string();
    assert!(err.contains("openai/gsm8k") && err.contains("train"), "{err}");
    let err = load_rows(Dataset::Math500, None, None, &hub).unwrap_err().to_string();
    assert!(
        err.contains("HuggingFaceH4/MATH-500") && err.contains("test.jsonl") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
    assert!(load_rows(Dataset::MedQa, None, None, &hub).unwrap_err().to_string().contains("--data"));
    assert_eq!(data::default_split(Dataset::Gpqa), "train");
}

#[test]
fn selection_orders_as_the_reference_and_shards_partition() {
    let rows: Vec<usize> = (0..10).collect();
    assert_eq!(select(rows.clone(), Shuffle::None, Some(3)), [0, 1, 2]);
    // CPython: random.Random(42).shuffle(list(range(10))); numpy: default_rng(42).permutation(10).
    assert_eq!(select(rows.clone(), Shuffle::Python(42), None), [7, 3, 2, 8, 5, 6, 9, 4, 0, 1]);
    assert_eq!(select(rows.clone(), Shuffle::Numpy(42), Some(4)), [5, 6, 0, 7]);
    assert_eq!(Shuffle::reference(Dataset::MbppPlus, 1), Shuffle::Python(1));
    assert_eq!(Shuffle::reference(Dataset::Math500, 1), Shuffle::Numpy(1));
    let mut all: Vec<usize> = (1..=3).flat_map(|k| shard(rows.clone(), k, 3)).collect();
    all.sort();
    assert_eq!(all, rows, "shards are disjoint and cover every row");
    assert_eq!(shard(rows, 2, 3), [1, 4, 7]);
}

fn head() -> RecordHead {
    RecordHead {
        sample_idx: 4,
        run: RunLabel {
            dataset: "mbppplus".into(),
            dataset_split: "test".into(),
            method: "ours_recursive".into(),
            mas_shape: "chain".into(),
            latent_steps: 16,
        },
        question: "q".into(),
        gold_answer_raw: "check(f)".into(),
    }
}

/// The fields every record starts with, as the reference writes them.
const HEAD_FIELDS: [&str; 8] =
    ["sample_idx", "dataset", "dataset_split", "method", "mas_shape", "latent_steps", "question", "gold_answer_raw"];
/// rmas's own fields, last.
const RMAS_FIELDS: [&str; 5] = ["rmas_answer", "rmas_token_ids", "rmas_ms", "rmas_settings", "rmas_strict_correct"];

fn fields<const N: usize>(parts: [&[&str]; N]) -> Vec<String> {
    parts.iter().flat_map(|p| p.iter()).map(|f| f.to_string()).collect()
}

fn keys(line: &str) -> Vec<String> {
    // Top-level keys in order: the line is written by rmas, with `"key": ` after `{` or `, `.
    let value: Value = serde_json::from_str(line).unwrap();
    let mut keys: Vec<(usize, String)> =
        value.as_object().unwrap().keys().map(|k| (line.find(&format!("\"{k}\": ")).unwrap(), k.clone())).collect();
    keys.sort();
    keys.into_iter().map(|(_, k)| k).collect()
}

#[test]
fn records_have_the_reference_layouts() {
    let eval = run("", &CodeTests::Script { script: "pass".into(), num_tests: 3 }, 10);
    let code = Outcome::Code(CodeOutcome { pred_code_parsed: String::new(), parse_ok: false, correct: false, eval });
    let rmas = RmasFields {
        rmas_answer: vec!["a".into()],
        rmas_token_ids: vec![vec![1]],
        rmas_ms: vec![1.5],
        rmas_settings: "s".into(),
        rmas_strict_correct: None,
    };
    let line = sample_record(&head(), &[Rollout { sample_seed: 42, outcome: code.clone() }], &rmas);
    assert!(line.starts_with("{\"sample_idx\": 4, \"dataset\": \"mbppplus\", "), "Python's json.dumps layout: {line}");
    let code_fields = ["pred_code_parsed", "parse_ok", "correct", "eval", "rollout_idx", "sample_seed"];
    assert_eq!(keys(&line), fields([&HEAD_FIELDS[..], &code_fields, &RMAS_FIELDS[..4]]));
    assert!(line.contains("\"eval\": {\"all_passed\": false, \"passed_tests\": 0, \"total_tests\": 3, \"failed_test_index\": 0, \"error_type\": \"EMPTY_CODE\", \"detail\": \"No code after parsing\"}"), "{line}");

    let answer = |pred: &str| Outcome::Answer(compare_answers("12", pred, "math500"));
    let rollouts = [
        Rollout { sample_seed: 42, outcome: answer("\\boxed{11}") },
        Rollout { sample_seed: 43, outcome: answer("\\boxed{12}") },
    ];
    let rmas = RmasFields { rmas_strict_correct: Some(vec![false, true]), ..rmas };
    let line = sample_record(&head(), &rollouts, &rmas);
    let multi_fields = ["pass_at_k_correct", "rollouts", "gold_answer_parsed"];
    assert_eq!(keys(&line), fields([&HEAD_FIELDS[..], &multi_fields, &RMAS_FIELDS[..]]));
    let value: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["pass_at_k_correct"], true);
    assert_eq!(
        value["rollouts"][1],
        json!({"rollout_idx": 1, "sample_seed": 43, "pred_answer_parsed": "12", "correct": true, "gold_norm": "intpart:12", "pred_norm": "intpart:12"})
    );
}

/// See `livecodebench_rows_give_their_public_tests`.
const PRIVATE_BLOB: &str =
    "eJxrYJnqyAABPbbR1UqZeQWlJUpWCkqmMXlmSjoKSvmlJVARQ0MQvyS1uKSksiAVJJJWmpdckpmfl5ijVBs7RQ8A+AMWAQ==";
