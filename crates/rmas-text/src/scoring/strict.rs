//! rmas's value-aware math check (`--scorer strict`), reported beside the reference's accuracy,
//! never instead of it. Where the reference's first MATH-500 strategy compares only the integer part
//! of the first number (`2^{10}` = `2`, `1.5` = `1`), this compares values: integers, decimals,
//! fractions (`\frac{a}{b}`, `a/b`), percentages and thousands separators as exact rationals, tuples
//! element by element, and everything else as LaTeX with its presentation (`\left`, spacing, `$`,
//! `\text{}`, braces, `\dfrac`) removed.

use std::sync::LazyLock;

use regex::Regex;

use super::{AnswerRule, SPACES, compare_answers, extract_pred_answer, gold_answer, regex};
use crate::pystr::py_strip;

/// Whether `prediction` answers `gold` by value, for the dataset called `dataset` (choice datasets
/// compare letters as the reference does).
pub fn strict_correct(gold: &str, prediction: &str, dataset: &str) -> bool {
    if AnswerRule::for_dataset(dataset) == AnswerRule::Choice {
        return compare_answers(gold, prediction, dataset).correct;
    }
    let gold = gold_answer(gold, dataset);
    let Some(pred) = extract_pred_answer(prediction) else { return false };
    same_value(&canonical(&gold), &canonical(&pred))
}

/// Two canonical answers agree: as numbers, as tuples of agreeing parts, or as text.
fn same_value(a: &str, b: &str) -> bool {
    if let (Some(x), Some(y)) = (rational(a), rational(b)) {
        return x == y;
    }
    let (pa, pb) = (tuple_parts(a), tuple_parts(b));
    if pa.len() > 1 && pa.len() == pb.len() {
        return pa.iter().zip(&pb).all(|(x, y)| same_value(x, y));
    }
    !a.is_empty() && a == b
}

/// The presentation-free form of a LaTeX answer.
fn canonical(text: &str) -> String {
    static TEXT: LazyLock<Regex> = LazyLock::new(|| regex(r"\\(?:text|textbf|mathrm|mathbf|mbox)\{([^{}]*)\}"));
    let mut s = TEXT.replace_all(py_strip(text), "$1").into_owned();
    for (from, to) in
        [("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("^{\\circ}", ""), ("^\\circ", ""), ("\\%", "%"), ("\\$", "")]
    {
        s = s.replace(from, to);
    }
    for dropped in ["\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:", "$"] {
        s = s.replace(dropped, "");
    }
    let s = SPACES.replace_all(&s, "").into_owned();
    s.trim_end_matches('.').to_owned()
}

/// Top-level comma-separated parts of `(a,b)`, `[a,b]` or `a,b` (one part when there is no comma
/// outside braces).
fn tuple_parts(s: &str) -> Vec<String> {
    let inner = match (s.chars().next(), s.chars().last()) {
        (Some('(' | '['), Some(')' | ']')) if s.len() >= 2 => &s[1..s.len() - 1],
        _ => s,
    };
    let mut parts = vec![String::new()];
    let mut depth = 0i32;
    for c in inner.chars() {
        match c {
            '{' | '(' | '[' => depth += 1,
            '}' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut().expect("starts with one part").push(c);
    }
    parts
}

/// An exact rational `(numerator, denominator)` in lowest terms, denominator > 0.
type Rational = (i128, i128);

/// The value of a numeric answer: `-12`, `1,234`, `0.25`, `25%`, `\frac{3}{4}`, `-\frac34`, `3/4`.
fn rational(s: &str) -> Option<Rational> {
    static FRAC: LazyLock<Regex> = LazyLock::new(|| regex(r"^(-?)\\frac\{?([^{}]+?)\}?\{?([^{}]+?)\}?$"));
    static FRAC_DIGITS: LazyLock<Regex> = LazyLock::new(|| regex(r"^(-?)\\frac(\d)(\d)$"));
    static SLASH: LazyLock<Regex> = LazyLock::new(|| regex(r"^(-?[\d.,]+)/([\d.,]+)$"));
    let s = s.trim_start_matches('+');
    if let Some(percent) = s.strip_suffix('%') {
        let (n, d) = rational(percent)?;
        return reduce(n, d.checked_mul(100)?);
    }
    if let Some(c) = FRAC_DIGITS.captures(s).or_else(|| FRAC.captures(s)) {
        let (n, d) = (decimal(&c[2])?, decimal(&c[3])?);
        let sign = if c[1].is_empty() { 1 } else { -1 };
        return reduce(sign * n.0.checked_mul(d.1)?, n.1.checked_mul(d.0)?);
    }
    if let Some(c) = SLASH.captures(s) {
        let (n, d) = (decimal(&c[1])?, decimal(&c[2])?);
        return reduce(n.0.checked_mul(d.1)?, n.1.checked_mul(d.0)?);
    }
    decimal(s)
}

/// `-1,234.50` as an exact rational (commas only as thousands separators).
fn decimal(s: &str) -> Option<Rational> {
    static NUMBER: LazyLock<Regex> = LazyLock::new(|| regex(r"^(-?)(\d{1,3}(?:,\d{3})+|\d+)?(?:\.(\d+))?$"));
    let c = NUMBER.captures(s)?;
    let int = c.get(2).map_or("", |m| m.as_str()).replace(',', "");
    let frac = c.get(3).map_or("", |m| m.as_str());
    if int.is_empty() && frac.is_empty() || int.len() + frac.len() > 30 {
        return None;
    }
    let digits: i128 = format!("{int}{frac}").parse().ok()?;
    let sign = if c[1].is_empty() { 1 } else { -1 };
    reduce(sign * digits, 10i128.checked_pow(frac.len() as u32)?)
}

fn reduce(n: i128, d: i128) -> Option<Rational> {
    if d == 0 {
        return None;
    }
    let g = gcd(n.unsigned_abs(), d.unsigned_abs()).max(1) as i128;
    let sign = if d < 0 { -1 } else { 1 };
    Some((sign * n / g, sign * d / g))
}

fn gcd(a: u128, b: u128) -> u128 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_not_integer_parts() {
        let ok = |gold: &str, pred: &str| strict_correct(gold, pred, "math500");
        assert!(!ok("2^{10}", "\\boxed{2}"), "the reference's intpart calls this correct");
        assert!(!ok("1.5", "\\boxed{1}"));
        assert!(ok("\\frac{1}{2}", "\\boxed{0.5}"));
        assert!(ok("\\dfrac{3}{4}", "The answer is $\\boxed{\\frac34}$."));
        assert!(ok("1,250", "\\boxed{1250}"));
        assert!(ok("10\\%", "\\boxed{10\\%}"));
        assert!(ok("25\\%", "\\boxed{\\frac{1}{4}}"));
        assert!(ok("2^{10}", "Final Answer: 2^{10}"));
        assert!(ok("\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(3,\\frac{\\pi}{2})}"));
        assert!(ok("(1, 0.5)", "\\boxed{(1,\\frac12)}"));
        assert!(ok("\\text{(C)}", "\\boxed{\\text{(C)}}"));
        assert!(ok("-7", "\\boxed{-7.0}"));
        assert!(!ok("7", "\\boxed{-7}"));
        assert!(!ok("7", ""));
        assert!(strict_correct("B", "Final Choice: (b)", "gpqa"));
        assert!(strict_correct("Total\n#### 1,250", "\\boxed{1250}", "gsm8k"));
    }
}
