//! A JSON search endpoint for the `search` tool.

use std::io::Read;
use std::time::Duration;

use super::{SEARCH_TOP_K, SearchBackend, SearchResult, format_search_results};

/// HTTP method of an [`HttpSearch`] endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HttpMethod {
    /// JSON body `{"query", "max_results", "search_depth"}` (Tavily-compatible).
    #[default]
    Post,
    /// Query string `?query=…&max_results=…`.
    Get,
}

/// The largest search response read.
const MAX_BODY_BYTES: u64 = 4 << 20;
/// The whole request (connect, send, read) of one search call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A JSON search endpoint answering `{"results": [{"title", "url", "content"}, …]}` (or a bare
/// array of such objects).
#[derive(Clone, Debug)]
pub struct HttpSearch {
    url: String,
    method: HttpMethod,
    api_key: Option<String>,
    agent: ureq::Agent,
}

impl HttpSearch {
    /// An endpoint; `api_key` is sent as `Authorization: Bearer …`.
    pub fn new(url: impl Into<String>, method: HttpMethod, api_key: Option<String>) -> Self {
        let agent = ureq::AgentBuilder::new().timeout(REQUEST_TIMEOUT).build();
        Self { url: url.into(), method, api_key, agent }
    }

    fn fetch(&self, query: &str) -> std::result::Result<Vec<SearchResult>, String> {
        let request = match self.method {
            HttpMethod::Post => self.agent.post(&self.url),
            HttpMethod::Get => {
                self.agent.get(&self.url).query("query", query).query("max_results", &SEARCH_TOP_K.to_string())
            }
        };
        let request = match &self.api_key {
            Some(key) => request.set("Authorization", &format!("Bearer {key}")),
            None => request,
        };
        let response = match self.method {
            HttpMethod::Post => request.send_json(serde_json::json!({
                "query": query, "max_results": SEARCH_TOP_K, "search_depth": "advanced"
            })),
            HttpMethod::Get => request.call(),
        }
        .map_err(|e| match e {
            ureq::Error::Status(code, r) => search_error("HTTPError", format!("{code} {}", r.status_text())),
            ureq::Error::Transport(t) => search_error("ConnectionError", t),
        })?;
        // The body is read up to a cap: a hostile endpoint must not exhaust memory.
        let mut body = Vec::new();
        response
            .into_reader()
            .take(MAX_BODY_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| search_error("ConnectionError", e))?;
        if body.len() as u64 > MAX_BODY_BYTES {
            return Err(search_error("ValueError", format!("response larger than {MAX_BODY_BYTES} bytes")));
        }
        let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| search_error("ValueError", e))?;
        Ok(parse_search_json(&json))
    }
}

impl SearchBackend for HttpSearch {
    fn search(&self, query: &str) -> String {
        match self.fetch(query) {
            Ok(results) => format_search_results(query, &results),
            Err(error) => error,
        }
    }
}

/// Reads `results` (or a bare array) of `{title, url, content | snippet}` objects.
fn parse_search_json(json: &serde_json::Value) -> Vec<SearchResult> {
    let items = json.get("results").unwrap_or(json).as_array().cloned().unwrap_or_default();
    let field = |item: &serde_json::Value, keys: &[&str]| {
        keys.iter().find_map(|k| item.get(*k).and_then(serde_json::Value::as_str)).unwrap_or_default().to_string()
    };
    items
        .iter()
        .take(SEARCH_TOP_K)
        .map(|item| SearchResult {
            title: field(item, &["title"]),
            url: field(item, &["url", "link"]),
            content: field(item, &["content", "snippet"]),
        })
        .collect()
}

/// `[search error] Type: msg`.
pub(crate) fn search_error(kind: &str, msg: impl std::fmt::Display) -> String {
    format!("[search error] {kind}: {msg}")
}
