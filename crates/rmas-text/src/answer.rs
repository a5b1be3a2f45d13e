//! Answer retry (`--ans`, docs/algorithm.md, "Answer retry"): detect a missing answer, build the continuation prompt.

use crate::pystr::py_rstrip;
use crate::scoring::{extract_boxed, extract_choice, extract_python_code};
use crate::vocab::MasTask;

/// Retry suffix when a math answer has no `\boxed{...}`.
pub const MATH_RETRY_SUFFIX: &str = "Final Answer: \\boxed{";
/// Retry suffix when no choice letter can be extracted.
pub const CHOICE_RETRY_SUFFIX: &str = "Final Choice: \\boxed{";
/// Retry suffix when no Python code block is found.
pub const CODE_RETRY_SUFFIX: &str =
    "Your previous output format was invalid. Now output only final code and nothing else.\nFinal Code:\n```python\n";

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
        MasTask::Code => (extract_python_code(text).is_empty(), CODE_RETRY_SUFFIX, 256),
    };
    missing.then_some(AnswerRetry { suffix, max_new_tokens })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn math_answers() {
        assert_eq!(extract_boxed(r"so \boxed{1} then \boxed{ 12 }"), Some("12".to_owned()));
        assert_eq!(extract_boxed(r"x \boxed{\frac{1}{2}} y"), Some(r"\frac{1}{2}".to_owned()));
        assert!(answer_retry(MasTask::Math, r"\boxed{3}").is_none());
        let retry = answer_retry(MasTask::Math, "no answer  \n").unwrap();
        assert_eq!(retry.max_new_tokens, 16);
        assert_eq!(retry.prompt("no answer  \n"), "no answer\nFinal Answer: \\boxed{");
    }

    #[test]
    fn choice_answers() {
        assert_eq!(extract_choice(r"thus \boxed{c}"), Some('C'));
        assert_eq!(extract_choice("blah\nFinal Choice: (B)\n"), Some('B'));
        assert_eq!(extract_choice("The correct option: D."), Some('D'));
        assert_eq!(extract_choice("The correct option is D."), None); // as the reference regex
        assert_eq!(extract_choice("(A) because"), Some('A'));
        assert_eq!(extract_choice("Because of that"), None);
        assert_eq!(answer_retry(MasTask::Choice, "unsure").map(|r| r.suffix), Some(CHOICE_RETRY_SUFFIX));
    }

    #[test]
    fn code_answers() {
        let retry = answer_retry(MasTask::Code, "def f(): pass").unwrap();
        assert_eq!(retry.max_new_tokens, 256);
        assert!(retry.prompt("x").ends_with("Final Code:\n```python\n"));
    }
}
