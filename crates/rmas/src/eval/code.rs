//! Running a candidate program against its row's tests in the python sandbox, with the outcomes
//! the reference records (`eval`: `all_passed`, `passed_tests`, `total_tests`, `failed_test_index`,
//! `error_type` ∈ null/EMPTY_CODE/NO_TESTS/RE/WA/TLE/…, `detail`); see `docs/eval.md`.

use std::time::Duration;

use rmas_text::scoring::{CodeTests, IMPORT_PRELUDE, compare_stdio_output};
use serde::{Deserialize, Serialize};

use crate::tools::{PythonConfig, PythonTool};

/// The reference's per-sample limit for MBPP+ test scripts.
pub const MBPP_TIMEOUT: Duration = Duration::from_secs(10);
/// The reference's per-test limit for LiveCodeBench.
pub const LCB_TIMEOUT: Duration = Duration::from_secs(6);

/// The outcome of one program's tests, field for field as the reference's `eval` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeEval {
    /// Every test passed.
    pub all_passed: bool,
    /// Tests passed before the first failure.
    pub passed_tests: usize,
    /// Tests of the row.
    pub total_tests: usize,
    /// The failing test, when one failed.
    pub failed_test_index: Option<usize>,
    /// `EMPTY_CODE`, `NO_TESTS`, `RE`, `WA`, `TLE`, `CE/RE`, `NO_FUNC`, `BAD_TEST_FORMAT`,
    /// `EVAL_CRASH` or `EVAL_BAD_OUTPUT`; `None` when all passed.
    pub error_type: Option<String>,
    /// `OK`, or what went wrong (output cut as the reference cuts it).
    pub detail: String,
}

impl CodeEval {
    fn failed(passed: usize, total: usize, index: Option<usize>, error: &str, detail: String) -> Self {
        Self {
            all_passed: false,
            passed_tests: passed,
            total_tests: total,
            failed_test_index: index,
            error_type: Some(error.to_owned()),
            detail,
        }
    }

    fn passed(total: usize) -> Self {
        Self {
            all_passed: true,
            passed_tests: total,
            total_tests: total,
            failed_test_index: None,
            error_type: None,
            detail: "OK".to_owned(),
        }
    }
}

/// The reference's `_cut`: at most `max_chars` characters, then a truncation mark.
fn cut(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}\n...<truncated>...", &text[..end]),
        None => text.to_owned(),
    }
}

/// Runs `code` against `tests` in `sandbox` (its limits, with the time limit set per test as the
/// reference sets it from `timeout`).
pub fn evaluate_code(sandbox: &PythonConfig, code: &str, tests: &CodeTests, timeout: Duration) -> CodeEval {
    let total = tests.total();
    let first = (total > 0).then_some(0);
    let tool = |limit: Duration| PythonTool::new(PythonConfig { timeout: limit, ..sandbox.clone() });
    let secs = timeout.as_secs().max(1);
    match tests {
        CodeTests::Script { script, .. } => {
            let code = rmas_text::pystr::py_strip(code);
            let script = rmas_text::pystr::py_strip(script);
            if code.is_empty() {
                return CodeEval::failed(0, total, Some(0), "EMPTY_CODE", "No code after parsing".into());
            }
            if script.is_empty() {
                return CodeEval::failed(0, 0, None, "NO_TESTS", "No executable tests available".into());
            }
            let source = format!("{IMPORT_PRELUDE}\n\n{code}\n\n{script}\n");
            match tool(Duration::from_secs(secs)).run_program(&source, None) {
                Err(e) => CodeEval::failed(0, total, Some(0), "EVAL_CRASH", format!("cannot run the sandbox: {e}")),
                Ok(None) => CodeEval::failed(0, total, Some(0), "TLE", format!("Execution exceeded {secs} seconds")),
                Ok(Some(out)) if out.exit_code != 0 => {
                    let shown = if out.stderr.is_empty() { &out.stdout } else { &out.stderr };
                    CodeEval::failed(0, total, Some(0), "RE", cut(shown, 1000))
                }
                Ok(Some(_)) => CodeEval::passed(total),
            }
        }
        _ if rmas_text::pystr::py_strip(code).is_empty() => {
            CodeEval::failed(0, total, first, "EMPTY_CODE", "No code after parsing".into())
        }
        _ if total == 0 => CodeEval::failed(0, 0, None, "NO_TESTS", "No executable tests available".into()),
        CodeTests::Functional { fn_name, inputs, outputs } => {
            let job = serde_json::json!({
                "source": format!("{IMPORT_PRELUDE}\n\n{code}"),
                "fn_name": fn_name,
                "inputs": inputs,
                "outputs": outputs,
                "timeout_s": secs,
            });
            let job = serde_json::to_string(&serde_json::to_string(&job).expect("JSON values serialize"))
                .expect("strings serialize");
            let runner = include_str!("functional_runner.py").replace("RMAS_JOB_JSON", &job);
            let whole = Duration::from_secs((secs * total.max(1) as u64 + 5).max(10));
            match tool(whole).run_program(&runner, None) {
                Err(e) => CodeEval::failed(0, total, first, "EVAL_CRASH", format!("cannot run the sandbox: {e}")),
                Ok(None) => CodeEval::failed(0, total, first, "TLE", "functional-eval subprocess timeout".into()),
                Ok(Some(out)) if out.exit_code != 0 => {
                    CodeEval::failed(0, total, first, "EVAL_CRASH", cut(&out.stderr, 800))
                }
                Ok(Some(out)) => serde_json::from_str(rmas_text::pystr::py_strip(&out.stdout)).unwrap_or_else(|e| {
                    CodeEval::failed(
                        0,
                        total,
                        first,
                        "EVAL_BAD_OUTPUT",
                        cut(&format!("parse_error={e} stdout={}", out.stdout), 800),
                    )
                }),
            }
        }
        CodeTests::Stdio { inputs, outputs } => {
            let tool = tool(Duration::from_secs(secs));
            for (index, (input, expected)) in inputs.iter().zip(outputs).enumerate() {
                let failed = |error: &str, detail: String| CodeEval::failed(index, total, Some(index), error, detail);
                match tool.run_program(code, Some(input.as_bytes())) {
                    Err(e) => return failed("EVAL_CRASH", format!("cannot run the sandbox: {e}")),
                    Ok(None) => return failed("TLE", "subprocess timeout".into()),
                    Ok(Some(out)) if out.exit_code != 0 => return failed("RE", cut(&out.stderr, 800)),
                    Ok(Some(out)) if !compare_stdio_output(&out.stdout, expected) => {
                        return failed(
                            "WA",
                            python_json_object(&[
                                ("input", cut(input, 400)),
                                ("expected", cut(expected, 400)),
                                ("prediction", cut(&out.stdout, 400)),
                            ]),
                        );
                    }
                    Ok(Some(_)) => {}
                }
            }
            CodeEval::passed(total)
        }
    }
}

/// `json.dumps(dict, ensure_ascii=False)` of string fields: `{"k": "v", "k2": "v2"}`.
fn python_json_object(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}: {}", serde_json::Value::from(*k), serde_json::Value::from(v.as_str())))
        .collect();
    format!("{{{}}}", body.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_counts_characters() {
        assert_eq!(cut("héllo", 5), "héllo");
        assert_eq!(cut("héllo", 2), "hé\n...<truncated>...");
    }

    #[test]
    fn python_json_layout() {
        assert_eq!(python_json_object(&[("a", "x\"y".into()), ("b", "é".into())]), r#"{"a": "x\"y", "b": "é"}"#);
    }
}
