//! Chat-template rendering with Hugging Face semantics on minijinja.
//!
//! HF compiles templates in `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
//! extensions=[loopcontrols])` (Jinja's default `keep_trailing_newline=False`), adds the globals
//! `raise_exception(msg)` and `strftime_now(fmt)`, overrides `tojson` (no HTML escaping, Python
//! `json.dumps`), and renders with `messages`, `tools=None`, `documents=None`,
//! `add_generation_prompt`, the tokenizer's special-token strings and extra kwargs
//! (`enable_thinking`).

mod pyjson;

use std::fmt::Write as _;

use chrono::format::{Item, StrftimeItems};
use chrono::{NaiveDate, NaiveTime};
use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, Value};
use serde::Serialize;

use crate::error::{Result, TextError};
use crate::pystr::{py_lstrip, py_rstrip, py_strip};

/// The error text BioMistral-style templates raise for a system message.
pub const ROLES_MUST_ALTERNATE: &str = "Conversation roles must alternate";

/// One chat message (`{"role": ..., "content": ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// Rendering options (`apply_chat_template` kwargs) plus the injectable clock of `strftime_now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatOptions {
    /// Append the assistant turn header.
    pub add_generation_prompt: bool,
    /// Passed as `enable_thinking` when `Some`; left undefined when `None`.
    pub enable_thinking: Option<bool>,
    /// The date `strftime_now` formats (the time of day is midnight).
    pub date: NaiveDate,
}

impl ChatOptions {
    /// RecursiveMAS's options: generation prompt on, `enable_thinking=False`.
    pub fn recursivemas(date: NaiveDate) -> Self {
        Self { add_generation_prompt: true, enable_thinking: Some(false), date }
    }
}

/// A chat template's source and where it came from (for error messages).
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    origin: String,
}

impl ChatTemplate {
    /// Wraps a Jinja source; `origin` names it in errors (e.g. the file path).
    pub fn new(source: impl Into<String>, origin: impl Into<String>) -> Self {
        Self { source: source.into(), origin: origin.into() }
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`; `special_tokens` are `(name, text)` pairs such as `("bos_token", "<s>")`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        opts: &ChatOptions,
        special_tokens: &[(&str, &str)],
    ) -> Result<String> {
        let env = hf_environment(opts.date);
        let template = env.template_from_str(&self.source).map_err(|e| self.error(&e))?;
        let mut ctx: Vec<(&str, Value)> = vec![
            ("messages", Value::from_serialize(messages)),
            ("tools", Value::from(())),
            ("documents", Value::from(())),
            ("add_generation_prompt", Value::from(opts.add_generation_prompt)),
        ];
        ctx.extend(special_tokens.iter().map(|&(name, text)| (name, Value::from(text))));
        if let Some(thinking) = opts.enable_thinking {
            ctx.push(("enable_thinking", Value::from(thinking)));
        }
        // Templates come from the Hub: their output is bounded as well as their work (fuel).
        let mut out = BoundedText::default();
        template.render_captured_to(Value::from_iter(ctx), &mut out).map_err(|e| self.error(&e))?;
        String::from_utf8(out.bytes).map_err(|e| TextError::Template {
            template: self.origin.clone(),
            reason: format!("output is not UTF-8: {e}"),
        })
    }

    fn error(&self, err: &Error) -> TextError {
        let mut reason = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            let _ = write!(reason, ": {cause}");
            source = cause.source();
        }
        TextError::Template { template: self.origin.clone(), reason }
    }
}

/// Instructions a chat template may execute per rendering (real templates need thousands).
const TEMPLATE_FUEL: u64 = 20_000_000;
/// Largest rendered prompt accepted (far past any context a model takes).
const TEMPLATE_OUTPUT_BYTES: usize = 64 << 20;

/// A rendering sink that refuses output past [`TEMPLATE_OUTPUT_BYTES`].
#[derive(Default)]
struct BoundedText {
    bytes: Vec<u8>,
}

impl std::io::Write for BoundedText {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > TEMPLATE_OUTPUT_BYTES {
            return Err(std::io::Error::other(format!(
                "the template's output passes {} MiB",
                TEMPLATE_OUTPUT_BYTES >> 20
            )));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A minijinja environment configured like HF's chat-template environment.
fn hf_environment(date: NaiveDate) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_unknown_method_callback(py_method);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", move |fmt: &str| strftime(date, fmt));
    env.add_filter("tojson", pyjson::tojson);
    env.add_filter("trim", py_trim_filter);
    env
}

/// `raise_exception(msg)`: aborts rendering with `msg`.
fn raise_exception(msg: &str) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg.to_owned()))
}

/// `strftime_now(fmt)` on the injected date at midnight (C-locale names, e.g. "%d %b %Y").
fn strftime(date: NaiveDate, fmt: &str) -> Result<String, Error> {
    let items: Vec<Item> = StrftimeItems::new(fmt).collect();
    if items.contains(&Item::Error) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: unsupported format string {fmt:?}"),
        ));
    }
    let mut out = String::new();
    write!(out, "{}", date.and_time(NaiveTime::MIN).format_with_items(items.into_iter()))
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("strftime_now: cannot format {fmt:?}")))?;
    Ok(out)
}

/// Jinja's `trim(value, chars=None)` = Python `str(value).strip(chars)`.
fn py_trim_filter(value: &Value, chars: Option<&str>) -> String {
    let text = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
    match chars {
        Some(chars) => text.trim_matches(|c| chars.contains(c)).to_owned(),
        None => py_strip(&text).to_owned(),
    }
}

/// Python string/dict/list methods (`pycompat`), with Python's whitespace for argument-less strips.
fn py_method(state: &State, value: &Value, method: &str, args: &[Value]) -> Result<Value, Error> {
    let whitespace_strip: Option<fn(&str) -> &str> = match method {
        "strip" => Some(py_strip),
        "lstrip" => Some(py_lstrip),
        "rstrip" => Some(py_rstrip),
        _ => None,
    };
    let no_chars = args.len() <= 1 && args.iter().all(Value::is_none);
    match (whitespace_strip, value.as_str()) {
        (Some(strip), Some(s)) if no_chars && value.kind() == ValueKind::String => Ok(Value::from(strip(s))),
        _ => minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str) -> Result<String> {
        let date = NaiveDate::from_ymd_opt(2024, 7, 26).unwrap();
        let msgs = [ChatMessage::new("user", " <b>&'x'\u{1c}\n ")];
        ChatTemplate::new(src, "test").render(&msgs, &ChatOptions::recursivemas(date), &[("eos_token", "</s>")])
    }

    #[test]
    fn hostile_templates_run_out_of_fuel_or_room() {
        // Nested loops that would run for minutes stop on their fuel.
        let err = render("{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("fuel"), "{err}");
        // Output past the cap is refused, not held.
        let err =
            render("{% for a in range(3000) %}{{ '%s' | format('x' * 100000) }}{% endfor %}").unwrap_err().to_string();
        assert!(err.contains("MiB"), "{err}");
    }

    #[test]
    fn strftime_now_uses_injected_date() {
        assert_eq!(render("{{ strftime_now('%d %b %Y') }}").unwrap(), "26 Jul 2024");
        assert_eq!(render("{{ strftime_now('%A %B %-d, %y') }}").unwrap(), "Friday July 26, 24");
        assert!(render("{{ strftime_now('%Q') }}").is_err());
    }

    #[test]
    fn trim_and_strip_follow_python() {
        assert_eq!(render("[{{ messages[0].content | trim }}]").unwrap(), "[<b>&'x']");
        assert_eq!(render("[{{ messages[0].content.strip() }}]").unwrap(), "[<b>&'x']");
        assert_eq!(render("[{{ messages[0].content.rstrip() }}]").unwrap(), "[ <b>&'x']");
        assert_eq!(render("[{{ 'xxaxx'.strip('x') }}|{{ 'a,b'.split(',')[1] }}]").unwrap(), "[a|b]");
        assert_eq!(render("[{{ 'xxaxx' | trim('x') }}]").unwrap(), "[a]");
    }

    #[test]
    fn tojson_is_python_json_dumps_without_html_escaping() {
        let src = "{{ {'a': '<b>&\\'', 'n': [1, 2.5, none, true], 'u': 'é\\n'} | tojson }}";
        assert_eq!(render(src).unwrap(), r#"{"a": "<b>&'", "n": [1, 2.5, null, true], "u": "é\n"}"#);
        let indented = "{{ {'a': [1, {}], 'b': []} | tojson(indent=2) }}";
        assert_eq!(render(indented).unwrap(), "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": []\n}");
        let compact = "{{ {'b': 1, 'a': 'é'} | tojson(separators=[',', ':'], sort_keys=true, ensure_ascii=true) }}";
        assert_eq!(render(compact).unwrap(), r#"{"a":"\u00e9","b":1}"#);
    }

    #[test]
    fn environment_matches_hf() {
        // trim_blocks + lstrip_blocks, no trailing newline, loop controls, `tools=None`, Python bools.
        let src = "  {% for i in [1, 2, 3] %}\n{% if i == 2 %}{% continue %}{% endif %}{{ i }}\n  {% endfor %}\n";
        assert_eq!(render(src).unwrap(), "1\n3\n");
        assert_eq!(
            render("{{ tools is none }}|{{ eos_token }}|{{ bos_token is defined }}").unwrap(),
            "True|</s>|False"
        );
        assert_eq!(render("{{ enable_thinking is false }}").unwrap(), "True");
    }

    #[test]
    fn raise_exception_and_syntax_errors_are_reported() {
        let err = render("{{ raise_exception('Conversation roles must alternate user/assistant') }}").unwrap_err();
        assert!(err.to_string().contains(ROLES_MUST_ALTERNATE), "{err}");
        let err = render("{% if %}").unwrap_err();
        assert!(matches!(err, TextError::Template { ref template, .. } if template == "test"), "{err}");
    }
}
