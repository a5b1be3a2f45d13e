//! The question text and function name of one dataset row, built as the reference pipeline's
//! loaders build them (docs/algorithm.md, "Datasets and question text").

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::error::{Result, TextError};
use crate::prompts::{is_choice_question, with_choice_instruction};
use crate::pyrandom::PyRandom;
use crate::pystr::{py_rstrip, py_strip};
use crate::vocab::Dataset;

/// Test lines of an MBPP+ row shown in its question.
const MBPP_PROMPT_TESTS: usize = 3;

/// What the prompts take from one dataset row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowQuestion {
    /// The question text as given to the prompts.
    pub question: String,
    /// The function the code prompts ask for, when the row names one.
    pub fn_name: Option<String>,
}

/// Builds the question of `row` (one record of `dataset`, as its Hub dataset stores it) for a run
/// seeded with `seed`: MATH500/GSM8K/AIME `question` or `problem`; GPQA `Question` with its four answers
/// in the order `seed` and the stem draw; MedQA `query`/`question` with its `options`; MBPP+ `prompt`
/// with its first three `test_list` assertions and the function name from its tests or reference
/// code; LiveCodeBench `question_content` with its starter code and `metadata.func_name`; the
/// retrieval datasets (HotpotQA, Bamboogle) their `question` as it is.
pub fn row_question(dataset: Dataset, row: &Value, seed: u64) -> Result<RowQuestion> {
    let text = |field: &str| row.get(field).and_then(Value::as_str);
    let required = |field: &str| {
        text(field).ok_or_else(|| row_error(dataset, format!("no string field `{field}` (fields: {})", fields(row))))
    };
    match dataset {
        Dataset::Math500 | Dataset::Gsm8k | Dataset::Aime25 | Dataset::Aime26 => {
            // The reference takes the `question` column when the dataset has one, else `problem`.
            let column = if row.get("question").is_some() { "question" } else { "problem" };
            let problem = text(column).ok_or_else(|| {
                row_error(dataset, format!("no string field `question` or `problem` (fields: {})", fields(row)))
            })?;
            Ok(RowQuestion { question: problem.to_owned(), fn_name: None })
        }
        Dataset::Gpqa => {
            let stem = first_text(dataset, row, &["Question", "question", "query", "prompt"])?;
            let mut options = Vec::with_capacity(4);
            for keys in GPQA_OPTIONS {
                options.push(first_text(dataset, row, &keys)?);
            }
            let order = gpqa_order(&stem, seed);
            let lines: Vec<String> =
                order.iter().zip(['A', 'B', 'C', 'D']).map(|(&i, label)| format!("{label}. {}", options[i])).collect();
            Ok(RowQuestion {
                question: with_choice_instruction(&format!("{stem}\n{}", lines.join("\n"))),
                fn_name: None,
            })
        }
        Dataset::MedQa => {
            // The first of `query`, `question` that is a non-empty string, stripped.
            let question =
                ["query", "question"].iter().find_map(|k| text(k).filter(|t| !t.is_empty())).ok_or_else(|| {
                    row_error(
                        dataset,
                        format!("no non-empty string field `query` or `question` (fields: {})", fields(row)),
                    )
                })?;
            let mut question = py_strip(question).to_owned();
            // A non-empty `options` list goes one per line under a text that letters no options.
            match row.get("options") {
                Some(Value::Array(options)) if !options.is_empty() && !is_choice_question(&question) => {
                    let options = options
                        .iter()
                        .map(|o| {
                            py_str(o).ok_or_else(|| row_error(dataset, format!("`options` holds {o}, not a string")))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    question = format!("{}\n{}", py_rstrip(&question), options.join("\n"));
                }
                _ => {}
            }
            Ok(RowQuestion { question: with_choice_instruction(&question), fn_name: None })
        }
        Dataset::MbppPlus => {
            let prompt = py_strip(required("prompt")?);
            let tests: Vec<&str> = match row.get("test_list") {
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|t| t.as_str().ok_or_else(|| row_error(dataset, "`test_list` holds a non-string".into())))
                    .collect::<Result<_>>()?,
                _ => Vec::new(),
            };
            let shown = &tests[..tests.len().min(MBPP_PROMPT_TESTS)];
            let question = if shown.is_empty() {
                prompt.to_owned()
            } else {
                format!("{prompt}\n\nYour solution should satisfy assertions like:\n{}", shown.join("\n"))
            };
            let fn_name = mbpp_fn_name(text("test").unwrap_or(""), &tests, text("code").unwrap_or(""));
            Ok(RowQuestion { question, fn_name })
        }
        Dataset::LiveCodeBench => {
            let mut question = py_strip(required("question_content")?).to_owned();
            if let Some(starter) = text("starter_code").filter(|s| !py_strip(s).is_empty()) {
                question.push_str("\n\nStarter code:\n");
                question.push_str(starter);
            }
            // `metadata` is a JSON object serialised into a string.
            let metadata: Value = match text("metadata") {
                Some(m) if !m.is_empty() => {
                    serde_json::from_str(m).map_err(|e| row_error(dataset, format!("`metadata` is not JSON: {e}")))?
                }
                _ => Value::Null,
            };
            let fn_name =
                metadata.get("func_name").and_then(Value::as_str).filter(|n| !n.is_empty()).map(str::to_owned);
            Ok(RowQuestion { question, fn_name })
        }
        Dataset::HotpotQa | Dataset::Bamboogle => {
            let question = first_text(dataset, row, &["question", "Question"])?;
            Ok(RowQuestion { question, fn_name: None })
        }
    }
}

/// The gold answer the reference records for `row` (`gold_answer_raw`): the `answer` column of
/// MATH-500, GSM8K, AIME and the QA sets; GPQA's correct letter after the option shuffle of
/// `seed`; MedQA's letter (its `answer` matched against the options); the MBPP+ test script; a
/// LiveCodeBench row's `solution`.
pub fn row_gold(dataset: Dataset, row: &Value, seed: u64) -> Result<String> {
    match dataset {
        Dataset::Math500
        | Dataset::Gsm8k
        | Dataset::Aime25
        | Dataset::Aime26
        | Dataset::HotpotQa
        | Dataset::Bamboogle => {
            ["answer", "Answer"].iter().find_map(|k| row.get(k).and_then(py_str)).ok_or_else(|| {
                row_error(
                    dataset,
                    format!("no gold answer: no string or number field `answer` (fields: {})", fields(row)),
                )
            })
        }
        Dataset::Gpqa => {
            let stem = first_text(dataset, row, &["Question", "question", "query", "prompt"])?;
            let order = gpqa_order(&stem, seed);
            let position = order.iter().position(|&i| i == 0).expect("a permutation of 0..4");
            Ok(['A', 'B', 'C', 'D'][position].to_string())
        }
        Dataset::MedQa => Ok(crate::scoring::medqa_gold(row).to_string()),
        Dataset::MbppPlus => Ok(row.get("test").and_then(Value::as_str).unwrap_or_default().to_owned()),
        Dataset::LiveCodeBench => Ok(row.get("solution").and_then(Value::as_str).unwrap_or_default().to_owned()),
    }
}

/// GPQA's option order for a run seeded with `seed`: CPython's
/// `Random(int(md5("{seed}::{stem}")[:16], 16)).shuffle([0, 1, 2, 3])` (index 0 is the correct one).
fn gpqa_order(stem: &str, seed: u64) -> [usize; 4] {
    let digest = md5::compute(format!("{seed}::{stem}"));
    let mut order = [0usize, 1, 2, 3];
    PyRandom::new(u64::from_be_bytes(digest.0[..8].try_into().expect("16-byte digest")).into()).shuffle(&mut order);
    order
}

/// The function an MBPP+ row tests: the last `assertion(name(` of its test script, else its last
/// `assert name(`, else the first `assert name(` of its test list, else its reference code's first
/// `def`.
fn mbpp_fn_name(script: &str, tests: &[&str], code: &str) -> Option<String> {
    static ASSERTION: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"assertion\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(").expect("constant regex"));
    static ASSERT: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"assert\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(").expect("constant regex"));
    static DEF: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?m)^\s*def\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(").expect("constant regex"));
    let last = |re: &Regex| re.captures_iter(script).last().map(|c| c[1].to_owned());
    last(&ASSERTION)
        .or_else(|| last(&ASSERT))
        .or_else(|| tests.iter().find_map(|t| ASSERT.captures(t).map(|c| c[1].to_owned())))
        .or_else(|| DEF.captures(code).map(|c| c[1].to_owned()))
}

/// A GPQA row's answer fields (each under either spelling): the correct one first.
const GPQA_OPTIONS: [[&str; 2]; 4] = [
    ["Correct Answer", "correct_answer"],
    ["Incorrect Answer 1", "incorrect_answer_1"],
    ["Incorrect Answer 2", "incorrect_answer_2"],
    ["Incorrect Answer 3", "incorrect_answer_3"],
];

/// The first of `keys` whose value is non-empty once stripped, stripped.
fn first_text(dataset: Dataset, row: &Value, keys: &[&str]) -> Result<String> {
    keys.iter()
        .filter_map(|k| row.get(k).and_then(py_str))
        .map(|t| py_strip(&t).to_owned())
        .find(|t| !t.is_empty())
        .ok_or_else(|| {
            row_error(
                dataset,
                format!(
                    "no non-empty field {} (fields: {})",
                    keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" or "),
                    fields(row)
                ),
            )
        })
}

/// Python's `str(value)` for the scalar JSON values rows hold (strings, integers, booleans).
fn py_str(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "True" } else { "False" }.to_owned()),
        _ => None,
    }
}

fn row_error(dataset: Dataset, reason: String) -> TextError {
    TextError::DatasetRow { dataset: dataset.key(), reason }
}

/// The row's field names, for errors.
fn fields(row: &Value) -> String {
    match row.as_object() {
        Some(map) => map.keys().map(String::as_str).collect::<Vec<_>>().join(", "),
        None => format!(
            "the row is not a JSON object but {}",
            match row {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        ),
    }
}
