//! Deliberation tools (recursivemas.md §10): tool-call parsing, a sandboxed `python` tool and
//! pluggable `search` backends. Every result goes through [`sanitize_tool_result`].
//!
//! # Python sandbox
//! Each call writes the release prelude + code to a fresh temporary directory and runs the
//! interpreter (default `python3`) there, in its own process group, with a cleared environment
//! (only `PATH`, locale and pyenv variables are kept; `HOME`/`TMPDIR` point at the scratch
//! directory) and these limits:
//! * time: the whole process group is SIGKILLed at the timeout (default 10 s);
//! * memory / files: `RLIMIT_AS` (default 2 GiB), `RLIMIT_FSIZE` (64 MiB), no core dumps;
//! * network: when `unshare` can create namespaces the process runs in new user + network + PID
//!   namespaces (only a loopback interface; when the interpreter exits every process it started
//!   dies with the namespace). A `sitecustomize` guard that refuses IPv4/IPv6 sockets and name
//!   lookups is always installed as well, so machines without namespaces still get best-effort
//!   protection;
//! * output: stdout and stderr are drained concurrently; at most `max_output_bytes` of each are
//!   kept, the rest is discarded (so a chatty process neither blocks nor exhausts memory).
//!
//! Positions (`cursor`, [`ToolCall::start`], [`ToolCall::end`]) are byte offsets into the text.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use regex::Regex;

use crate::error::{Result, RmasError};

/// Maximum characters of a tool result before truncation.
pub const RESULT_MAX_CHARS: usize = 6000;
/// Tool calls allowed per final generation.
pub const MAX_TOOL_ROUNDS: usize = 5;
/// The release's prelude prepended to every python tool script.
pub const PYTHON_PRELUDE: &str = "import math\nimport itertools\nimport functools\nimport fractions\nimport statistics\ntry:\n    import sympy as sp\nexcept Exception:\n    sp = None\n\n";

/// Results the search backends return at most.
const SEARCH_TOP_K: usize = 4;
/// Characters of a search result's content kept before `" ..."`.
const SEARCH_CONTENT_CHARS: usize = 320;

const SOCKET_GUARD: &str = r#"import socket as _s
def _rmas_deny(*_a, **_k):
    raise OSError("network access is disabled in the rmas python tool")
def _rmas_guard(_orig):
    def _wrapped(self, *a, **k):
        if self.family in (_s.AF_INET, _s.AF_INET6):
            _rmas_deny()
        return _orig(self, *a, **k)
    return _wrapped
for _n in ("connect", "connect_ex", "bind", "sendto", "sendmsg"):
    setattr(_s.socket, _n, _rmas_guard(getattr(_s.socket, _n)))
_s.getaddrinfo = _rmas_deny
_s.gethostbyname = _rmas_deny
del _s, _n, _rmas_guard
"#;

/// Environment variables passed through to the interpreter.
const ENV_PASSTHROUGH: [&str; 6] = [
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "PYENV_ROOT",
    "PYENV_VERSION",
];
/// `unshare` arguments for user + network + PID namespaces.
const UNSHARE_ARGS: [&str; 5] = [
    "--map-root-user",
    "--net",
    "--pid",
    "--fork",
    "--kill-child",
];

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
        static PYTHON: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"(?i)</python>").expect("valid regex"));
        static SEARCH: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"(?i)</search>").expect("valid regex"));
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
    static OPEN: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?i)<(python|search)>").expect("valid regex"));
    let tail = text.get(cursor..).unwrap_or_default();
    OPEN.captures_iter(tail).filter_map(move |caps| {
        let (all, name) = (caps.get(0)?, caps.get(1)?);
        let kind = if name.as_str().eq_ignore_ascii_case("python") {
            ToolKind::Python
        } else {
            ToolKind::Search
        };
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
    opening_tags(text, cursor)
        .any(|(kind, _, body_start)| !kind.close_tag().is_match(&text[body_start..]))
}

/// The generation stop check: whether `text` (lower-cased) contains `</python>` or `</search>`.
pub fn contains_tool_close(text: &str) -> bool {
    let lower = text.to_lowercase();
    lower.contains("</python>") || lower.contains("</search>")
}

/// Escapes `</result>` and truncates to [`RESULT_MAX_CHARS`] characters with a note of the rest.
pub fn sanitize_tool_result(result: &str) -> String {
    let escaped = result.replace("</result>", "< /result>");
    let total = escaped.chars().count();
    if total <= RESULT_MAX_CHARS {
        return escaped;
    }
    let kept: String = escaped.chars().take(RESULT_MAX_CHARS).collect();
    format!("{kept}\n... [truncated {} chars]", total - RESULT_MAX_CHARS)
}

/// Python's `str.isspace` (Unicode whitespace plus the `\x1c`–`\x1f` separators).
fn py_is_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

fn py_strip(s: &str) -> &str {
    s.trim_matches(py_is_space)
}

fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(py_is_space)
}

/// Settings of the python tool.
#[derive(Clone, Debug)]
pub struct PythonConfig {
    /// Interpreter to run (a name looked up in `PATH`, or a path).
    pub interpreter: PathBuf,
    /// Wall-clock limit per call.
    pub timeout: Duration,
    /// Address-space limit in bytes (`RLIMIT_AS`), if any.
    pub memory_limit: Option<u64>,
    /// Largest file the script may write (`RLIMIT_FSIZE`), if limited.
    pub max_file_size: Option<u64>,
    /// Bytes kept from each of stdout and stderr.
    pub max_output_bytes: usize,
}

impl Default for PythonConfig {
    fn default() -> Self {
        Self {
            interpreter: PathBuf::from("python3"),
            timeout: Duration::from_secs(10),
            memory_limit: Some(2 << 30),
            max_file_size: Some(64 << 20),
            max_output_bytes: 256 << 10,
        }
    }
}

/// How the python tool keeps scripts off the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkIsolation {
    /// New user, network and PID namespaces via `unshare` (plus the socket guard).
    Namespaces,
    /// Only the `sitecustomize` socket guard (namespaces unavailable).
    SocketGuard,
}

/// The sandboxed python tool.
#[derive(Clone, Debug, Default)]
pub struct PythonTool {
    config: PythonConfig,
}

impl PythonTool {
    /// A tool with the given settings.
    pub fn new(config: PythonConfig) -> Self {
        Self { config }
    }

    /// The settings.
    pub fn config(&self) -> &PythonConfig {
        &self.config
    }

    /// The network isolation available on this machine (probed once per process).
    pub fn network_isolation() -> NetworkIsolation {
        static PROBE: OnceLock<NetworkIsolation> = OnceLock::new();
        *PROBE.get_or_init(|| {
            let works = Command::new("unshare")
                .args(UNSHARE_ARGS)
                .arg("true")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if works {
                NetworkIsolation::Namespaces
            } else {
                NetworkIsolation::SocketGuard
            }
        })
    }

    /// Runs prelude + `code` and formats the result as §10 (not yet sanitized). Never panics:
    /// failures to start the interpreter become a `[python error] …` result.
    pub fn run(&self, code: &str) -> String {
        match self.execute(code) {
            Ok(None) => format!(
                "[timeout] Python tool exceeded {:?} seconds.",
                self.config.timeout.as_secs_f64()
            ),
            Ok(Some(output)) => output.format(),
            Err(e) => format!(
                "[python error] cannot run `{}`: {e}",
                self.config.interpreter.display()
            ),
        }
    }

    /// Runs the script; `None` on timeout.
    fn execute(&self, code: &str) -> std::io::Result<Option<PythonOutput>> {
        let scratch = ScratchDir::create()?;
        let script = scratch.path.join("script.py");
        std::fs::write(&script, format!("{PYTHON_PRELUDE}{code}\n"))?;
        let site = scratch.path.join("site");
        let work = scratch.path.join("work");
        std::fs::create_dir(&site)?;
        std::fs::create_dir(&work)?;
        std::fs::write(site.join("sitecustomize.py"), SOCKET_GUARD)?;

        let interpreter = find_program(&self.config.interpreter)?;
        let mut child = self.command(&interpreter, &script, &site, &work).spawn()?;
        let cap = self.config.max_output_bytes;
        let stdout = child.stdout.take().map(|p| OutputReader::spawn(p, cap));
        let stderr = child.stderr.take().map(|p| OutputReader::spawn(p, cap));
        let pid = child.id() as libc::pid_t;
        let exited = wait_exited(pid, Instant::now() + self.config.timeout);
        // SAFETY: `pid` is our unreaped child, so its process group id cannot have been reused.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let status = child.wait()?;
        let grace = Instant::now() + Duration::from_millis(500);
        let (stdout, stderr) = (
            OutputReader::finish(stdout, grace),
            OutputReader::finish(stderr, grace),
        );
        Ok(exited.then(|| PythonOutput {
            stdout,
            stderr,
            exit_code: exit_code(status),
        }))
    }

    fn command(&self, interpreter: &Path, script: &Path, site: &Path, work: &Path) -> Command {
        let mut cmd = match Self::network_isolation() {
            NetworkIsolation::Namespaces => {
                let mut cmd = Command::new("unshare");
                cmd.args(UNSHARE_ARGS).arg(interpreter);
                cmd
            }
            NetworkIsolation::SocketGuard => Command::new(interpreter),
        };
        cmd.arg(script).current_dir(work).env_clear();
        for key in ENV_PASSTHROUGH {
            if let Some(value) = std::env::var_os(key) {
                cmd.env(key, value);
            }
        }
        cmd.env("HOME", work)
            .env("TMPDIR", work)
            .env("PYTHONPATH", site)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONIOENCODING", "utf-8")
            .env("OPENBLAS_NUM_THREADS", "1")
            .env("OMP_NUM_THREADS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let limits = [
            (libc::RLIMIT_AS, self.config.memory_limit),
            (libc::RLIMIT_FSIZE, self.config.max_file_size),
            (libc::RLIMIT_CORE, Some(0)),
        ];
        // SAFETY: the closure only calls `setrlimit`, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                for (resource, limit) in limits {
                    if let Some(limit) = limit {
                        let rlim = libc::rlimit {
                            rlim_cur: limit,
                            rlim_max: limit,
                        };
                        if libc::setrlimit(resource, &rlim) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                }
                Ok(())
            });
        }
        cmd
    }
}

/// Resolves a program name through `PATH` (paths with a `/` are taken as they are).
fn find_program(program: &Path) -> std::io::Result<PathBuf> {
    let not_found = || std::io::Error::new(std::io::ErrorKind::NotFound, "interpreter not found");
    if program.components().count() > 1 {
        return if program.is_file() {
            Ok(program.to_path_buf())
        } else {
            Err(not_found())
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(not_found)
}

/// Waits (without reaping) until `pid` exits or `deadline` passes; true if it exited.
fn wait_exited(pid: libc::pid_t, deadline: Instant) -> bool {
    loop {
        // SAFETY: `info` is a valid out-parameter; WNOWAIT leaves the child reapable.
        let (rc, exited_pid) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            let rc = libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags);
            (rc, info.si_pid())
        };
        if rc != 0 || exited_pid != 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Python's `returncode`: the exit code, or minus the signal number.
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| -s))
        .unwrap_or(-1)
}

/// Captured output of a finished script.
struct PythonOutput {
    stdout: String,
    stderr: String,
    exit_code: i32,
}

impl PythonOutput {
    /// §10: stdout, `[stderr]` block, `[exit_code]` line, joined, stripped, or `[no output]`.
    fn format(&self) -> String {
        let mut parts = Vec::new();
        let stdout = py_rstrip(&self.stdout);
        if !stdout.is_empty() {
            parts.push(stdout.to_string());
        }
        let stderr = py_rstrip(&self.stderr);
        if !stderr.is_empty() {
            parts.push(format!("[stderr]\n{stderr}"));
        }
        if self.exit_code != 0 {
            parts.push(format!("[exit_code] {}", self.exit_code));
        }
        let joined = parts.join("\n");
        match py_strip(&joined) {
            "" => "[no output]".to_string(),
            text => text.to_string(),
        }
    }
}

/// Drains a pipe on a thread, keeping at most `cap` bytes.
struct OutputReader {
    kept: Arc<Mutex<Vec<u8>>>,
    thread: JoinHandle<()>,
}

impl OutputReader {
    fn spawn(mut pipe: impl Read + Send + 'static, cap: usize) -> Self {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&kept);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let mut kept = sink.lock().unwrap_or_else(|p| p.into_inner());
                        let room = cap.saturating_sub(kept.len()).min(n);
                        kept.extend_from_slice(&buf[..room]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        });
        Self { kept, thread }
    }

    /// The text read so far, after waiting for end-of-stream until `deadline` (a process that
    /// escaped the kill may keep the pipe open; its reader is then left behind).
    fn finish(reader: Option<Self>, deadline: Instant) -> String {
        let Some(reader) = reader else {
            return String::new();
        };
        while !reader.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let kept = reader.kept.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&kept).into_owned()
    }
}

/// A private temporary directory, removed on drop.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn create() -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        loop {
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let path = std::env::temp_dir()
                .join(format!("rmas-python-{}-{n}-{nanos}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
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
    /// Searches for `query` and formats the outcome as §10 (errors included).
    fn search(&self, query: &str) -> String;
}

/// §10's result layout: `Query:`, `Results:`, then `[i] title`, `URL: url`, compacted content.
pub fn format_search_results(query: &str, results: &[SearchResult]) -> String {
    if results.is_empty() {
        return "[no search results]".to_string();
    }
    let mut lines = vec![format!("Query: {query}"), "Results:".to_string()];
    for (i, result) in results.iter().take(SEARCH_TOP_K).enumerate() {
        lines.push(format!("[{}] {}", i + 1, result.title));
        lines.push(format!("URL: {}", result.url));
        lines.push(compact_content(&result.content));
    }
    lines.join("\n")
}

/// Whitespace-compacts `content` and cuts it to 320 characters plus `" ..."`.
fn compact_content(content: &str) -> String {
    let compact = content
        .split(py_is_space)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if compact.chars().count() <= SEARCH_CONTENT_CHARS {
        return compact;
    }
    let cut: String = compact.chars().take(SEARCH_CONTENT_CHARS).collect();
    format!("{cut} ...")
}

/// `[search error] Type: msg`.
fn search_error(kind: &str, msg: impl std::fmt::Display) -> String {
    format!("[search error] {kind}: {msg}")
}

/// The release's offline stand-in (no API key).
#[derive(Clone, Copy, Debug, Default)]
pub struct DummySearch;

impl SearchBackend for DummySearch {
    fn search(&self, query: &str) -> String {
        format!(
            "Dummy search result for query: {query}\nExternal search is disabled in the release runner."
        )
    }
}

/// HTTP method of an [`HttpSearch`] endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HttpMethod {
    /// JSON body `{"query", "max_results", "search_depth"}` (Tavily-compatible).
    #[default]
    Post,
    /// Query string `?query=…&max_results=…`.
    Get,
}

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
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build();
        Self {
            url: url.into(),
            method,
            api_key,
            agent,
        }
    }

    fn fetch(&self, query: &str) -> std::result::Result<Vec<SearchResult>, String> {
        let request = match self.method {
            HttpMethod::Post => self.agent.post(&self.url),
            HttpMethod::Get => self
                .agent
                .get(&self.url)
                .query("query", query)
                .query("max_results", &SEARCH_TOP_K.to_string()),
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
            ureq::Error::Status(code, r) => {
                search_error("HTTPError", format!("{code} {}", r.status_text()))
            }
            ureq::Error::Transport(t) => search_error("ConnectionError", t),
        })?;
        let json: serde_json::Value = response
            .into_json()
            .map_err(|e| search_error("ValueError", e))?;
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
    let items = json
        .get("results")
        .unwrap_or(json)
        .as_array()
        .cloned()
        .unwrap_or_default();
    let field = |item: &serde_json::Value, keys: &[&str]| {
        keys.iter()
            .find_map(|k| item.get(*k).and_then(serde_json::Value::as_str))
            .unwrap_or_default()
            .to_string()
    };
    items
        .iter()
        .map(|item| SearchResult {
            title: field(item, &["title"]),
            url: field(item, &["url", "link"]),
            content: field(item, &["content", "snippet"]),
        })
        .collect()
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
            let text = std::fs::read_to_string(&file)
                .map_err(|e| RmasError::io("search corpus file", &file, e))?;
            corpus.add_document(
                &document_title(&file, &text),
                &format!("file://{}", file.display()),
                &text,
            );
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
            let result = SearchResult {
                title: title.into(),
                url: url.into(),
                content: paragraph.into(),
            };
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
                let hits: Vec<usize> = query_terms
                    .iter()
                    .filter_map(|t| p.terms.get(t).copied())
                    .collect();
                (!hits.is_empty()).then(|| (hits.len(), hits.iter().sum(), i))
            })
            .collect();
        scored.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        scored
            .iter()
            .take(SEARCH_TOP_K)
            .map(|&(_, _, i)| self.passages[i].result.clone())
            .collect()
    }
}

impl SearchBackend for CorpusSearch {
    fn search(&self, query: &str) -> String {
        format_search_results(query, &self.rank(query))
    }
}

/// Lower-cased alphanumeric words.
fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The first Markdown heading, else the file stem.
fn document_title(path: &Path, text: &str) -> String {
    text.lines()
        .find_map(|l| {
            l.strip_prefix('#')
                .map(|h| h.trim_start_matches('#').trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
}

fn collect_text_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| RmasError::io("search corpus directory", dir, e))?;
    for entry in entries {
        let path = entry
            .map_err(|e| RmasError::io("search corpus directory", dir, e))?
            .path();
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
    if let Some(url) = var("RMAS_SEARCH_URL") {
        let method = match var("RMAS_SEARCH_METHOD") {
            Some(m) if m.eq_ignore_ascii_case("get") => HttpMethod::Get,
            _ => HttpMethod::Post,
        };
        return Ok(Box::new(HttpSearch::new(
            url,
            method,
            var("RMAS_SEARCH_API_KEY"),
        )));
    }
    if let Some(dir) = var("RMAS_SEARCH_CORPUS") {
        return Ok(Box::new(CorpusSearch::load(Path::new(&dir))?));
    }
    Ok(Box::new(DummySearch))
}

/// The tools of the deliberation toolcaller.
pub struct ToolBox {
    /// The python tool.
    pub python: PythonTool,
    /// The search backend.
    pub search: Box<dyn SearchBackend>,
}

impl ToolBox {
    /// Tools configured from the environment: interpreter `RMAS_PYTHON` (default `python3`) and the
    /// search backend of [`search_from_vars`].
    pub fn from_env() -> Result<Self> {
        let var = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
        let mut config = PythonConfig::default();
        if let Some(interpreter) = var("RMAS_PYTHON") {
            config.interpreter = interpreter.into();
        }
        Ok(Self {
            python: PythonTool::new(config),
            search: search_from_vars(var)?,
        })
    }

    /// Runs a call and returns the sanitized result text.
    pub fn run(&self, call: &ToolCall) -> String {
        let raw = match call.kind {
            ToolKind::Python => self.python.run(&call.body),
            ToolKind::Search => self.search.search(&call.body),
        };
        sanitize_tool_result(&raw)
    }
}
