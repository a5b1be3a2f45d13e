//! Answer scoring exactly as the reference release scores its benchmarks (its `answer_utils.py` and
//! `lcb_utils.py`); see `docs/eval.md`. The rules are lossy on purpose (MATH-500's first strategy
//! compares only the integer part of the first number): they are reproduced, not improved; rmas's
//! value-aware check is [`strict`], reported beside them.

mod code;
mod date;
pub mod strict;

use std::sync::LazyLock;

use regex::{Captures, Regex};
use serde_json::Value;

pub use code::{CodeTests, IMPORT_PRELUDE, compare_stdio_output, extract_python_code, lcb_code_tests, mbpp_code_tests};

use crate::pystr::{py_float_repr, py_strip};

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("constant regex")
}

/// Runs of whitespace (`\s+`), which the normalizations drop or collapse.
static SPACES: LazyLock<Regex> = LazyLock::new(|| regex(r"\s+"));

/// How a dataset's answers are compared, chosen from its name as the reference chooses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerRule {
    /// GPQA and MedQA: one letter A–D (default `A` when none is found).
    Choice,
    /// MATH-500: `intpart`, `latex_text`, `nospace`, `digits`, first agreement wins.
    Math500,
    /// Everything else (GSM8K, AIME, free-form QA): `date`, `em`, `lower`.
    FreeForm,
}

/// The reference's dataset key sets (`answer_utils.py`), lower-case.
const GSM8K_KEYS: [&str; 2] = ["gsm8k", "openai/gsm8k"];
const MATH500_KEYS: [&str; 3] = ["math500", "math-500", "huggingfaceh4/math-500"];
const CHOICE_KEYS: [&str; 9] = [
    "medqa",
    "local/medqa",
    "dataset/medqa.json",
    "./dataset/medqa.json",
    "gpqa",
    "gpqa_diamond",
    "idavidrein/gpqa",
    "idavidrein/gpqa:gpqa_diamond",
    "idavidrein/gpqa_diamond",
];

/// The reference's `name.strip().lower()`.
fn dataset_key(name: &str) -> String {
    py_strip(name).to_lowercase()
}

impl AnswerRule {
    /// The rule the reference applies to answers of the dataset called `name`.
    pub fn for_dataset(name: &str) -> Self {
        let key = dataset_key(name);
        if CHOICE_KEYS.contains(&key.as_str()) {
            AnswerRule::Choice
        } else if MATH500_KEYS.contains(&key.as_str()) {
            AnswerRule::Math500
        } else {
            AnswerRule::FreeForm
        }
    }
}

/// The score of one answer, with the reference's result-record fields.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AnswerScore {
    /// The gold answer after extraction (`gold_answer_parsed`).
    pub gold_answer_parsed: String,
    /// The predicted answer after extraction, `None` when the prediction is empty.
    pub pred_answer_parsed: Option<String>,
    /// Whether some strategy found both equal.
    pub correct: bool,
    /// `strategy:normalized gold` of the deciding (or first applicable) strategy, else empty.
    pub gold_norm: String,
    /// `strategy:normalized prediction`, likewise.
    pub pred_norm: String,
}

/// Scores `prediction` against `gold` under the rules of the dataset called `dataset` (the
/// reference's `compare_answers`).
pub fn compare_answers(gold: &str, prediction: &str, dataset: &str) -> AnswerScore {
    let gold = gold_answer(gold, dataset);
    match AnswerRule::for_dataset(dataset) {
        AnswerRule::Choice => {
            // The prediction's letter (default A), re-read as the reference re-reads it.
            let pred = choice_or_default(&choice_or_default(prediction).to_string());
            let gold = choice_or_default(&gold);
            AnswerScore {
                correct: gold == pred,
                gold_norm: format!("choice:{}", gold.to_ascii_lowercase()),
                pred_norm: format!("choice:{}", pred.to_ascii_lowercase()),
                gold_answer_parsed: gold.to_string(),
                pred_answer_parsed: Some(pred.to_string()),
            }
        }
        AnswerRule::Math500 => compare_by(gold, prediction, &MATH500_STRATEGIES),
        AnswerRule::FreeForm => compare_by(gold, prediction, &FREE_FORM_STRATEGIES),
    }
}

/// A named normalization; two answers agree when both normalize to the same non-empty text.
type Strategy = (&'static str, fn(&str) -> String);

const MATH500_STRATEGIES: [Strategy; 4] =
    [("intpart", int_of_first_number), ("latex_text", latex_text), ("nospace", no_space), ("digits", integer_digits)];

const FREE_FORM_STRATEGIES: [Strategy; 3] =
    [("date", date::normalize_date), ("em", exact_match_form), ("lower", lower_form)];

/// The first strategy on which gold and prediction agree; else not correct, with the norms of the
/// first strategy under which both were non-empty.
fn compare_by(gold: String, prediction: &str, strategies: &[Strategy]) -> AnswerScore {
    let Some(pred) = extract_pred_answer(prediction) else {
        return AnswerScore {
            gold_answer_parsed: gold,
            pred_answer_parsed: None,
            correct: false,
            gold_norm: String::new(),
            pred_norm: String::new(),
        };
    };
    let mut fallback = None;
    for (name, normalize) in strategies {
        let (g, p) = (normalize(&gold), normalize(&pred));
        if g.is_empty() || p.is_empty() {
            continue;
        }
        let norms = (format!("{name}:{g}"), format!("{name}:{p}"));
        if g == p {
            return AnswerScore {
                gold_answer_parsed: gold,
                pred_answer_parsed: Some(pred),
                correct: true,
                gold_norm: norms.0,
                pred_norm: norms.1,
            };
        }
        fallback.get_or_insert(norms);
    }
    let (gold_norm, pred_norm) = fallback.unwrap_or_default();
    AnswerScore { gold_answer_parsed: gold, pred_answer_parsed: Some(pred), correct: false, gold_norm, pred_norm }
}

/// The gold answer as the reference extracts it: a letter for choice datasets, the text after
/// `####` for GSM8K, else the stripped text.
pub fn gold_answer(text: &str, dataset: &str) -> String {
    static HASHES: LazyLock<Regex> = LazyLock::new(|| regex(r"(?s)####\s*(.+)$"));
    match AnswerRule::for_dataset(dataset) {
        AnswerRule::Choice => extract_choice(text).unwrap_or('A').to_string(),
        _ if GSM8K_KEYS.contains(&dataset_key(dataset).as_str()) => HASHES
            .captures(text)
            .map(|c| py_strip(&c[1]).to_owned())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| py_strip(text).to_owned()),
        _ => py_strip(text).to_owned(),
    }
}

/// The reference's `extract_choice_answer(text, default="A")`.
fn choice_or_default(text: &str) -> char {
    extract_choice(text).unwrap_or('A')
}

/// The last `\boxed{...}` content, stripped (a brace-free match first, then a greedy one).
pub fn extract_boxed(text: &str) -> Option<String> {
    static FLAT: LazyLock<Regex> = LazyLock::new(|| regex(r"\\boxed\{([^{}]+)\}"));
    static GREEDY: LazyLock<Regex> = LazyLock::new(|| regex(r"\\boxed\{(.*)\}"));
    [&*FLAT, &*GREEDY].iter().find_map(|re| re.captures_iter(text).last()).map(|caps| py_strip(&caps[1]).to_owned())
}

/// The predicted answer: the boxed one, else the last non-empty `Final Answer:` line, else the
/// stripped text; `None` for an empty text.
pub fn extract_pred_answer(text: &str) -> Option<String> {
    static FINAL: LazyLock<Regex> = LazyLock::new(|| regex(r"(?im)Final\s+Answer\s*:\s*(.+)$"));
    if let Some(boxed) = extract_boxed(text) {
        return Some(boxed);
    }
    if let Some(caps) = FINAL.captures_iter(text).last() {
        let answer = py_strip(&caps[1]);
        if !answer.is_empty() {
            return Some(answer.to_owned());
        }
    }
    let text = py_strip(text);
    (!text.is_empty()).then(|| text.to_owned())
}

/// The chosen letter A–D: from the boxed answer, the last `Final Choice/Answer:` line, or the text.
pub fn extract_choice(text: &str) -> Option<char> {
    static FINAL_LINE: LazyLock<Regex> = LazyLock::new(|| regex(r"(?im)Final\s*(?:Choice|Answer)\s*:\s*(.+)$"));
    let final_line = FINAL_LINE.captures_iter(text).last().map(|caps| caps[1].to_owned());
    [extract_boxed(text), final_line, Some(py_strip(text).to_owned())].iter().flatten().find_map(|c| choice_letter(c))
}

/// A letter after a choice keyword, or a leading `A` / `(B)` / `C:` form.
fn choice_letter(text: &str) -> Option<char> {
    static KEYWORD: LazyLock<Regex> = LazyLock::new(|| {
        regex(
            r"(?i)(?:final\s*(?:choice|answer)|correct\s*(?:choice|option|answer)|choice|option|answer)\s*[:\-]?\s*[\(\[]?\s*([A-Da-d])\b",
        )
    });
    static DIRECT: LazyLock<Regex> = LazyLock::new(|| regex(r"^\s*[\(\[]?\s*([A-Da-d])(?:\s*[\)\]]|\s*[:\.\-]|$)"));
    let text = py_strip(text);
    if text.is_empty() {
        return None;
    }
    let caps = KEYWORD.captures(text).or_else(|| DIRECT.captures(text))?;
    caps[1].chars().next().map(|c| c.to_ascii_uppercase())
}

/// The gold letter of a MedQA row (`answer` read as a letter, else matched against the lettered
/// `options`, else `A`), as the reference's `medqa_gold_to_choice`.
pub fn medqa_gold(row: &Value) -> char {
    let answer = row.get("answer").map(py_text).unwrap_or_default();
    if let Some(letter) = extract_choice(&answer) {
        return letter;
    }
    if let Some(Value::Array(options)) = row.get("options") {
        let wanted = option_text(&answer);
        for option in options {
            let option = py_text(option);
            let Some(label) = choice_letter(&option) else { continue };
            let text = option_text(&option);
            if !wanted.is_empty() && (wanted == text || text.contains(&wanted) || wanted.contains(&text)) {
                return label;
            }
        }
    }
    'A'
}

/// Python's `str(value)` for a JSON value (`None` → empty, as the reference's `_ensure_text`).
fn py_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "True" } else { "False" }.to_owned(),
        Value::Number(n) if n.is_f64() => n.as_f64().map(py_float_repr).unwrap_or_default(),
        other => other.to_string(),
    }
}

/// An option's text without its letter label, whitespace collapsed, lower-case.
fn option_text(text: &str) -> String {
    static LABEL: LazyLock<Regex> = LazyLock::new(|| regex(r"^\s*[A-Da-d]\s*[\.\):\-]\s*"));
    let text = LABEL.replace(py_strip(text), "");
    py_strip(&SPACES.replace_all(&text, " ")).to_lowercase()
}

/// `intpart`: the integer part of the first number, after `\text{}` unwrapping, simple `\frac`s
/// evaluated as Python floats, and `,`, `\left`, `\right`, `\circ` removed.
fn int_of_first_number(text: &str) -> String {
    static FRAC: LazyLock<Regex> = LazyLock::new(|| regex(r"\\frac\{\s*(-?\d+)\s*\}\{\s*(-?\d+)\s*\}"));
    static NUMBER: LazyLock<Regex> = LazyLock::new(|| regex(r"-?\d+(?:\.\d+)?"));
    let text = unwrap_text_macros(py_strip(text));
    let text = FRAC.replace_all(&text, |c: &Captures| {
        // Python's int() reads any Unicode digits; a value past f64 keeps its text, as a quotient
        // Python cannot represent would not be formed there either.
        match (python_int(&c[1]), python_int(&c[2])) {
            (Some(n), Some(d)) if d != 0.0 => py_float_repr(n / d),
            _ => c[0].to_owned(),
        }
    });
    let text = text.replace("\\left", "").replace("\\right", "").replace(',', "").replace("\\circ", "");
    let Some(number) = NUMBER.find(&text) else { return String::new() };
    let int_part = number.as_str().split('.').next().unwrap_or_default();
    let (negative, digits) = match int_part.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, int_part),
    };
    let digits: String = digits.chars().map(ascii_digit).collect::<Option<_>>().unwrap_or_default();
    if digits.is_empty() {
        return String::new();
    }
    let digits = digits.trim_start_matches('0');
    match (negative, digits.is_empty()) {
        (_, true) => "0".to_owned(),
        (true, false) => format!("-{digits}"),
        (false, false) => digits.to_owned(),
    }
}

/// A Unicode decimal digit as its ASCII digit (Python's `int()` accepts every `Nd` digit).
fn ascii_digit(c: char) -> Option<char> {
    static DECIMAL: LazyLock<Regex> = LazyLock::new(|| regex(r"^\p{Nd}$"));
    let is_decimal = |c: char| DECIMAL.is_match(c.encode_utf8(&mut [0; 4]));
    if c.is_ascii_digit() {
        return Some(c);
    }
    if !is_decimal(c) {
        return None;
    }
    // Unicode lays decimal digits out in runs of whole sets of ten, each from its zero.
    let before = (1..=(c as u32)).map_while(|k| char::from_u32(c as u32 - k).filter(|&p| is_decimal(p))).count();
    char::from_digit((before % 10) as u32, 10)
}

/// Python's `int(text)` as a float, for `\frac` operands.
fn python_int(text: &str) -> Option<f64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let digits: String = digits.chars().map(ascii_digit).collect::<Option<_>>()?;
    let value: f64 = digits.parse().ok()?;
    value.is_finite().then_some(if negative { -value } else { value })
}

/// `\text{...}` replaced by its content (innermost, brace-free contents only).
fn unwrap_text_macros(text: &str) -> String {
    static TEXT: LazyLock<Regex> = LazyLock::new(|| regex(r"\\text\{([^{}]*)\}"));
    TEXT.replace_all(text, "$1").into_owned()
}

/// `latex_text`: `\text{}` unwrapped; `\left`, `\right`, `$`, thin spaces, braces, quotes and all
/// whitespace removed.
fn latex_text(text: &str) -> String {
    let mut text = unwrap_text_macros(py_strip(text));
    for dropped in ["\\left", "\\right", "$", "\\,", "\\;", "\\!", "\\:", "{", "}", "\"", "'"] {
        text = text.replace(dropped, "");
    }
    SPACES.replace_all(&text, "").into_owned()
}

/// `nospace`: the stripped text without whitespace.
fn no_space(text: &str) -> String {
    SPACES.replace_all(py_strip(text), "").into_owned()
}

/// `digits`: the digits before the first `.`, leading zeros dropped (`0` for all zeros).
fn integer_digits(text: &str) -> String {
    static DIGIT: LazyLock<Regex> = LazyLock::new(|| regex(r"\d"));
    let integer_part = text.split('.').next().unwrap_or_default();
    let digits: String = DIGIT.find_iter(integer_part).map(|m| m.as_str()).collect();
    if digits.is_empty() {
        return digits;
    }
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() { "0".to_owned() } else { trimmed.to_owned() }
}

/// `lower`: stripped, lower-case, typographic quotes and dashes plain, whitespace collapsed.
fn lower_form(text: &str) -> String {
    static DASHES: LazyLock<Regex> = LazyLock::new(|| regex(r"[\u{2010}-\u{2015}]"));
    let text = py_strip(text).to_lowercase().replace(['\u{2019}', '`'], "'");
    let text = DASHES.replace_all(&text, "-");
    py_strip(&SPACES.replace_all(&text, " ")).to_owned()
}

/// `em`: the `lower` form without punctuation and the articles a/an/the.
fn exact_match_form(text: &str) -> String {
    static PUNCT: LazyLock<Regex> = LazyLock::new(|| regex(r"[^\w\s]"));
    static ARTICLES: LazyLock<Regex> = LazyLock::new(|| regex(r"\b(a|an|the)\b"));
    let text = lower_form(text);
    let text = PUNCT.replace_all(&text, " ");
    let text = ARTICLES.replace_all(&text, " ");
    py_strip(&SPACES.replace_all(&text, " ")).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_follow_the_reference_key_sets() {
        assert_eq!(AnswerRule::for_dataset(" GPQA_Diamond "), AnswerRule::Choice);
        assert_eq!(AnswerRule::for_dataset("HuggingFaceH4/MATH-500"), AnswerRule::Math500);
        assert_eq!(AnswerRule::for_dataset("aime25"), AnswerRule::FreeForm);
    }

    #[test]
    fn intpart_reads_the_first_number() {
        assert_eq!(int_of_first_number(r"\frac{1}{2}"), "0");
        assert_eq!(int_of_first_number(r"\frac{10}{2} cm"), "5");
        assert_eq!(int_of_first_number("-007.5"), "-7");
        assert_eq!(int_of_first_number("-0"), "0");
        assert_eq!(int_of_first_number("1,250"), "1250");
        assert_eq!(int_of_first_number("x"), "");
        // Python prints 1e+20 for this quotient: its first number is 1.
        assert_eq!(int_of_first_number(r"\frac{100000000000000000000}{1}"), "1");
    }

    #[test]
    fn free_form_forms() {
        assert_eq!(exact_match_form("The  Eiffel—Tower!"), "eiffel tower");
        assert_eq!(lower_form(" It’s  `A` "), "it's 'a'");
        assert_eq!(integer_digits("00.5"), "0");
        assert_eq!(integer_digits("a1b2.9"), "12");
    }
}
