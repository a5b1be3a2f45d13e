//! `rmas serve`: one RecursiveMAS system behind an OpenAI-compatible HTTP API (docs/serve.md).
//!
//! The system loads once; HTTP runs on a tokio runtime of its own threads while the calling thread
//! runs the engine ([`worker`]): up to `--batch-size` questions at once, their model calls packed,
//! from a bounded queue, with the same `Run` and options as `rmas run`.

mod api;
mod metrics;
mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Local;
use rmas_models::RmasBackend;
use rmas_text::Task;
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use self::api::{ApiError, ChatRequest};
use self::metrics::Metrics;
use self::worker::{Finished, Job as EngineJob, RunFailure, Update};
use crate::backend::{DeviceArgs, Job, Target, dispatch};
use crate::run::SystemArgs;
use crate::sandbox::{ToolArgs, toolbox};

/// Serve a RecursiveMAS system over an OpenAI-compatible HTTP API.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    system: SystemArgs,
    /// Address to listen on (loopback by default; anything else exposes the server).
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on /v1/ routes.
    #[arg(long, env = "RMAS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Requests that run together, their model calls packed into one forward per step (each answer
    /// the one it gets alone; docs/batching.md); lowered to fit free device memory.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    batch_size: u64,
    /// Requests that may wait for the engine beside those running; more are refused with 429 and
    /// Retry-After.
    #[arg(long, default_value_t = 16)]
    max_queue: usize,
    /// Seconds a request may take, waiting included; then it is cancelled (504).
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
    /// Largest request body in bytes (413 past it).
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    #[command(flatten)]
    tools: ToolArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn main(args: Args) -> Result<()> {
    dispatch(&args.device.clone(), args)
}

/// Question bytes the batch is sized for (`BatchPlan::fit`); requests' questions are rarely longer,
/// and a longer one only grows its own cache.
const SIZED_QUESTION_BYTES: usize = 4096;

/// What every request handler shares.
struct AppState {
    /// The served system's id (`model` in requests and responses).
    model: String,
    /// The link set the system loaded.
    task: Task,
    system: SystemArgs,
    api_key: Option<String>,
    timeout: Duration,
    jobs: SyncSender<EngineJob>,
    metrics: Arc<Metrics>,
    created: u64,
}

impl Job for Args {
    fn run<B: RmasBackend>(self, target: Target<B>) -> Result<()> {
        let device = target.device;
        let style = self.system.style();
        let tools = toolbox(style, &self.tools.python(style.spec().tool_loop)?)?;
        let dataset = rmas_text::Dataset::Math500;
        let task = self.system.task.unwrap_or(dataset.task());
        let system = self.system.load::<B>(dataset, &device, target.dtype)?;
        let opts = self.system.options(dataset, Local::now().date_naive(), &Default::default());
        let plan = rmas::engine::BatchPlan::fit(&system, &opts, SIZED_QUESTION_BYTES, self.batch_size as usize)?;
        if let Some(note) = &plan.note {
            eprintln!("rmas serve: {note}");
        }
        let model = match &self.system.system {
            Some(path) => path.file_stem().map_or_else(|| self.system.label(), |s| s.to_string_lossy().into_owned()),
            None => self.system.label(),
        };
        let listener = std::net::TcpListener::bind(SocketAddr::new(self.host, self.port))
            .with_context(|| format!("cannot listen on {}:{}", self.host, self.port))?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let (jobs, queue) = std::sync::mpsc::sync_channel(self.max_queue);
        let metrics = Arc::new(Metrics::default());
        let state = Arc::new(AppState {
            model: model.clone(),
            task,
            system: self.system.clone(),
            api_key: self.api_key.clone(),
            timeout: Duration::from_secs(self.timeout_s),
            jobs,
            metrics: Arc::clone(&metrics),
            created: unix_now(),
        });
        let app = router(state, self.max_body_bytes);
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let server = std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await
            })
        });
        eprintln!("rmas serve: `{model}` listening on http://{address} (OpenAI API at http://{address}/v1)");
        // The engine runs here until the server stops and its last request is answered.
        worker::serve_jobs(&system, tools.as_ref(), queue, &metrics, plan.size);
        server.join().map_err(|_| anyhow::anyhow!("the HTTP server thread panicked"))??;
        eprintln!("rmas serve: stopped");
        Ok(())
    }
}

/// The routes, with the API key check on /v1/ and the body size limit.
fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), require_key));
    Router::new()
        .merge(v1)
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// Resolves on SIGTERM or Ctrl-C: the server stops accepting and finishes what it has.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    eprintln!("rmas serve: stopping; finishing the requests in progress");
}

async fn require_key(State(state): State<Arc<AppState>>, headers: HeaderMap, request: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        let given =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            if request.uri().path() == "/v1/chat/completions" {
                state.metrics.request(StatusCode::UNAUTHORIZED.as_u16());
            }
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "a valid `Authorization: Bearer` key is required",
            )
            .into_response();
        }
    }
    next.run(request).await
}

async fn health(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(
        json!({"status": "ok", "model": state.model, "queue_depth": state.metrics.queue_depth.load(Ordering::Relaxed)}),
    )
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": state.model, "object": "model", "created": state.created, "owned_by": "rmas"}]}),
    )
}

async fn chat_completions(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let response = match start(&state, body) {
        Ok((request, updates, cancel)) if request.stream => stream_response(&state, &request, updates, cancel),
        Ok((request, updates, cancel)) => complete(&state, &request, updates, cancel).await,
        Err(e) => e.into_response(),
    };
    state.metrics.request(response.status().as_u16());
    response
}

/// Checks the request and queues its run.
fn start(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<(ChatRequest, UnboundedReceiver<Update>, CancelOnDrop), ApiError> {
    let arrived = Instant::now();
    let body = body.map_err(|e| {
        let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE { "request_too_large" } else { "invalid_body" };
        ApiError::new(e.status(), code, e.body_text())
    })?;
    let body: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    let request = ChatRequest::parse(&body, &state.model, state.task)?;
    let opts = state.system.options(request.dataset, Local::now().date_naive(), &request.overrides);
    let question = rmas::options::dataset_question(request.dataset, &request.question);
    let (updates, receiver) = unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let job = EngineJob { question, opts, updates, cancel: Arc::clone(&cancel), arrived };
    state.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
    match state.jobs.try_send(job) {
        Ok(()) => Ok((request, receiver, CancelOnDrop(cancel))),
        Err(e) => {
            state.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
            let (status, code, message) = match e {
                TrySendError::Full(_) => {
                    (StatusCode::TOO_MANY_REQUESTS, "queue_full", "the server's queue is full; retry later")
                }
                TrySendError::Disconnected(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is stopping")
                }
            };
            let waiting = state.metrics.queue_depth.load(Ordering::Relaxed) as f64 + 1.0;
            let retry_after = (state.metrics.mean_latency().unwrap_or(1.0) * waiting).ceil().max(1.0) as u64;
            Err(ApiError { retry_after: Some(retry_after), ..ApiError::new(status, code, message) })
        }
    }
}

/// Stops the run when the request goes away (client disconnected, response dropped).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The error of a run that ended without an answer (504 when the time limit stopped it).
fn failure(failure: RunFailure, timed_out: bool) -> ApiError {
    match (timed_out, failure.cancelled) {
        (true, _) => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", "the request ran past the server's time limit")
        }
        (false, true) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "cancelled", failure.message),
        (false, false) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "run_failed", failure.message),
    }
}

/// Waits for the next update until the request's deadline; `Err(())` when it passed (the run is
/// then cancelled).
async fn next_update(
    updates: &mut UnboundedReceiver<Update>,
    deadline: tokio::time::Instant,
    cancel: &CancelOnDrop,
) -> Result<Option<Update>, ()> {
    match tokio::time::timeout_at(deadline, updates.recv()).await {
        Ok(update) => Ok(update),
        Err(_) => {
            cancel.0.store(true, Ordering::Relaxed);
            Err(())
        }
    }
}

/// A non-streaming answer: waits for the run's end.
async fn complete(
    state: &AppState,
    request: &ChatRequest,
    mut updates: UnboundedReceiver<Update>,
    cancel: CancelOnDrop,
) -> Response {
    let deadline = tokio::time::Instant::now() + state.timeout;
    loop {
        match next_update(&mut updates, deadline, &cancel).await {
            Ok(Some(Update::Done(Ok(finished)))) => return Json(completion(state, request, &finished)).into_response(),
            Ok(Some(Update::Done(Err(e)))) => return failure(e, false).into_response(),
            Ok(Some(_)) => {}
            Ok(None) => {
                return failure(RunFailure { cancelled: false, message: "the engine stopped".into() }, false)
                    .into_response();
            }
            Err(()) => return failure(RunFailure { cancelled: true, message: String::new() }, true).into_response(),
        }
    }
}

/// `chat.completion`: the answer, usage and the run's stages.
fn completion(state: &AppState, request: &ChatRequest, f: &Finished) -> Value {
    json!({
        "id": completion_id(),
        "object": "chat.completion",
        "created": unix_now(),
        "model": state.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": f.answer},
            "logprobs": null,
            "finish_reason": finish_reason(f),
        }],
        "usage": usage(f),
        "rmas": rmas_summary(request, f),
    })
}

fn finish_reason(f: &Finished) -> &'static str {
    if f.hit_limit { "length" } else { "stop" }
}

fn usage(f: &Finished) -> Value {
    json!({"prompt_tokens": f.prompt_tokens, "completion_tokens": f.completion_tokens, "total_tokens": f.prompt_tokens + f.completion_tokens})
}

fn rmas_summary(request: &ChatRequest, f: &Finished) -> Value {
    json!({"token_ids": f.token_ids, "stages": f.stages, "dataset": request.dataset.key(), "ignored_messages": request.ignored_messages})
}

/// A streamed answer: OpenAI `chat.completion.chunk`s of the answer text, stage progress (SSE
/// comments, or named `rmas.stage` events on request), then `[DONE]`.
fn stream_response(
    state: &AppState,
    request: &ChatRequest,
    updates: UnboundedReceiver<Update>,
    cancel: CancelOnDrop,
) -> Response {
    let chunk = ChunkWriter { id: completion_id(), created: unix_now(), model: state.model.clone() };
    let first = chunk.event(json!({"role": "assistant", "content": ""}), None);
    let stream = SseStream {
        updates,
        cancel,
        deadline: tokio::time::Instant::now() + state.timeout,
        chunk,
        request: request.clone(),
        pending: std::collections::VecDeque::from([first]),
        done: false,
    };
    let events = futures_lite::stream::unfold(stream, |mut s| async move {
        s.next().await.map(|e| (Ok::<_, std::convert::Infallible>(e), s))
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

/// Builds the chunks of one streamed completion.
struct ChunkWriter {
    id: String,
    created: u64,
    model: String,
}

impl ChunkWriter {
    fn event(&self, delta: Value, finish_reason: Option<&str>) -> SseEvent {
        let chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        SseEvent::default().data(chunk.to_string())
    }

    fn usage_event(&self, f: &Finished) -> SseEvent {
        let chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [], "usage": usage(f),
        });
        SseEvent::default().data(chunk.to_string())
    }
}

/// The state of one SSE response.
struct SseStream {
    updates: UnboundedReceiver<Update>,
    /// Dropped with the stream when the client goes away, which stops the run.
    cancel: CancelOnDrop,
    deadline: tokio::time::Instant,
    chunk: ChunkWriter,
    request: ChatRequest,
    pending: std::collections::VecDeque<SseEvent>,
    done: bool,
}

impl SseStream {
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            let update = match next_update(&mut self.updates, self.deadline, &self.cancel).await {
                Ok(Some(update)) => update,
                Ok(None) => Update::Done(Err(RunFailure { cancelled: false, message: "the engine stopped".into() })),
                Err(()) => {
                    self.finish_with_error(failure(RunFailure { cancelled: true, message: String::new() }, true));
                    continue;
                }
            };
            match update {
                Update::Stage(stage) if self.request.named_events => {
                    self.pending.push_back(SseEvent::default().event("rmas.stage").data(stage.to_string()));
                }
                Update::Stage(stage) => {
                    self.pending.push_back(SseEvent::default().comment(format!("rmas.stage {stage}")))
                }
                Update::Delta(text) => self.pending.push_back(self.chunk.event(json!({"content": text}), None)),
                Update::Done(Ok(f)) => {
                    if self.request.named_events {
                        let summary = rmas_summary(&self.request, &f).to_string();
                        self.pending.push_back(SseEvent::default().event("rmas.summary").data(summary));
                    }
                    self.pending.push_back(self.chunk.event(json!({}), Some(finish_reason(&f))));
                    if self.request.include_usage {
                        self.pending.push_back(self.chunk.usage_event(&f));
                    }
                    self.pending.push_back(SseEvent::default().data("[DONE]"));
                    self.done = true;
                }
                Update::Done(Err(e)) => self.finish_with_error(failure(e, false)),
            }
        }
    }

    /// An error mid-stream: OpenAI's `{"error": …}` data line, then `[DONE]`.
    fn finish_with_error(&mut self, error: ApiError) {
        self.pending.push_back(SseEvent::default().data(error.body().to_string()));
        self.pending.push_back(SseEvent::default().data("[DONE]"));
        self.done = true;
    }
}

/// A completion id, unique within this process.
fn completion_id() -> String {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("chatcmpl-rmas-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
