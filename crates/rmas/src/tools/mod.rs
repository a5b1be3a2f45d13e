//! Deliberation tools (docs/algorithm.md, "Deliberation tool loop"): tool-call parsing, a sandboxed `python` tool and
//! pluggable `search` backends. Every result goes through [`sanitize_tool_result`].
//!
//! The python sandbox lives in [`python`] and the HTTP search backend in [`http`] (native builds only;
//! in the browser a python call answers that the tool is unavailable).
//!
//! Positions (`cursor`, [`ToolCall::start`], [`ToolCall::end`]) are byte offsets into the text.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use rmas_text::Tokenizer;
use rmas_text::pystr::{is_py_space, py_rstrip, py_strip};

use crate::error::{Result, RmasError};

#[cfg(not(target_family = "wasm"))]
pub mod cgroup;
#[cfg(not(target_family = "wasm"))]
pub mod http;
#[cfg(not(target_family = "wasm"))]
pub mod python;
#[cfg(not(target_family = "wasm"))]
pub mod sandbox;

#[cfg(not(target_family = "wasm"))]
pub use cgroup::TreeLimits;
#[cfg(not(target_family = "wasm"))]
pub use http::{HttpMethod, HttpSearch};
#[cfg(not(target_family = "wasm"))]
pub use python::{PythonConfig, PythonTool};
#[cfg(not(target_family = "wasm"))]
pub use sandbox::Isolation;

/// Maximum characters of a tool result before truncation.
pub const RESULT_MAX_CHARS: usize = 6000;
/// Tool calls allowed per final generation.
pub const MAX_TOOL_ROUNDS: usize = 5;
/// Wall time all tool calls of one question may take together (each call also has its own limit).
pub const TOOL_TIME_BUDGET: std::time::Duration = std::time::Duration::from_secs(120);
/// The release's prelude prepended to every python tool script.
pub const PYTHON_PRELUDE: &str = "import math\nimport itertools\nimport functools\nimport fractions\nimport statistics\ntry:\n    import sympy as sp\nexcept Exception:\n    sp = None\n\n";

/// Results the search backends return at most.
pub(crate) const SEARCH_TOP_K: usize = 4;
/// Characters of a search result's content kept before `" ..."`.
const SEARCH_CONTENT_CHARS: usize = 320;

/// Which tool a call invokes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ToolKind {
    /// `<python> code </python>`.
    Python,
    /// `<search> query </search>`.
    Search,
}

impl ToolKind {
    fn close_tag(self) -> &'static Regex {
        static PYTHON: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)</python>").expect("valid regex"));
        static SEARCH: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)</search>").expect("valid regex"));
        match self {
            Self::Python => &PYTHON,
            Self::Search => &SEARCH,
        }
    }
}

/// A complete tool call found in generated text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    /// The tool.
    pub kind: ToolKind,
    /// The code or query, surrounding whitespace removed.
    pub body: String,
    /// Byte offset of the opening tag.
    pub start: usize,
    /// Byte offset just after the closing tag.
    pub end: usize,
}

/// An opening tag found at or after a cursor: its kind, start and end byte offsets.
fn opening_tags(text: &str, cursor: usize) -> impl Iterator<Item = (ToolKind, usize, usize)> + '_ {
    static OPEN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)<(python|search)>").expect("valid regex"));
    let tail = text.get(cursor..).unwrap_or_default();
    OPEN.captures_iter(tail).filter_map(move |caps| {
        let (all, name) = (caps.get(0)?, caps.get(1)?);
        let kind = if name.as_str().eq_ignore_ascii_case("python") { ToolKind::Python } else { ToolKind::Search };
        Some((kind, cursor + all.start(), cursor + all.end()))
    })
}

/// The first match of `(?is)<(python|search)>\s*(.*?)\s*</\1>` at or after `cursor`.
pub fn find_tool_call(text: &str, cursor: usize) -> Option<ToolCall> {
    opening_tags(text, cursor).find_map(|(kind, start, body_start)| {
        let close = kind.close_tag().find(&text[body_start..])?;
        Some(ToolCall {
            kind,
            body: py_strip(&text[body_start..body_start + close.start()]).to_string(),
            start,
            end: body_start + close.end(),
        })
    })
}

/// Whether an opening tag at or after `cursor` has no matching closing tag after it
/// (`(?is)<(python|search)>(?!.*</\1>)`).
pub fn has_unclosed_tool_call(text: &str, cursor: usize) -> bool {
    opening_tags(text, cursor).any(|(kind, _, body_start)| !kind.close_tag().is_match(&text[body_start..]))
}

/// Ids of a generate call's tail the stop check decodes.
const STOP_TAIL_TOKENS: usize = 16;

/// The tool loop's stop check after a call generated `ids` from `input_rows` input rows
/// (docs/algorithm.md, "Deliberation tool loop"): `</python>` or `</search>` (any case) among the last 16 of the ids generated past the first
/// `input_rows`. The reference slices its generated ids at the input's length, so before that many
/// tokens a call never stops for a tool (it runs on to eos or its budget).
pub fn stops_for_tool(tokenizer: &Tokenizer, ids: &[u32], input_rows: usize) -> bool {
    let seen = ids.get(input_rows..).unwrap_or_default();
    let tail = &seen[seen.len().saturating_sub(STOP_TAIL_TOKENS)..];
    !tail.is_empty()
        && tokenizer.decode(tail, false).is_ok_and(|text| {
            let lower = text.to_lowercase();
            lower.contains("</python>") || lower.contains("</search>")
        })
}

/// Escapes `</result>` and truncates to [`RESULT_MAX_CHARS`] characters with a note of the rest.
pub fn sanitize_tool_result(result: &str) -> String {
    let escaped = escape_control_tokens(&result.replace("</result>", "< /result>"));
    let total = escaped.chars().count();
    if total <= RESULT_MAX_CHARS {
        return escaped;
    }
    let kept: String = escaped.chars().take(RESULT_MAX_CHARS).collect();
    format!("{kept}\n... [truncated {} chars]", total - RESULT_MAX_CHARS)
}

/// Breaks every chat control token in tool output (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`,
/// `[INST]`, `</s>`, …) with a zero-width space after its first character, so that text from a
/// script or a web page cannot end the turn or open another role when the tokenizer reads it.
pub fn escape_control_tokens(text: &str) -> String {
    static CONTROL: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"<\|[^<>|\s]{1,64}\|>|</?(?:s|bos|eos|pad|unk|start_of_turn|end_of_turn|start_of_image|end_of_image)>|\[/?(?:INST|SYSTEM_PROMPT|TOOL_CALLS|AVAILABLE_TOOLS|TOOL_RESULTS)\]")
            .expect("constant regex")
    });
    CONTROL
        .replace_all(text, |m: &regex::Captures<'_>| {
            let token = &m[0];
            format!("{}\u{200b}{}", &token[..1], &token[1..])
        })
        .into_owned()
}

/// One search hit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchResult {
    /// Title.
    pub title: String,
    /// Address.
    pub url: String,
    /// Text snippet.
    pub content: String,
}

/// A search backend for the `search` tool; returns the formatted result text.
pub trait SearchBackend: Send + Sync {
    /// Searches for `query` and formats the outcome as the reference does (errors included).
    fn search(&self, query: &str) -> String;
}

/// The reference's search result layout: `Query:`, then `Results:` with `[i] title`, `URL: url` and compacted
/// content (each line only when non-empty), or `[no search results]`.
pub fn format_search_results(query: &str, results: &[SearchResult]) -> String {
    let mut lines = vec![format!("Query: {query}")];
    if results.is_empty() {
        lines.push("[no search results]".to_string());
    } else {
        lines.push("Results:".to_string());
    }
    for (i, result) in results.iter().take(SEARCH_TOP_K).enumerate() {
        lines.push(format!("[{}] {}", i + 1, py_strip(&result.title)));
        let (url, content) = (py_strip(&result.url), compact_content(&result.content));
        if !url.is_empty() {
            lines.push(format!("URL: {url}"));
        }
        if !content.is_empty() {
            lines.push(content);
        }
    }
    lines.join("\n")
}

/// Whitespace-compacts `content`; past 320 characters cuts it there, right-strips the cut and
/// appends `" ..."`.
fn compact_content(content: &str) -> String {
    let compact = content.split(is_py_space).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
    if compact.chars().count() <= SEARCH_CONTENT_CHARS {
        return compact;
    }
    let cut: String = compact.chars().take(SEARCH_CONTENT_CHARS).collect();
    format!("{} ...", py_rstrip(&cut))
}

/// The release's offline stand-in (no API key).
#[derive(Clone, Copy, Debug, Default)]
pub struct DummySearch;

impl SearchBackend for DummySearch {
    fn search(&self, query: &str) -> String {
        format!("Dummy search result for query: {query}\nExternal search is disabled in the release runner.")
    }
}

/// Offline search over a directory of `.txt` / `.md` files, ranked by query-term overlap.
///
/// Files are split into paragraphs (blank-line separated); a paragraph scores the number of
/// distinct query terms it contains, ties broken by total term occurrences, then file order.
#[derive(Clone, Debug, Default)]
pub struct CorpusSearch {
    passages: Vec<Passage>,
}

#[derive(Clone, Debug)]
struct Passage {
    result: SearchResult,
    terms: HashMap<String, usize>,
}

impl CorpusSearch {
    /// Loads every `.txt` / `.md` file under `dir` (recursively, in path order).
    pub fn load(dir: &Path) -> Result<Self> {
        let mut files = Vec::new();
        collect_text_files(dir, &mut files)?;
        files.sort();
        let mut corpus = Self::default();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|e| RmasError::io("search corpus file", &file, e))?;
            corpus.add_document(&document_title(&file, &text), &format!("file://{}", file.display()), &text);
        }
        Ok(corpus)
    }

    /// Adds one document, split into paragraphs.
    pub fn add_document(&mut self, title: &str, url: &str, text: &str) {
        for paragraph in text.split("\n\n").map(py_strip).filter(|p| !p.is_empty()) {
            let mut terms = HashMap::new();
            for term in tokenize(paragraph) {
                *terms.entry(term).or_insert(0) += 1;
            }
            let result = SearchResult { title: title.into(), url: url.into(), content: paragraph.into() };
            self.passages.push(Passage { result, terms });
        }
    }

    /// The best passages for `query`, at most four.
    pub fn rank(&self, query: &str) -> Vec<SearchResult> {
        let mut query_terms = tokenize(query);
        query_terms.sort();
        query_terms.dedup();
        let mut scored: Vec<(usize, usize, usize)> = self
            .passages
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let hits: Vec<usize> = query_terms.iter().filter_map(|t| p.terms.get(t).copied()).collect();
                (!hits.is_empty()).then(|| (hits.len(), hits.iter().sum(), i))
            })
            .collect();
        scored.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        scored.iter().take(SEARCH_TOP_K).map(|&(_, _, i)| self.passages[i].result.clone()).collect()
    }
}

impl SearchBackend for CorpusSearch {
    fn search(&self, query: &str) -> String {
        format_search_results(query, &self.rank(query))
    }
}

/// Lower-cased alphanumeric words.
fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// The first Markdown heading, else the file stem.
fn document_title(path: &Path, text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix('#').map(|h| h.trim_start_matches('#').trim().to_string()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default())
}

fn collect_text_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| RmasError::io("search corpus directory", dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| RmasError::io("search corpus directory", dir, e))?.path();
        if path.is_dir() {
            collect_text_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "txt" || e == "md") {
            out.push(path);
        }
    }
    Ok(())
}

/// Picks the search backend from a variable lookup: `RMAS_SEARCH_URL` (+ `RMAS_SEARCH_METHOD`
/// `GET`/`POST`, `RMAS_SEARCH_API_KEY`) → [`HttpSearch`]; else `RMAS_SEARCH_CORPUS` →
/// [`CorpusSearch`]; else [`DummySearch`].
pub fn search_from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Box<dyn SearchBackend>> {
    #[cfg(not(target_family = "wasm"))]
    if let Some(url) = var("RMAS_SEARCH_URL") {
        let method = match var("RMAS_SEARCH_METHOD") {
            Some(m) if m.eq_ignore_ascii_case("get") => HttpMethod::Get,
            _ => HttpMethod::Post,
        };
        return Ok(Box::new(HttpSearch::new(url, method, var("RMAS_SEARCH_API_KEY"))));
    }
    if let Some(dir) = var("RMAS_SEARCH_CORPUS") {
        return Ok(Box::new(CorpusSearch::load(Path::new(&dir))?));
    }
    Ok(Box::new(DummySearch))
}

/// The search backend of the process environment ([`search_from_vars`] over non-empty variables).
fn search_from_env() -> Result<Box<dyn SearchBackend>> {
    search_from_vars(|key: &str| std::env::var(key).ok().filter(|v| !v.is_empty()))
}

/// The tools of the deliberation toolcaller.
pub struct ToolBox {
    /// The python tool.
    #[cfg(not(target_family = "wasm"))]
    pub python: PythonTool,
    /// The search backend.
    pub search: Box<dyn SearchBackend>,
}

impl ToolBox {
    /// Tools configured from the environment: interpreter `RMAS_PYTHON` (default `python3`, the
    /// sandbox required unless `RMAS_UNSAFE_TOOLS=1`) and the search backend of [`search_from_vars`].
    pub fn from_env() -> Result<Self> {
        #[cfg(not(target_family = "wasm"))]
        return Self::with_python(PythonConfig::from_env());
        #[cfg(target_family = "wasm")]
        Ok(Self { search: search_from_env()? })
    }

    /// The python tool with `python` and the search backend of the environment; fails (closed)
    /// when `python` cannot isolate code here.
    #[cfg(not(target_family = "wasm"))]
    pub fn with_python(python: PythonConfig) -> Result<Self> {
        python.check_isolation().map_err(RmasError::Sandbox)?;
        Ok(Self { python: PythonTool::new(python), search: search_from_env()? })
    }

    #[cfg(not(target_family = "wasm"))]
    fn python(&self, code: &str) -> String {
        self.python.run(code)
    }

    #[cfg(target_family = "wasm")]
    fn python(&self, _code: &str) -> String {
        "[python error] the python tool is not available in the browser build of rmas".to_string()
    }

    /// Runs a call and returns the sanitized result text.
    pub fn run(&self, call: &ToolCall) -> String {
        let raw = match call.kind {
            ToolKind::Python => self.python(&call.body),
            ToolKind::Search => self.search.search(&call.body),
        };
        sanitize_tool_result(&raw)
    }
}
