//! The reference's answer scoring, reproduced field for field on every public scoring case the
//! official scorer produced (`tests/fixtures/scoring/cases.jsonl`: MATH-500, GSM8K, GPQA and MedQA
//! answers, MedQA gold letters, MBPP+ question/function/code extraction; the code cases' test runs
//! are checked in `crates/rmas/tests/eval.rs`), and the free-form `date` strategy against dateutil.

use std::path::PathBuf;

use rmas_text::Dataset;
use rmas_text::scoring::{compare_answers, extract_python_code, medqa_gold};
use serde_json::Value;

fn fixture(name: &str) -> Vec<Value> {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/scoring")).join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
        .collect()
}

fn cases(kind: &str) -> Vec<Value> {
    let all: Vec<Value> = fixture("cases.jsonl").into_iter().filter(|c| c["kind"] == kind).collect();
    assert!(!all.is_empty(), "no `{kind}` scoring cases");
    all
}

#[test]
fn answers_score_as_the_reference() {
    let cases = cases("answer");
    let mut failures = Vec::new();
    for case in &cases {
        let inputs = &case["inputs"];
        let got = compare_answers(
            inputs["gold_answer_raw"].as_str().unwrap(),
            inputs["prediction"].as_str().unwrap(),
            case["dataset"].as_str().unwrap(),
        );
        let got = serde_json::to_value(&got).unwrap();
        if got != case["expected"] {
            failures.push(format!("{}: got {got}, expected {}", case["id"], case["expected"]));
        }
    }
    assert!(failures.is_empty(), "{} of {} answer cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
    assert!(cases.len() >= 300, "the public set has 348 answer cases");
}

#[test]
fn medqa_gold_letters_as_the_reference() {
    for case in cases("medqa_gold") {
        let got = medqa_gold(&case["inputs"]["row"]).to_string();
        assert_eq!(got, case["expected"]["gold"].as_str().unwrap(), "{}", case["id"]);
    }
}

#[test]
fn code_questions_and_programs_as_the_reference() {
    for case in cases("code") {
        let (row, expected) = (&case["inputs"]["row"], &case["expected"]);
        let built = rmas_text::row_question(Dataset::MbppPlus, row, 42).unwrap();
        assert_eq!(built.question, expected["question"].as_str().unwrap(), "{}", case["id"]);
        assert_eq!(built.fn_name.as_deref(), expected["fn_name"].as_str(), "{}", case["id"]);
        let code = extract_python_code(case["inputs"]["prediction"].as_str().unwrap());
        assert_eq!(code, expected["pred_code_parsed"].as_str().unwrap(), "{}", case["id"]);
        assert_eq!(!code.is_empty(), expected["parse_ok"].as_bool().unwrap(), "{}", case["id"]);
    }
}

#[test]
fn free_form_dates_as_dateutil_reads_them() {
    let cases = fixture("dates.jsonl");
    let mut failures = Vec::new();
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let want = case["date"].as_str().unwrap();
        // The date strategy decides when both sides read as the same date.
        let score = compare_answers(text, text, "gsm8k");
        let got = score.gold_norm.strip_prefix("date:").unwrap_or("");
        if got != want {
            failures.push(format!("{text:?}: got {got:?}, dateutil {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} dates differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
