//! HF's `tojson` filter: Python `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
//! sort_keys=False)` over minijinja values, without Jinja's HTML escaping.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, Value};

/// Formatting options of Python's `json.dumps`.
struct Dumps {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

/// The `tojson` filter (keyword arguments `ensure_ascii`, `indent`, `separators`, `sort_keys`).
pub(super) fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let opts = Dumps::from_kwargs(&kwargs)?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    opts.write(&mut out, value, 0)?;
    // Marked safe so that an auto-escaping environment would not escape it a second time.
    Ok(Value::from_safe_string(out))
}

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg)
}

impl Dumps {
    fn from_kwargs(kwargs: &Kwargs) -> Result<Self, Error> {
        let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
        let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
        let indent = indent_string(kwargs.get::<Option<Value>>("indent")?)?;
        let separators: Option<Vec<String>> = kwargs.get("separators")?;
        let (item_sep, key_sep) = match separators.as_deref() {
            Some([item, key]) => (item.clone(), key.clone()),
            Some(other) => {
                return Err(invalid(format!(
                    "tojson: separators must be a pair (item_separator, key_separator), got {} values",
                    other.len()
                )));
            }
            // Python's default item separator drops its space when indenting.
            None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
            None => (", ".to_owned(), ": ".to_owned()),
        };
        Ok(Self {
            ensure_ascii: ensure_ascii.unwrap_or(false),
            indent,
            item_sep,
            key_sep,
            sort_keys: sort_keys.unwrap_or(false),
        })
    }

    fn write(&self, out: &mut String, value: &Value, level: usize) -> Result<(), Error> {
        match value.kind() {
            ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number => out.push_str(&number_text(value)?),
            ValueKind::String => self.write_str(out, value.as_str().unwrap_or_default()),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = value.try_iter()?.collect();
                self.write_container(out, ('[', ']'), &items, level, |out, item, lvl| self.write(out, item, lvl))?;
            }
            ValueKind::Map => {
                let mut entries = Vec::new();
                for key in value.try_iter()? {
                    let item = value.get_item(&key)?;
                    entries.push((key_text(&key)?, item));
                }
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                self.write_container(out, ('{', '}'), &entries, level, |out, (key, item), lvl| {
                    self.write_str(out, key);
                    out.push_str(&self.key_sep);
                    self.write(out, item, lvl)
                })?;
            }
            other => {
                return Err(invalid(format!("tojson: object of type {other} is not JSON serializable")));
            }
        }
        Ok(())
    }

    /// Writes `[a, b]` / `{...}` with Python's indentation rules.
    fn write_container<T>(
        &self,
        out: &mut String,
        (open, close): (char, char),
        items: &[T],
        level: usize,
        mut write_item: impl FnMut(&mut String, &T, usize) -> Result<(), Error>,
    ) -> Result<(), Error> {
        out.push(open);
        if items.is_empty() {
            out.push(close);
            return Ok(());
        }
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(&self.item_sep);
            }
            self.newline(out, level + 1);
            write_item(out, item, level + 1)?;
        }
        self.newline(out, level);
        out.push(close);
        Ok(())
    }

    fn newline(&self, out: &mut String, level: usize) {
        if let Some(indent) = &self.indent {
            out.push('\n');
            out.push_str(&indent.repeat(level));
        }
    }

    fn write_str(&self, out: &mut String, s: &str) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && !(' '..='~').contains(&c)) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        let _ = write!(out, "\\u{unit:04x}");
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// Python's `indent` argument: an int (that many spaces; negative = none) or a string.
fn indent_string(indent: Option<Value>) -> Result<Option<String>, Error> {
    let Some(indent) = indent.filter(|v| !v.is_none() && !v.is_undefined()) else {
        return Ok(None);
    };
    if let Some(s) = indent.as_str() {
        return Ok(Some(s.to_owned()));
    }
    match indent.as_i64() {
        Some(n) => Ok(Some(" ".repeat(usize::try_from(n).unwrap_or(0)))),
        None => Err(invalid(format!("tojson: indent must be an int or a string, got {indent}"))),
    }
}

/// A JSON object key as Python converts it (`str`, `int`, `float`, `bool`, `None`).
fn key_text(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_owned()),
        ValueKind::Number => number_text(key),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.to_owned()),
        ValueKind::None => Ok("null".to_owned()),
        other => Err(invalid(format!("tojson: keys must be str, int, float, bool or None, not {other}"))),
    }
}

fn number_text(value: &Value) -> Result<String, Error> {
    if value.is_integer() {
        return Ok(value.to_string());
    }
    let f = f64::try_from(value.clone())?;
    Ok(py_float_repr(f))
}

/// Python's `float.__repr__` as used by `json.dumps` (`1.0`, `1e-05`, `1e+16`, `NaN`, `Infinity`).
fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest round-trip digits, e.g. "-1.2345e-5".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let body = if (-4..16).contains(&exp) {
        positional(&digits, exp)
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{first}{frac}e{exp_sign}{:02}", exp.unsigned_abs())
    };
    format!("{sign}{body}")
}

/// Digits `d0 d1 ...` times 10^exp written positionally, always with a fractional part.
fn positional(digits: &str, exp: i32) -> String {
    if exp < 0 {
        let zeros = "0".repeat(exp.unsigned_abs() as usize - 1);
        return format!("0.{zeros}{digits}");
    }
    let int_len = exp as usize + 1;
    if digits.len() <= int_len {
        format!("{digits}{}.0", "0".repeat(int_len - digits.len()))
    } else {
        format!("{}.{}", &digits[..int_len], &digits[int_len..])
    }
}

#[cfg(test)]
mod tests {
    use super::py_float_repr;

    #[test]
    fn floats_match_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (0.5, "0.5"),
            (1e-5, "1e-05"),
            (1.5e-4, "0.00015"),
            (123.456, "123.456"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (-2.5e-7, "-2.5e-07"),
            (1e100, "1e+100"),
        ];
        for (value, expected) in cases {
            assert_eq!(py_float_repr(value), expected, "{value}");
        }
    }
}
