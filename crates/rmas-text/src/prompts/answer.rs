//! Answer retry (`--ans`, recursivemas.md §9): detect a missing answer, build the continuation prompt.

use std::sync::LazyLock;

use regex::Regex;

use super::MasTask;
use crate::pystr::{py_rstrip, py_strip};

/// Retry suffix when a math answer has no `\boxed{...}`.
pub const MATH_RETRY_SUFFIX: &str = "Final Answer: \\boxed{";
/// Retry suffix when no choice letter can be extracted.
pub const CHOICE_RETRY_SUFFIX: &str = "Final Choice: \\boxed{";
/// Retry suffix when no Python code block is found.
pub const CODE_RETRY_SUFFIX: &str = "Your previous output format was invalid. Now output only final code and nothing else.\nFinal Code:\n```python\n";

/// One answer-retry continuation of the final agent on raw text (no chat template).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerRetry {
    /// Appended after the stripped answer and a newline.
    pub suffix: &'static str,
    /// Generation budget of the continuation.
    pub max_new_tokens: usize,
}

impl AnswerRetry {
    /// The continuation prompt: `text.rstrip() + "\n" + suffix`.
    pub fn prompt(&self, text: &str) -> String {
        format!("{}\n{}", py_rstrip(text), self.suffix)
    }
}

/// The retry to run when `text` lacks the answer `kind` expects; `None` when the answer is there.
pub fn answer_retry(kind: MasTask, text: &str) -> Option<AnswerRetry> {
    let (missing, suffix, max_new_tokens) = match kind {
        MasTask::Math => (extract_boxed(text).is_none(), MATH_RETRY_SUFFIX, 16),
        MasTask::Choice => (extract_choice(text).is_none(), CHOICE_RETRY_SUFFIX, 16),
        MasTask::Code => (extract_python_code(text).is_none(), CODE_RETRY_SUFFIX, 256),
    };
    missing.then_some(AnswerRetry {
        suffix,
        max_new_tokens,
    })
}

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("constant regex")
}

/// The last `\boxed{...}` content, stripped (innermost-brace-free match first, then greedy).
pub fn extract_boxed(text: &str) -> Option<String> {
    static FLAT: LazyLock<Regex> = LazyLock::new(|| regex(r"\\boxed\{([^{}]+)\}"));
    static GREEDY: LazyLock<Regex> = LazyLock::new(|| regex(r"\\boxed\{(.*)\}"));
    [&*FLAT, &*GREEDY]
        .iter()
        .find_map(|re| re.captures_iter(text).last())
        .map(|caps| py_strip(&caps[1]).to_owned())
}

/// The chosen letter A-D: from the boxed answer, the last `Final Choice/Answer:` line, or the text.
pub fn extract_choice(text: &str) -> Option<char> {
    static FINAL_LINE: LazyLock<Regex> =
        LazyLock::new(|| regex(r"(?im)Final\s*(?:Choice|Answer)\s*:\s*(.+)$"));
    let final_line = FINAL_LINE
        .captures_iter(text)
        .last()
        .map(|caps| caps[1].to_owned());
    let candidates = [
        extract_boxed(text),
        final_line,
        Some(py_strip(text).to_owned()),
    ];
    candidates
        .iter()
        .flatten()
        .find_map(|candidate| choice_letter(candidate))
}

/// A letter after a choice keyword, or a leading `A` / `(B)` / `C:` form.
fn choice_letter(text: &str) -> Option<char> {
    static KEYWORD: LazyLock<Regex> = LazyLock::new(|| {
        regex(
            r"(?i)(?:final\s*(?:choice|answer)|correct\s*(?:choice|option|answer)|choice|option|answer)\s*[:\-]?\s*[\(\[]?\s*([A-Da-d])\b",
        )
    });
    static DIRECT: LazyLock<Regex> =
        LazyLock::new(|| regex(r"^\s*[\(\[]?\s*([A-Da-d])(?:\s*[\)\]]|\s*[:\.\-]|$)"));
    let text = py_strip(text);
    if text.is_empty() {
        return None;
    }
    let caps = KEYWORD.captures(text).or_else(|| DIRECT.captures(text))?;
    caps[1].chars().next().map(|c| c.to_ascii_uppercase())
}

/// The first non-empty ```` ```python ```` block after removing `<think>...</think>` blocks.
pub fn extract_python_code(text: &str) -> Option<String> {
    static THINK: LazyLock<Regex> = LazyLock::new(|| regex(r"(?is)<think>.*?</think>"));
    static FENCE: LazyLock<Regex> = LazyLock::new(|| regex(r"(?is)```python\s*(.*?)```"));
    let cleaned = THINK.replace_all(text, "");
    let block = py_strip(FENCE.captures(py_strip(&cleaned))?.get(1)?.as_str());
    // A block that only repeats the language tag holds no code.
    let code = match block.get(..7) {
        Some(head) if head.eq_ignore_ascii_case("python\n") => py_strip(&block[7..]),
        _ if block.eq_ignore_ascii_case("python") => "",
        _ => block,
    };
    (!code.is_empty()).then(|| code.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn math_answers() {
        assert_eq!(
            extract_boxed(r"so \boxed{1} then \boxed{ 12 }"),
            Some("12".to_owned())
        );
        assert_eq!(
            extract_boxed(r"x \boxed{\frac{1}{2}} y"),
            Some(r"\frac{1}{2}".to_owned())
        );
        assert!(answer_retry(MasTask::Math, r"\boxed{3}").is_none());
        let retry = answer_retry(MasTask::Math, "no answer  \n").unwrap();
        assert_eq!(retry.max_new_tokens, 16);
        assert_eq!(
            retry.prompt("no answer  \n"),
            "no answer\nFinal Answer: \\boxed{"
        );
    }

    #[test]
    fn choice_answers() {
        assert_eq!(extract_choice(r"thus \boxed{c}"), Some('C'));
        assert_eq!(extract_choice("blah\nFinal Choice: (B)\n"), Some('B'));
        assert_eq!(extract_choice("The correct option: D."), Some('D'));
        assert_eq!(extract_choice("The correct option is D."), None); // as the reference regex
        assert_eq!(extract_choice("(A) because"), Some('A'));
        assert_eq!(extract_choice("Because of that"), None);
        assert_eq!(
            answer_retry(MasTask::Choice, "unsure").map(|r| r.suffix),
            Some(CHOICE_RETRY_SUFFIX)
        );
    }

    #[test]
    fn code_answers() {
        let text = "<think>```python\nx=1```</think>Here:\n```Python\ndef f():\n    return 1\n```";
        assert_eq!(
            extract_python_code(text),
            Some("def f():\n    return 1".to_owned())
        );
        assert_eq!(
            extract_python_code("<think>```python\nx=1\n```</think>"),
            None
        );
        assert_eq!(extract_python_code("```python\n```"), None);
        let retry = answer_retry(MasTask::Code, "def f(): pass").unwrap();
        assert_eq!(retry.max_new_tokens, 256);
        assert!(retry.prompt("x").ends_with("Final Code:\n```python\n"));
    }
}
