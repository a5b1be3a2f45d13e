//! The OpenAI chat-completions wire format (docs/serve.md): a request body checked into a
//! [`ChatRequest`], and errors as OpenAI-shaped JSON with their HTTP status.

use std::ops::RangeInclusive;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rmas::options::{DEFAULT_SEED, DEFAULT_TOP_K, RunOverrides};
use rmas_text::{Dataset, Task};
use serde_json::{Map, Value, json};

/// Largest `max_tokens` a request may ask for.
const MAX_TOKENS_LIMIT: u64 = 32_768;
/// Most rounds a request may ask for.
const MAX_ROUNDS: u64 = 16;
/// Most latent steps per rollout a request may ask for.
const MAX_LATENT_STEPS: u64 = 1_024;

/// An error answered in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<&'static str>,
    pub code: &'static str,
    /// Seconds for a `Retry-After` header (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status`, OpenAI `code` and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), param: None, code, retry_after: None }
    }

    /// A bad value of the request field `param` (422).
    fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self { param: Some(param), ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", message) }
    }

    /// OpenAI's error `type` for this status.
    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind(), "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// A checked chat-completions request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The question: the text of the last message, which must be the user's.
    pub question: String,
    /// System messages and earlier turns, which RecursiveMAS prompts have no place for.
    pub ignored_messages: usize,
    pub dataset: Dataset,
    pub overrides: RunOverrides,
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with the usage.
    pub include_usage: bool,
    /// Stage progress as named `rmas.stage` events instead of SSE comments.
    pub named_events: bool,
}

impl ChatRequest {
    /// Checks a parsed body against the served system (`model` id, the link set `task` it loaded).
    pub fn parse(body: &Value, model: &str, task: Task) -> Result<Self, ApiError> {
        let body = body.as_object().ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", "the body must be a JSON object")
        })?;
        let field = Fields(body);
        if let Some(asked) = field.string("model")?
            && asked != model
        {
            return Err(ApiError {
                param: Some("model"),
                ..ApiError::new(
                    StatusCode::NOT_FOUND,
                    "model_not_found",
                    format!("the model `{asked}` does not exist: this server serves `{model}`"),
                )
            });
        }
        let (question, ignored_messages) = question(body.get("messages"))?;
        refuse_unsupported(&field)?;
        let dataset = match field.string("dataset")? {
            Some(name) => name.parse::<Dataset>().map_err(|e| ApiError::invalid("dataset", e.to_string()))?,
            None => Dataset::Math500,
        };
        if dataset.task() != task {
            return Err(ApiError::invalid(
                "dataset",
                format!(
                    "dataset `{}` needs the {} link set, but this server loaded {}: start it with --task {}",
                    dataset.key(),
                    dataset.task(),
                    task,
                    dataset.task()
                ),
            ));
        }
        let temperature = field.number("temperature", 0.0..=2.0)?;
        let top_p = field.number("top_p", f64::MIN_POSITIVE..=1.0)?;
        let max_tokens = match field.integer("max_completion_tokens", 1..=MAX_TOKENS_LIMIT)? {
            Some(n) => Some(n),
            None => field.integer("max_tokens", 1..=MAX_TOKENS_LIMIT)?,
        };
        let overrides = RunOverrides {
            rounds: field.integer("rounds", 1..=MAX_ROUNDS)?.map(|n| n as usize),
            latent_steps: field.integer("latent_steps", 0..=MAX_LATENT_STEPS)?.map(|n| n as usize),
            max_new_tokens: max_tokens.map(|n| n as usize),
            greedy: temperature == Some(0.0),
            temperature: temperature.filter(|t| *t > 0.0).map(|t| t as f32),
            top_p: top_p.map(|p| p as f32),
            top_k: Some(DEFAULT_TOP_K),
            seed: Some(field.integer("seed", 0..=u64::MAX)?.unwrap_or(DEFAULT_SEED)),
            answer_retry: field.boolean("answer_retry")?,
            fn_name: None,
            summarize_every_round: None,
        };
        let include_usage = match body.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => Fields(o).boolean("include_usage")?.unwrap_or(false),
            Some(_) => return Err(ApiError::invalid("stream_options", "`stream_options` must be an object")),
        };
        Ok(Self {
            question,
            ignored_messages,
            dataset,
            overrides,
            stream: field.boolean("stream")?.unwrap_or(false),
            include_usage,
            named_events: field.boolean("rmas_events")?.unwrap_or(false),
        })
    }
}

/// The question (the last message, the user's) and how many earlier messages are left unused.
fn question(messages: Option<&Value>) -> Result<(String, usize), ApiError> {
    let missing = || ApiError {
        param: Some("messages"),
        ..ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_required_parameter",
            "`messages` is required: a non-empty array of {role, content}",
        )
    };
    let messages = messages.and_then(Value::as_array).filter(|m| !m.is_empty()).ok_or_else(missing)?;
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str);
        match role {
            Some("system" | "developer" | "user" | "assistant") => {}
            Some("tool" | "function") => {
                return Err(ApiError::invalid("messages", format!("messages[{i}]: tool messages are not supported")));
            }
            _ => {
                return Err(ApiError::invalid(
                    "messages",
                    format!("messages[{i}] needs a role (system, user or assistant)"),
                ));
            }
        }
    }
    let last = messages.last().expect("non-empty");
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return Err(ApiError::invalid("messages", "the last message must be the user's question"));
    }
    let text = match last.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => {
            let texts: Option<Vec<&str>> = parts
                .iter()
                .map(|p| {
                    (p.get("type").and_then(Value::as_str) == Some("text")).then(|| p.get("text")?.as_str()).flatten()
                })
                .collect();
            texts.ok_or_else(|| ApiError::invalid("messages", "only text content parts are supported"))?.concat()
        }
        _ => return Err(ApiError::invalid("messages", "the last message needs a text `content`")),
    };
    if text.trim().is_empty() {
        return Err(ApiError::invalid("messages", "the question is empty"));
    }
    Ok((text, messages.len() - 1))
}

/// OpenAI features RecursiveMAS cannot honour, refused rather than ignored when asked for.
fn refuse_unsupported(field: &Fields<'_>) -> Result<(), ApiError> {
    if let Some(n) = field.integer("n", 1..=u64::MAX)?
        && n != 1
    {
        return Err(ApiError::invalid("n", "only one choice per request (n = 1) is supported"));
    }
    if field.boolean("logprobs")? == Some(true) {
        return Err(ApiError::invalid("logprobs", "log-probabilities are not returned"));
    }
    for param in ["tools", "functions", "stop", "response_format", "tool_choice"] {
        let set = match field.0.get(param) {
            None | Some(Value::Null) => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::String(s)) => !(param == "tool_choice" && s == "none"),
            Some(Value::Object(o)) => !(param == "response_format" && o.get("type") == Some(&json!("text"))),
            Some(_) => true,
        };
        if set {
            return Err(ApiError::invalid(param, format!("`{param}` is not supported by RecursiveMAS systems")));
        }
    }
    Ok(())
}

/// Typed access to a body's optional fields, each wrong type or range a 422 naming the field.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn string(&self, name: &'static str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(ApiError::invalid(name, format!("`{name}` must be a string (got {v})"))),
        }
    }

    fn boolean(&self, name: &'static str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(ApiError::invalid(name, format!("`{name}` must be true or false (got {v})"))),
        }
    }

    fn number(&self, name: &'static str, range: RangeInclusive<f64>) -> Result<Option<f64>, ApiError> {
        self.ranged(name, range, Value::as_f64, "a number")
    }

    fn integer(&self, name: &'static str, range: RangeInclusive<u64>) -> Result<Option<u64>, ApiError> {
        self.ranged(name, range, Value::as_u64, "an integer")
    }

    /// The field read by `read` (`what` it must be) when it lies in `range`.
    fn ranged<T: PartialOrd + std::fmt::Display>(
        &self,
        name: &'static str,
        range: RangeInclusive<T>,
        read: fn(&Value) -> Option<T>,
        what: &str,
    ) -> Result<Option<T>, ApiError> {
        let Some(v) = self.get(name) else { return Ok(None) };
        match read(v).filter(|x| range.contains(x)) {
            Some(x) => Ok(Some(x)),
            None => Err(ApiError::invalid(
                name,
                format!("`{name}` must be {what} in [{}, {}] (got {v})", range.start(), range.end()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<ChatRequest, ApiError> {
        ChatRequest::parse(&body, "demo", Task::Math)
    }

    #[test]
    fn a_plain_request_takes_the_run_defaults() {
        let r = parse(json!({"model": "demo", "messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "1+1?"}]}))
            .unwrap();
        assert_eq!(
            (r.question.as_str(), r.ignored_messages, r.dataset, r.stream),
            ("1+1?", 1, Dataset::Math500, false)
        );
        let o = &r.overrides;
        assert!(!o.greedy && o.temperature.is_none() && o.max_new_tokens.is_none() && o.rounds.is_none());
        assert_eq!((o.seed, o.top_k), (Some(DEFAULT_SEED), Some(DEFAULT_TOP_K)));
        let greedy = parse(json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}], "temperature": 0, "max_tokens": 7, "rounds": 2})).unwrap();
        assert!(greedy.overrides.greedy);
        assert_eq!((greedy.overrides.max_new_tokens, greedy.overrides.rounds), (Some(7), Some(2)));
    }

    #[test]
    fn bad_requests_name_the_field_and_status() {
        let user = json!([{"role": "user", "content": "q"}]);
        let cases = [
            (json!({}), 400, "messages"),
            (json!({"messages": []}), 400, "messages"),
            (json!({"model": "gpt-4", "messages": user}), 404, "model"),
            (json!({"messages": user, "temperature": 3}), 422, "temperature"),
            (json!({"messages": user, "temperature": "hot"}), 422, "temperature"),
            (json!({"messages": user, "top_p": 0}), 422, "top_p"),
            (json!({"messages": user, "max_tokens": 0}), 422, "max_tokens"),
            (json!({"messages": user, "rounds": 0}), 422, "rounds"),
            (json!({"messages": user, "n": 2}), 422, "n"),
            (json!({"messages": user, "tools": [{"type": "function"}]}), 422, "tools"),
            (json!({"messages": user, "dataset": "mbppplus"}), 422, "dataset"),
            (json!({"messages": user, "dataset": "nope"}), 422, "dataset"),
            (
                json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}),
                422,
                "messages",
            ),
            (json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}), 422, "messages"),
        ];
        for (body, status, param) in cases {
            let e = parse(body.clone()).unwrap_err();
            assert_eq!((e.status.as_u16(), e.param), (status, Some(param)), "{body}: {}", e.message);
        }
    }
}
