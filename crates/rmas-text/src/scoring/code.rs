//! Code answers: the program the reference extracts from a model's text, and the tests a dataset
//! row gives it (MBPP+ test scripts; LiveCodeBench functional and stdin/stdout cases). Running them
//! needs a sandbox and lives in `rmas::eval`.

use std::sync::LazyLock;

use serde_json::Value;

use super::regex;
use crate::error::{Result, TextError};
use crate::pystr::{py_split_whitespace, py_splitlines, py_strip};
use regex::Regex;

/// The imports the reference runs before every candidate program (`lcb_utils.IMPORT_STRING`).
pub const IMPORT_PRELUDE: &str = "from string import *\nfrom re import *\nfrom datetime import *\n\
from collections import *\nfrom heapq import *\nfrom bisect import *\nfrom copy import *\nfrom math import *\n\
from random import *\nfrom statistics import *\nfrom itertools import *\nfrom functools import *\n\
from operator import *\nfrom io import *\nfrom sys import *\nfrom json import *\nfrom builtins import *\n\
from typing import *\nimport string\nimport re\nimport datetime\nimport collections\nimport heapq\nimport bisect\n\
import copy\nimport math\nimport random\nimport statistics\nimport itertools\nimport functools\nimport operator\n\
import io\nimport sys\nimport json\nsys.setrecursionlimit(50000)";

/// The program in a model's answer: the first ```` ```python ```` block once `<think>` blocks are
/// removed, without fence lines or a leading `python` tag; empty when there is none.
pub fn extract_python_code(text: &str) -> String {
    static THINK: LazyLock<Regex> = LazyLock::new(|| regex(r"(?is)<think>.*?</think>"));
    static FENCE: LazyLock<Regex> = LazyLock::new(|| regex(r"(?is)```python\s*(.*?)```"));
    let cleaned = THINK.replace_all(text, "");
    let Some(block) = FENCE.captures(py_strip(&cleaned)).and_then(|c| c.get(1)) else { return String::new() };
    sanitize(py_strip(block.as_str()))
}

/// The reference's `sanitize_code_for_execution`.
fn sanitize(code: &str) -> String {
    let mut code = py_strip(code);
    if code.is_empty() {
        return String::new();
    }
    if code.starts_with("```") {
        code = code.split_once('\n').map_or("", |(_, rest)| rest);
    }
    let kept: Vec<&str> =
        py_splitlines(code).into_iter().filter(|line| !py_strip(line).to_lowercase().starts_with("```")).collect();
    let joined = kept.join("\n");
    let code = py_strip(&joined);
    if code.to_lowercase().starts_with("python\n") {
        code.split_once('\n').map_or("", |(_, rest)| py_strip(rest)).to_owned()
    } else if code.to_lowercase() == "python" {
        String::new()
    } else {
        code.to_owned()
    }
}

/// The tests of one code row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeTests {
    /// MBPP+: the row's test script, run after the program; all pass when it exits with 0.
    Script {
        /// The script (`test` column).
        script: String,
        /// Assertions counted for the record (`test_list` length, at least 1).
        num_tests: usize,
    },
    /// LiveCodeBench functional: call `fn_name` (on `Solution()` when the program defines it)
    /// with each input's JSON lines as arguments; compare with the JSON output.
    Functional {
        /// The method or function to call.
        fn_name: String,
        /// One JSON value per line per case.
        inputs: Vec<String>,
        /// One JSON value per case.
        outputs: Vec<String>,
    },
    /// LiveCodeBench stdin/stdout: feed each input, compare the printed lines (numbers as
    /// decimals).
    Stdio {
        /// Standard input per case.
        inputs: Vec<String>,
        /// Expected standard output per case.
        outputs: Vec<String>,
    },
}

impl CodeTests {
    /// Appends LiveCodeBench cases (`{input, output, …}` objects) to functional or stdin/stdout
    /// tests; a test script takes none.
    pub fn push_cases(&mut self, cases: &[Value]) -> std::result::Result<(), String> {
        let (CodeTests::Functional { inputs, outputs, .. } | CodeTests::Stdio { inputs, outputs }) = self else {
            return Ok(());
        };
        for (i, case) in cases.iter().enumerate() {
            let text = |key: &str| {
                case.get(key)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or(format!("test case {i} has no string `{key}`"))
            };
            inputs.push(text("input")?);
            outputs.push(text("output")?);
        }
        Ok(())
    }

    /// Number of test cases the record reports.
    pub fn total(&self) -> usize {
        match self {
            CodeTests::Script { num_tests, .. } => (*num_tests).max(1),
            CodeTests::Functional { inputs, .. } | CodeTests::Stdio { inputs, .. } => inputs.len(),
        }
    }
}

/// The tests of an MBPP+ row (`test` script, `test_list` count).
pub fn mbpp_code_tests(row: &Value) -> CodeTests {
    let script = row.get("test").and_then(Value::as_str).unwrap_or_default().to_owned();
    let num_tests = row.get("test_list").and_then(Value::as_array).map_or(0, Vec::len);
    CodeTests::Script { script, num_tests }
}

/// The public tests of a LiveCodeBench row (`public_test_cases`, a JSON list of `{input, output,
/// testtype}` in a string; `metadata.func_name` makes them functional), as the reference reads them.
pub fn lcb_code_tests(row: &Value) -> Result<CodeTests> {
    let field = |name: &str| row.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
    let bad = |reason: String| TextError::DatasetRow { dataset: "livecodebench", reason };
    let metadata: Value = match field("metadata") {
        Some(text) => serde_json::from_str(text).map_err(|e| bad(format!("`metadata` is not JSON: {e}")))?,
        None => Value::Object(Default::default()),
    };
    let cases: Vec<Value> = match field("public_test_cases") {
        Some(text) => {
            serde_json::from_str(text).map_err(|e| bad(format!("`public_test_cases` is not a JSON list: {e}")))?
        }
        None => Vec::new(),
    };
    let (inputs, outputs) = (Vec::new(), Vec::new());
    let mut tests = match metadata.get("func_name").and_then(Value::as_str) {
        Some(fn_name) => CodeTests::Functional { fn_name: fn_name.to_owned(), inputs, outputs },
        None => CodeTests::Stdio { inputs, outputs },
    };
    tests.push_cases(&cases).map_err(bad)?;
    Ok(tests)
}

/// Whether a program's standard output matches the expected one: the same number of stripped
/// lines, each equal as text or as a row of decimal numbers (the reference's comparison).
pub fn compare_stdio_output(prediction: &str, expected: &str) -> bool {
    let lines = |text: &str| -> Vec<String> {
        match py_strip(text) {
            "" => Vec::new(),
            text => text.split('\n').map(|l| py_strip(l).to_owned()).collect(),
        }
    };
    let (pred, want) = (lines(prediction), lines(expected));
    pred.len() == want.len()
        && pred.iter().zip(&want).all(|(p, w)| {
            p == w
                || match (decimals(p), decimals(w)) {
                    (Some(p), Some(w)) => p == w,
                    _ => false,
                }
        })
}

/// A line's whitespace-separated fields as Python `Decimal`s (`None` when one is no number).
fn decimals(line: &str) -> Option<Vec<Decimal>> {
    py_split_whitespace(line).into_iter().map(Decimal::parse).collect()
}

/// A finite decimal in canonical form (`Decimal` equality: `1.50 == 1.5`, `-0 == 0`), or a value
/// that equals nothing (NaN) or only itself (±infinity).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decimal {
    /// Sign, significant digits without leading/trailing zeros (empty for zero), exponent.
    Finite(bool, String, i64),
    Infinity(bool),
    /// NaN compares unequal, so each one is unique.
    NaN(usize),
}

impl Decimal {
    /// Python's `Decimal(text)` (underscores between digits allowed, case-insensitive specials).
    fn parse(text: &str) -> Option<Decimal> {
        static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
            regex(r"^([+-])?(?:(\d(?:_?\d)*)(?:\.((?:\d(?:_?\d)*)?))?|\.(\d(?:_?\d)*))(?:[eE]([+-]?\d(?:_?\d)*))?$")
        });
        static SPECIAL: LazyLock<Regex> = LazyLock::new(|| regex(r"(?i)^([+-])?(inf|infinity|s?nan\d*)$"));
        static NAN_IDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let text = py_strip(text);
        if let Some(c) = SPECIAL.captures(text) {
            let negative = c.get(1).is_some_and(|s| s.as_str() == "-");
            return Some(if c[2].to_lowercase().starts_with("inf") {
                Decimal::Infinity(negative)
            } else {
                Decimal::NaN(NAN_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
            });
        }
        let c = NUMBER.captures(text)?;
        let negative = c.get(1).is_some_and(|s| s.as_str() == "-");
        let digits = |m: Option<regex::Match<'_>>| -> Option<String> {
            match m {
                None => Some(String::new()),
                Some(m) => m.as_str().chars().filter(|&ch| ch != '_').map(super::ascii_digit).collect(),
            }
        };
        let (int, frac) = match c.get(4) {
            Some(m) => (String::new(), digits(Some(m))?),
            None => (digits(c.get(2))?, digits(c.get(3))?),
        };
        let exponent: i64 = match digit_signed(c.get(5).map(|m| m.as_str())) {
            Some(e) => e,
            None if c.get(5).is_some() => return None,
            None => 0,
        };
        let mut digits = format!("{int}{frac}");
        let mut exponent = exponent.checked_sub(frac.len() as i64)?;
        let trimmed = digits.trim_start_matches('0').len();
        digits.drain(..digits.len() - trimmed);
        while digits.ends_with('0') {
            digits.pop();
            exponent += 1;
        }
        if digits.is_empty() {
            return Some(Decimal::Finite(false, String::new(), 0));
        }
        Some(Decimal::Finite(negative, digits, exponent))
    }
}

/// A signed exponent with optional underscores; `None` when absent or too large.
fn digit_signed(text: Option<&str>) -> Option<i64> {
    let text: String = text?
        .chars()
        .filter(|&c| c != '_')
        .map(|c| if c.is_ascii() { Some(c) } else { super::ascii_digit(c) })
        .collect::<Option<_>>()?;
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_as_the_reference_extracts_it() {
        let text = "<think>```python\nx=1```</think>Here:\n```Python\ndef f():\n    return 1\n```";
        assert_eq!(extract_python_code(text), "def f():\n    return 1");
        assert_eq!(extract_python_code("<think>```python\nx=1\n```</think>"), "");
        assert_eq!(extract_python_code("```python\n```"), "");
        assert_eq!(extract_python_code("```python\npython\nx = 1\r\ny = 2\n```"), "x = 1\ny = 2");
        assert_eq!(extract_python_code("```python\n```python\nx = 1\n```"), "");
    }

    #[test]
    fn stdio_numbers_compare_as_decimals() {
        assert!(compare_stdio_output("1.50 2\n", "1.5 2.0"));
        assert!(compare_stdio_output("  a b \n\n", "a b"));
        assert!(!compare_stdio_output("1 2", "1 2\n3"));
        assert!(compare_stdio_output("-0", "0.000"));
        assert!(compare_stdio_output("1e3", "1000"));
        assert!(compare_stdio_output("1_000", "1000"));
        assert!(!compare_stdio_output("nan", "NaN x"));
        assert!(!compare_stdio_output("1.5x", "1.5"));
        assert!(compare_stdio_output("Infinity", "inf"));
    }
}
