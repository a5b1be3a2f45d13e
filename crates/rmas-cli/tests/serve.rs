//! `rmas serve` as a real process on 127.0.0.1 serving the demo system: the official OpenAI python
//! SDK for plain and streamed completions (equal to each other and to `rmas run --demo`), raw HTTP
//! for every error, a bounded load test, cancellation, the time limit and a graceful SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;

const QUESTION: &str = "What is 2+3?";

/// A running `rmas serve --demo`, killed on drop.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rmas"))
            .args(["serve", "--demo", "--backend", "cpu", "--port", "0"])
            .args(extra)
            .env("NO_COLOR", "1")
            .env_remove("RMAS_API_KEY")
            .stderr(Stdio::piped())
            .spawn()
            .expect("rmas serve starts");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let address = loop {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "rmas serve exited before listening");
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || for _ in stderr.lines() {});
        Self { child, address }
    }

    /// A raw HTTP/1.1 request; returns the status, the headers (lower-case names) and the body.
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, String) {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        // A hung server fails the test instead of hanging it.
        stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.address,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let mut lines = head.lines();
        let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        (status, headers, body.to_owned())
    }

    /// POST /v1/chat/completions with a JSON body; the status and the parsed JSON.
    fn chat(&self, body: &Value) -> (u16, Value) {
        let (status, _, text) = self.request(
            "POST",
            "/v1/chat/completions",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        );
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
    }

    /// Sends a streaming request and reads its events up to the first stage (the run is then with
    /// the engine); the rest of the stream is left to read.
    fn stream_until_first_stage(&self, body: &Value) -> BufReader<TcpStream> {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        let body = body.to_string();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(format!("{head}{body}").as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while !line.starts_with(": rmas.stage") {
            line.clear();
            assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended early");
        }
        reader
    }

    /// Waits until the server counted a cancelled run.
    fn wait_for_a_cancelled_run(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.metric("rmas_cancelled_total") < 1.0 {
            assert!(Instant::now() < deadline, "the run was not cancelled");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, _, text) = self.request("GET", "/metrics", &[], b"");
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn question(q: &str) -> Value {
    json!({"model": "demo", "messages": [{"role": "user", "content": q}], "temperature": 0})
}

/// `rmas run --demo` on `q`: its stdout without the final newline.
fn rmas_run_answer(q: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rmas"))
        .args(["run", "--demo", "--backend", "cpu", "--greedy", "--question", q])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().strip_suffix('\n').unwrap().to_owned()
}

#[test]
fn the_openai_sdk_gets_rmas_runs_answer_plain_and_streamed() {
    let server = Server::start(&["--api-key", "sk-test"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/serve/openai_client.py");
    let out = Command::new(common::venv_python(&["openai>=1.40,<4"]))
        .args([script, &format!("http://{}/v1", server.address), "sk-test", QUESTION])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = rmas_run_answer(QUESTION);
    assert_eq!(got["models"], json!(["demo"]));
    assert_eq!(got["plain"], expected.as_str(), "a greedy completion is `rmas run --greedy`'s answer");
    assert_eq!(got["streamed"], expected.as_str(), "the streamed text is the plain answer");
    assert!(got["stream_pieces"].as_u64().unwrap() > 1, "streamed in pieces: {got}");
    let ids = got["rmas"]["token_ids"].as_array().unwrap().len() as u64;
    assert_eq!(got["plain_usage"]["completion_tokens"].as_u64(), Some(ids));
    assert_eq!(got["plain_usage"], got["stream_usage"]);
    assert_eq!(got["rmas"]["ignored_messages"], 1, "the system message is not part of RecursiveMAS prompts");
    assert_eq!(got["plain_finish"], got["stream_finish"]);
}

#[test]
fn errors_are_openai_shaped_with_their_status() {
    let server = Server::start(&["--api-key", "sk-test", "--max-body-bytes", "4096"]);
    let auth = ("Authorization", "Bearer sk-test");
    let json_type = ("Content-Type", "application/json");
    let ok_body = question(QUESTION).to_string();
    let big = format!(r#"{{"messages": [{{"role": "user", "content": "{}"}}]}}"#, "x".repeat(8192));
    let cases: Vec<(&str, Vec<(&str, &str)>, String, u16, &str)> = vec![
        ("no key", vec![json_type], ok_body.clone(), 401, "invalid_api_key"),
        ("wrong key", vec![json_type, ("Authorization", "Bearer nope")], ok_body.clone(), 401, "invalid_api_key"),
        ("malformed JSON", vec![json_type, auth], "{\"messages\": [".into(), 400, "invalid_json"),
        ("no messages", vec![json_type, auth], "{\"model\": \"demo\"}".into(), 400, "missing_required_parameter"),
        (
            "unknown model",
            vec![json_type, auth],
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "q"}]}).to_string(),
            404,
            "model_not_found",
        ),
        (
            "bad temperature",
            vec![json_type, auth],
            json!({"messages": [{"role": "user", "content": "q"}], "temperature": -1}).to_string(),
            422,
            "invalid_value",
        ),
        (
            "bad max_tokens",
            vec![json_type, auth],
            json!({"messages": [{"role": "user", "content": "q"}], "max_tokens": "many"}).to_string(),
            422,
            "invalid_value",
        ),
        (
            "tools",
            vec![json_type, auth],
            json!({"messages": [{"role": "user", "content": "q"}], "tools": [{"type": "function"}]}).to_string(),
            422,
            "invalid_value",
        ),
        ("too large", vec![json_type, auth], big, 413, "request_too_large"),
    ];
    for (what, headers, body, status, code) in cases {
        let (got, _, text) = server.request("POST", "/v1/chat/completions", &headers, body.as_bytes());
        let error: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
        assert_eq!((got, error["error"]["code"].as_str()), (status, Some(code)), "{what}: {text}");
        assert!(error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {text}");
        assert!(error["error"]["type"].is_string(), "{what}: {text}");
    }
    let (status, _, text) = server.request("GET", "/v1/nowhere", &[auth], b"");
    assert_eq!(status, 404, "{text}");
    assert_eq!(server.request("GET", "/v1/models", &[], b"").0, 401);
    assert_eq!(server.request("GET", "/health", &[], b"").0, 200, "health needs no key");
    let (status, _, text) = server.request("POST", "/v1/chat/completions", &[json_type, auth], ok_body.as_bytes());
    assert_eq!(status, 200, "{text}");
    assert_eq!(server.metric("rmas_requests_total{status=\"401\"}"), 2.0);
    assert_eq!(server.metric("rmas_requests_total{status=\"422\"}"), 3.0);
}

#[test]
fn a_bounded_load_is_answered_or_refused_never_lost() {
    let server = Server::start(&["--max-queue", "4"]);
    let questions: Vec<String> = (0..4).map(|i| format!("What is {i} + {i}?")).collect();
    let expected: Vec<Value> =
        questions.iter().map(|q| server.chat(&question(q)).1["choices"][0]["message"]["content"].clone()).collect();
    let (clients, per_client) = (8, 8);
    let started = Instant::now();
    let results: Vec<(usize, u16, Value, Option<String>, f64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (server, questions) = (&server, &questions);
                scope.spawn(move || {
                    (0..per_client)
                        .map(|i| {
                            let q = (c + i) % questions.len();
                            let sent = Instant::now();
                            let (status, headers, text) = server.request(
                                "POST",
                                "/v1/chat/completions",
                                &[("Content-Type", "application/json")],
                                question(&questions[q]).to_string().as_bytes(),
                            );
                            let retry_after = headers.iter().find(|(n, _)| n == "retry-after").map(|(_, v)| v.clone());
                            (q, status, serde_json::from_str(&text).unwrap(), retry_after, sent.elapsed().as_secs_f64())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(results.len(), clients * per_client);
    let mut ids = std::collections::BTreeSet::new();
    let mut latencies = Vec::new();
    let mut refused = 0;
    for (q, status, body, retry_after, seconds) in &results {
        match status {
            200 => {
                assert_eq!(body["choices"][0]["message"]["content"], expected[*q], "question {q}");
                assert!(ids.insert(body["id"].as_str().unwrap().to_owned()), "duplicated response {}", body["id"]);
                latencies.push(*seconds);
            }
            429 => {
                assert_eq!(body["error"]["code"], "queue_full");
                assert!(retry_after.as_deref().and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s >= 1));
                refused += 1;
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    println!(
        "load: {} requests from {clients} clients in {elapsed:.2} s: {} answered, {refused} refused (429); {:.1} requests/s; p50 {:.0} ms, p99 {:.0} ms",
        results.len(),
        latencies.len(),
        latencies.len() as f64 / elapsed,
        pct(0.5) * 1e3,
        pct(0.99) * 1e3
    );
    assert_eq!(server.request("GET", "/health", &[], b"").0, 200);
    assert_eq!(server.metric("rmas_requests_total{status=\"200\"}"), (latencies.len() + questions.len()) as f64);
    assert_eq!(server.metric("rmas_requests_total{status=\"429\"}"), refused as f64);
    assert_eq!(server.metric("rmas_queue_depth"), 0.0);
    // Concurrent requests ran together (`--batch-size` 8), each with the answer it gets alone.
    let (calls, sequences) = (server.metric("rmas_packed_calls_total"), server.metric("rmas_packed_sequences_total"));
    println!("packed: {sequences} request calls in {calls} model calls ({:.2} per call)", sequences / calls);
    assert!(sequences > calls, "{sequences} request calls in {calls} packed calls");
}

/// A request that runs for a long time on the demo system (many rounds of long rollouts).
fn long_request(stream: bool) -> Value {
    json!({"messages": [{"role": "user", "content": QUESTION}], "rounds": 16, "latent_steps": 1024, "stream": stream})
}

#[test]
fn a_client_that_leaves_cancels_its_run() {
    let server = Server::start(&[]);
    // Hang up once the run is with the engine.
    drop(server.stream_until_first_stage(&long_request(true)));
    server.wait_for_a_cancelled_run();
    let (status, body) = server.chat(&question(QUESTION));
    assert_eq!(
        (status, body["choices"][0]["message"]["content"].as_str()),
        (200, Some(rmas_run_answer(QUESTION).as_str()))
    );
}

#[test]
fn the_time_limit_answers_504_and_stops_the_run() {
    let server = Server::start(&["--timeout-s", "1"]);
    let (status, body) = server.chat(&long_request(false));
    assert_eq!((status, body["error"]["code"].as_str()), (504, Some("timeout")), "{body}");
    server.wait_for_a_cancelled_run();
}

#[test]
fn sigterm_finishes_the_requests_in_progress() {
    let mut server = Server::start(&[]);
    let body =
        json!({"messages": [{"role": "user", "content": QUESTION}], "rounds": 4, "latent_steps": 32, "stream": true});
    let mut reader = server.stream_until_first_stage(&body);
    // The run is with the engine: stop the server now; it must still answer this request.
    let killed = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("\"finish_reason\":\"") && rest.contains("data: [DONE]"), "{rest}");
    assert!(!rest.contains("\"error\""), "{rest}");
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "rmas serve exits cleanly after SIGTERM: {exit}");
}
