//! The `date` strategy of free-form answers: the reference normalizes a date-like answer with
//! `dateutil.parser.parse(text, fuzzy=False)` and prints the year, month and day it can see in the
//! text. This is the part of dateutil's parser that dates reach (its tokenizer, month/weekday/jump
//! words, numeric dates with `-`/`/`/`.` separators, compact `YYYYMMDD`, clock times and am/pm, and
//! its year/month/day resolution with `dayfirst` and `yearfirst` off); a text it does not read is no
//! date, as one dateutil rejects. Checked against dateutil 2.9 in `tests/fixtures/scoring/dates.jsonl`.

use std::sync::LazyLock;

use chrono::{Datelike, Local, NaiveDate};
use regex::Regex;

use super::{lower_form, regex};

const MONTHS: &str = "january|jan|february|feb|march|mar|april|apr|may|june|jun|july|jul|august|aug|september|sep|october|oct|november|nov|december|dec";

/// `date:`-strategy form of `text`: `YYYY-MM-DD`, `YYYY-MM` or `YYYY` as far as the text shows a
/// four-digit year, a month and a day; empty when it is no date.
pub(super) fn normalize_date(text: &str) -> String {
    static ORDINAL: LazyLock<Regex> = LazyLock::new(|| regex(r"\b(\d{1,2})(st|nd|rd|th)\b"));
    static YEAR: LazyLock<Regex> = LazyLock::new(|| regex(r"\b\d{4}\b"));
    static MONTH: LazyLock<Regex> = LazyLock::new(|| regex(&format!(r"\b({MONTHS})\b")));
    static NUMERIC: LazyLock<Regex> = LazyLock::new(|| regex(r"\b\d{1,2}[/-]\d{1,2}(?:[/-]\d{2,4})?\b"));
    static DAY: LazyLock<Regex> = LazyLock::new(|| regex(r"\b\d{1,2}(st|nd|rd|th)?\b"));
    let text = lower_form(text);
    if text.is_empty() {
        return String::new();
    }
    let text = ORDINAL.replace_all(&text, "$1");
    let has_year = YEAR.is_match(&text);
    let has_month = MONTH.is_match(&text) || NUMERIC.is_match(&text);
    if !(has_year || has_month) {
        return String::new();
    }
    let Some(date) = parse(&text) else { return String::new() };
    let has_day = has_month && DAY.is_match(&text);
    match (has_year, has_month, has_day) {
        (true, true, true) => format!("{}-{:02}-{:02}", date.year(), date.month(), date.day()),
        (true, true, false) => format!("{}-{:02}", date.year(), date.month()),
        (true, false, _) => date.year().to_string(),
        _ => String::new(),
    }
}

/// A dateutil token: a run of letters, of digits (with its `.`/`,` parts), one space or one other
/// character.
fn tokens(text: &str) -> Vec<String> {
    #[derive(PartialEq, Clone, Copy)]
    enum State {
        Start,
        Alpha,
        Num,
        AlphaDot,
        NumDot,
    }
    let chars: Vec<char> = text.chars().filter(|&c| c != '\0').collect();
    let is_word = |c: char| c.is_alphabetic();
    let is_num = |c: char| c.is_numeric();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let mut token = String::new();
        let mut state = State::Start;
        let mut seen_letters = false;
        while i < chars.len() {
            let c = chars[i];
            match state {
                State::Start => {
                    i += 1;
                    if is_word(c) {
                        token.push(c);
                        state = State::Alpha;
                    } else if is_num(c) {
                        token.push(c);
                        state = State::Num;
                    } else {
                        token.push(if crate::pystr::is_py_space(c) { ' ' } else { c });
                        break;
                    }
                }
                State::Alpha => {
                    seen_letters = true;
                    if is_word(c) {
                        token.push(c);
                    } else if c == '.' {
                        token.push(c);
                        state = State::AlphaDot;
                    } else {
                        break;
                    }
                    i += 1;
                }
                State::Num => {
                    if is_num(c) {
                        token.push(c);
                    } else if c == '.' || (c == ',' && token.chars().count() >= 2) {
                        token.push(c);
                        state = State::NumDot;
                    } else {
                        break;
                    }
                    i += 1;
                }
                State::AlphaDot => {
                    seen_letters = true;
                    if c == '.' || is_word(c) {
                        token.push(c);
                    } else if is_num(c) && token.ends_with('.') {
                        token.push(c);
                        state = State::NumDot;
                    } else {
                        break;
                    }
                    i += 1;
                }
                State::NumDot => {
                    if c == '.' || is_num(c) {
                        token.push(c);
                    } else if is_word(c) && token.ends_with('.') {
                        token.push(c);
                        state = State::AlphaDot;
                    } else {
                        break;
                    }
                    i += 1;
                }
            }
        }
        let dotted = matches!(state, State::AlphaDot | State::NumDot);
        if dotted && (seen_letters || token.matches('.').count() > 1 || token.ends_with(['.', ','])) {
            // Split at every `.`/`,`, keeping the separators as tokens.
            let mut part = String::new();
            let mut parts = Vec::new();
            for c in token.chars() {
                if c == '.' || c == ',' {
                    parts.push(std::mem::take(&mut part));
                    parts.push(c.to_string());
                } else {
                    part.push(c);
                }
            }
            parts.push(part);
            let mut parts = parts.into_iter();
            out.push(parts.next().unwrap_or_default());
            out.extend(parts.filter(|p| !p.is_empty()));
        } else if state == State::NumDot && !token.contains('.') {
            out.push(token.replace(',', "."));
        } else {
            out.push(token);
        }
    }
    out
}

const JUMP: [&str; 18] =
    [" ", ".", ",", ";", "-", "/", "'", "at", "on", "and", "ad", "m", "t", "of", "st", "nd", "rd", "th"];
const WEEKDAYS: [&str; 14] = [
    "mon",
    "monday",
    "tue",
    "tuesday",
    "wed",
    "wednesday",
    "thu",
    "thursday",
    "fri",
    "friday",
    "sat",
    "saturday",
    "sun",
    "sunday",
];
const HMS: [&str; 9] = ["h", "hour", "hours", "m", "minute", "minutes", "s", "second", "seconds"];

fn jump(token: &str) -> bool {
    JUMP.contains(&token)
}

fn month(token: &str) -> Option<u32> {
    const NAMES: [&[&str]; 12] = [
        &["jan", "january"],
        &["feb", "february"],
        &["mar", "march"],
        &["apr", "april"],
        &["may"],
        &["jun", "june"],
        &["jul", "july"],
        &["aug", "august"],
        &["sep", "sept", "september"],
        &["oct", "october"],
        &["nov", "november"],
        &["dec", "december"],
    ];
    NAMES.iter().position(|names| names.contains(&token)).map(|i| i as u32 + 1)
}

fn ampm(token: &str) -> Option<bool> {
    match token {
        "am" | "a" => Some(false),
        "pm" | "p" => Some(true),
        _ => None,
    }
}

/// Python's `float(token)` succeeds (digits, one point, or the words Python reads as floats).
fn is_number(token: &str) -> bool {
    let t = token.strip_prefix(['+', '-']).unwrap_or(token);
    matches!(t, "nan" | "inf" | "infinity") || (t.parse::<f64>().is_ok() && t.chars().any(|c| c.is_ascii_digit()))
}

/// Year, month and day values in order of appearance, with what the text says each one is.
#[derive(Default)]
struct Ymd {
    values: Vec<i64>,
    year: Option<usize>,
    month: Option<usize>,
    day: Option<usize>,
    century_specified: bool,
}

#[derive(PartialEq)]
enum Label {
    None,
    Month,
    Year,
}

impl Ymd {
    /// Appends a number token (a digit string of more than two digits is a year).
    fn push_token(&mut self, token: &str, label: Label) -> Option<()> {
        let label = if token.len() > 2 && token.chars().all(|c| c.is_ascii_digit()) {
            self.century_specified = true;
            Label::Year
        } else {
            label
        };
        let value = token.parse::<f64>().ok().filter(|v| v.is_finite())?.trunc() as i64;
        self.push(value, label)
    }

    fn push(&mut self, value: i64, label: Label) -> Option<()> {
        let label = if value > 100 && label == Label::None {
            self.century_specified = true;
            Label::Year
        } else {
            label
        };
        self.values.push(value);
        let index = Some(self.values.len() - 1);
        match label {
            Label::Month if self.month.is_some() => return None,
            Label::Month => self.month = index,
            Label::Year if self.year.is_some() => return None,
            Label::Year => self.year = index,
            Label::None => {}
        }
        Some(())
    }

    fn could_be_day(&self, value: i64) -> bool {
        if self.day.is_some() {
            return false;
        }
        let Some(m) = self.month else { return (1..=31).contains(&value) };
        let year = self.year.map_or(2000, |y| self.values[y]);
        (1..=i64::from(days_in_month(year, self.values[m]).unwrap_or(31))).contains(&value)
    }

    /// dateutil's `resolve_ymd` with `yearfirst` and `dayfirst` off.
    fn resolve(&self) -> Option<(Option<i64>, Option<i64>, Option<i64>)> {
        let v = &self.values;
        let mut known: Vec<(char, usize)> = [('y', self.year), ('m', self.month), ('d', self.day)]
            .into_iter()
            .filter_map(|(k, i)| Some((k, i?)))
            .collect();
        if (v.len() == known.len() && !known.is_empty()) || (v.len() == 3 && known.len() == 2) {
            if v.len() == 3 && known.len() == 2 {
                let missing = (0..3).find(|i| known.iter().all(|(_, j)| j != i))?;
                let key = ['y', 'm', 'd'].into_iter().find(|k| known.iter().all(|(j, _)| j != k))?;
                known.push((key, missing));
            }
            let get = |key| known.iter().find(|(k, _)| *k == key).map(|&(_, i)| v[i]);
            return Some((get('y'), get('m'), get('d')));
        }
        Some(match (v.len(), self.month) {
            (n, _) if n > 3 => return None,
            (0, _) => (None, None, None),
            (1, None) => {
                if v[0] > 31 {
                    (Some(v[0]), None, None)
                } else {
                    (None, None, Some(v[0]))
                }
            }
            (1, Some(_)) => (None, Some(v[0]), None),
            (2, Some(m)) => {
                let other = v[1 - m];
                if other > 31 { (Some(other), Some(v[m]), None) } else { (None, Some(v[m]), Some(other)) }
            }
            (2, None) if v[0] > 31 => (Some(v[0]), Some(v[1]), None),
            (2, None) if v[1] > 31 => (Some(v[1]), Some(v[0]), None),
            (2, None) => (None, Some(v[0]), Some(v[1])),
            (_, Some(0)) if v[1] > 31 => (Some(v[1]), Some(v[0]), Some(v[2])),
            (_, Some(0)) => (Some(v[2]), Some(v[0]), Some(v[1])),
            (_, Some(1)) if v[0] > 31 => (Some(v[0]), Some(v[1]), Some(v[2])),
            (_, Some(1)) => (Some(v[2]), Some(v[1]), Some(v[0])),
            (_, Some(_)) if v[1] > 31 => (Some(v[1]), Some(v[2]), Some(v[0])),
            (_, Some(_)) => (Some(v[0]), Some(v[2]), Some(v[1])),
            (_, None) if v[0] > 31 || self.year == Some(0) => (Some(v[0]), Some(v[1]), Some(v[2])),
            (_, None) if v[0] > 12 => (Some(v[2]), Some(v[1]), Some(v[0])),
            (_, None) => (Some(v[2]), Some(v[0]), Some(v[1])),
        })
    }
}

fn days_in_month(year: i64, month: i64) -> Option<u32> {
    let (y, m) = (i32::try_from(year).ok()?, u32::try_from(month).ok()?);
    let first = NaiveDate::from_ymd_opt(y, m, 1)?;
    let next = if m == 12 { NaiveDate::from_ymd_opt(y + 1, 1, 1) } else { NaiveDate::from_ymd_opt(y, m + 1, 1) }?;
    u32::try_from((next - first).num_days()).ok()
}

/// The date dateutil reads from `text` (missing parts from today, as its `default=None`).
fn parse(text: &str) -> Option<NaiveDate> {
    let l = tokens(text);
    let n = l.len();
    let mut ymd = Ymd::default();
    let mut clock = Clock::default();
    let mut i = 0;
    while i < n {
        let token = l[i].as_str();
        if is_number(token) {
            i = numeric_token(&l, i, &mut ymd, &mut clock)?;
        } else if WEEKDAYS.contains(&token) {
        } else if let Some(m) = month(token) {
            ymd.push(i64::from(m), Label::Month)?;
            if i + 1 < n {
                if l[i + 1] == "-" || l[i + 1] == "/" {
                    let sep = l[i + 1].clone();
                    ymd.push_token(l.get(i + 2)?, Label::None)?;
                    if i + 3 < n && l[i + 3] == sep {
                        ymd.push_token(l.get(i + 4)?, Label::None)?;
                        i += 2;
                    }
                    i += 2;
                } else if i + 4 < n && l[i + 1] == " " && l[i + 3] == " " && l[i + 2] == "of" {
                    if l[i + 4].chars().all(|c| c.is_ascii_digit()) && !l[i + 4].is_empty() {
                        let year: i64 = l[i + 4].parse().ok()?;
                        ymd.push_token(&convert_year(year, false).to_string(), Label::Year)?;
                    }
                    i += 4;
                }
            }
        } else if let Some(pm) = ampm(token) {
            // Valid only after an hour of 0..=12; otherwise dateutil raises without `fuzzy`.
            match clock.hour {
                Some(h) if (0..=12).contains(&h) => clock.hour = Some(adjust_ampm(h, pm)),
                _ => return None,
            }
        } else if !jump(token) {
            return None;
        }
        i += 1;
    }
    let (year, month, day) = ymd.resolve()?;
    if !clock.valid() {
        return None;
    }
    let today = Local::now().date_naive();
    let year = match year {
        Some(y) if y < 100 && !ymd.century_specified => convert_year(y, false),
        Some(y) => y,
        None => i64::from(today.year()),
    };
    let month = month.unwrap_or(i64::from(today.month()));
    if !(1..=12).contains(&month) {
        return None;
    }
    let last = i64::from(days_in_month(year, month)?);
    let day = match day {
        Some(d) if (1..=last).contains(&d) => d,
        Some(_) => return None,
        None => i64::from(today.day()).min(last),
    };
    NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month as u32, day as u32)
}

/// The time of day a text sets (checked as `datetime` checks it; its value is not printed).
#[derive(Default)]
struct Clock {
    hour: Option<i64>,
    minute: Option<i64>,
    second: Option<i64>,
}

impl Clock {
    fn valid(&self) -> bool {
        self.hour.is_none_or(|h| (0..24).contains(&h))
            && self.minute.is_none_or(|m| (0..60).contains(&m))
            && self.second.is_none_or(|s| (0..60).contains(&s))
    }

    /// dateutil's `_parsems`: whole seconds of `ss` or `ss.ffffff` (both parts must be digits).
    fn set_seconds(&mut self, text: &str) -> Option<()> {
        let whole = text.split_once('.').map_or(text, |(whole, _)| whole).to_owned();
        if let Some((_, fraction)) = text.split_once('.') {
            int(fraction)?;
        }
        self.second = Some(int(&whole)?);
        Some(())
    }
}

/// Python's `int(text)` of a digit string.
fn int(text: &str) -> Option<i64> {
    (!text.is_empty() && text.chars().all(|c| c.is_ascii_digit())).then(|| text.parse().ok()).flatten()
}

fn adjust_ampm(hour: i64, pm: bool) -> i64 {
    match (hour, pm) {
        (h, true) if h < 12 => h + 12,
        (12, false) => 0,
        (h, _) => h,
    }
}

/// A two-digit year in the century around this year, as dateutil's `convertyear`.
fn convert_year(year: i64, century_specified: bool) -> i64 {
    if year >= 100 || century_specified {
        return year;
    }
    let this_year = i64::from(Local::now().year());
    let mut year = year + this_year / 100 * 100;
    if year >= this_year + 50 {
        year -= 100;
    } else if year < this_year - 50 {
        year += 100;
    }
    year
}

/// dateutil's `_parse_numeric_token` for the forms dates take; `None` where it raises (or where
/// the form is a time rmas does not read: hour/minute/second words).
fn numeric_token(l: &[String], idx: usize, ymd: &mut Ymd, clock: &mut Clock) -> Option<usize> {
    let token = l[idx].as_str();
    let n = l.len();
    let value: f64 = token.parse().ok().filter(|v: &f64| v.is_finite())?;
    let len = token.chars().count();
    let next = l.get(idx + 1).map(String::as_str);
    let mut idx = idx;
    if ymd.values.len() == 3
        && (len == 2 || len == 4)
        && clock.hour.is_none()
        && next.is_none_or(|t| t != ":" && !HMS.contains(&t))
    {
        clock.hour = Some(int(token.get(..2)?)?);
        if len == 4 {
            clock.minute = Some(int(token.get(2..)?)?);
        }
    } else if len == 6 || (len > 6 && token.find('.') == Some(6)) {
        if ymd.values.is_empty() && !token.contains('.') {
            ymd.push_token(&token[..2], Label::None)?;
            ymd.push_token(&token[2..4], Label::None)?;
            ymd.push_token(&token[4..], Label::None)?;
        } else {
            // HHMMSS[.ffffff]
            clock.hour = Some(int(token.get(..2)?)?);
            clock.minute = Some(int(token.get(2..4)?)?);
            clock.set_seconds(token.get(4..)?)?;
        }
    } else if matches!(len, 8 | 12 | 14) {
        ymd.push_token(token.get(..4)?, Label::Year)?;
        ymd.push_token(token.get(4..6)?, Label::None)?;
        ymd.push_token(token.get(6..8)?, Label::None)?;
        if len > 8 {
            clock.hour = Some(int(token.get(8..10)?)?);
            clock.minute = Some(int(token.get(10..12)?)?);
            if len > 12 {
                clock.second = Some(int(token.get(12..)?)?);
            }
        }
    } else if next.is_some_and(|t| HMS.contains(&t))
        || (idx + 2 < n && l[idx + 1] == " " && HMS.contains(&l[idx + 2].as_str()))
        || (idx > 0 && HMS.contains(&l[idx - 1].as_str()))
    {
        // Durations like "3 hours" and their neighbours: not read here.
        return None;
    } else if idx + 2 < n && l[idx + 1] == ":" {
        clock.hour = Some(value as i64);
        let minutes: f64 = l[idx + 2].parse().ok().filter(|v: &f64| v.is_finite())?;
        clock.minute = Some(minutes as i64);
        if minutes.fract() != 0.0 {
            clock.second = Some((60.0 * minutes.fract()) as i64);
        }
        if idx + 4 < n && l[idx + 3] == ":" {
            clock.set_seconds(&l[idx + 4])?;
            idx += 2;
        }
        idx += 2;
    } else if next.is_some_and(|t| t == "-" || t == "/" || t == ".") {
        let sep = l[idx + 1].as_str();
        ymd.push_token(token, Label::None)?;
        if idx + 2 < n && !jump(&l[idx + 2]) {
            let second = l[idx + 2].as_str();
            if !second.is_empty() && second.chars().all(char::is_numeric) {
                ymd.push_token(second, Label::None)?;
            } else {
                ymd.push(i64::from(month(second)?), Label::Month)?;
            }
            if idx + 3 < n && l[idx + 3] == sep {
                let third = l.get(idx + 4)?;
                match month(third) {
                    Some(m) => ymd.push(i64::from(m), Label::Month)?,
                    None => ymd.push_token(third, Label::None)?,
                }
                idx += 2;
            }
            idx += 1;
        }
        idx += 1;
    } else if idx + 1 >= n || jump(&l[idx + 1]) {
        if let Some(pm) = l.get(idx + 2).and_then(|t| ampm(t)) {
            clock.hour = Some(adjust_ampm(value as i64, pm));
            idx += 1;
        } else {
            ymd.push_token(token, Label::None)?;
        }
        idx += 1;
    } else if let Some(pm) = next.and_then(ampm).filter(|_| (0.0..24.0).contains(&value)) {
        clock.hour = Some(adjust_ampm(value as i64, pm));
        idx += 1;
    } else if ymd.could_be_day(value as i64) {
        ymd.push_token(token, Label::None)?;
    } else {
        return None;
    }
    Some(idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_as_dateutil_reads_them() {
        for (text, want) in [
            ("July 4, 1776", "1776-07-04"),
            ("4 July 1776", "1776-07-04"),
            ("1776-07-04", "1776-07-04"),
            ("March 2020", "2020-03"),
            ("the 4 july 1776", ""),
            ("2020", "2020"),
            ("4th of July, 1776", "1776-07-04"),
            ("monday, july 4, 1776", "1776-07-04"),
            ("2020 13 4", ""),
            ("13-4-2020", "2020-04-13"),
            ("36", ""),
            ("1250.0", ""),
            ("10:75 july 4 1776", ""),
        ] {
            assert_eq!(normalize_date(text), want, "{text}");
        }
    }

    #[test]
    fn tokens_as_dateutil_splits_them() {
        assert_eq!(tokens("jul. 4, 1776"), ["jul", ".", " ", "4", ",", " ", "1776"]);
        assert_eq!(tokens("4.7.1776"), ["4", ".", "7", ".", "1776"]);
        assert_eq!(tokens("12,5"), ["12.5"]);
    }
}
