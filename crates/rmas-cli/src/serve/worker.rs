//! The engine side of the server: one thread runs the queued questions through the loaded system,
//! up to `--batch-size` at once with their model calls packed (continuous batching, as
//! `rmas run --questions-file` runs; docs/batching.md), with the same `Run` as `rmas run`, and
//! reports each run's progress to its request.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use rmas::engine::{AnswerStream, Event, LoadedSystem, Run, StageKind};
use rmas::error::RmasError;
use rmas::options::RunOptions;
use rmas::tools::ToolBox;
use rmas_models::RmasBackend;
use rmas_models::batch::{Batch, Sequence};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use super::metrics::Metrics;

/// One question for the engine.
pub struct Job {
    pub question: String,
    pub opts: RunOptions,
    /// Where the run's progress goes; closed when the client left.
    pub updates: UnboundedSender<Update>,
    /// Set to stop the run (client gone, time limit).
    pub cancel: Arc<AtomicBool>,
    /// When the request arrived.
    pub arrived: Instant,
}

/// A run's progress, in order: stages and answer text as they happen, then the end.
#[derive(Debug)]
pub enum Update {
    /// A stage finished (`StageRecord::to_json`).
    Stage(Value),
    /// More answer text.
    Delta(String),
    /// The run ended.
    Done(Result<Finished, RunFailure>),
}

/// A finished run.
#[derive(Debug)]
pub struct Finished {
    pub answer: String,
    pub token_ids: Vec<u32>,
    pub stages: Vec<Value>,
    /// Rows of the final agent's generation input (its prompt tokens and latent message rows).
    pub prompt_tokens: usize,
    /// Tokens the final agent generated for the answer (with the retry's).
    pub completion_tokens: usize,
    /// Whether generation stopped at the token budget rather than at its end of text.
    pub hit_limit: bool,
}

/// Why a run ended without an answer.
#[derive(Debug)]
pub struct RunFailure {
    pub cancelled: bool,
    pub message: String,
}

/// Runs jobs, up to `width` at once, until every sender is gone (the server stopped) and the last
/// run has ended. A job that arrives while others run joins them at their next packed call.
pub fn serve_jobs<B: RmasBackend>(
    system: &LoadedSystem<B>,
    tools: Option<&ToolBox>,
    jobs: Receiver<Job>,
    metrics: &Metrics,
    width: usize,
) {
    let batch = Batch::new();
    let batch = &batch;
    // The next job to start: waited for when nothing runs, else only taken if it is already queued.
    let next = |idle: bool| loop {
        let job = match idle {
            true => jobs.recv().ok()?,
            false => jobs.try_recv().ok()?,
        };
        metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
        if job.cancel.load(Ordering::Relaxed) || job.updates.is_closed() {
            metrics.cancelled();
            continue;
        }
        return Some(Box::pin(run_job(system, tools, job, metrics, batch)) as Sequence<'_, ()>);
    };
    let _ = batch.run_source(width, next, |_, ()| ControlFlow::<()>::Continue(()));
}

async fn run_job<B: RmasBackend>(
    system: &LoadedSystem<B>,
    tools: Option<&ToolBox>,
    job: Job,
    metrics: &Metrics,
    batch: &Batch<B>,
) {
    let mut stream = AnswerStream::new(system.style, job.opts.rounds);
    let final_role = system.style.spec().final_role();
    let (mut prompt_tokens, mut first_token) = (0, None);
    let send = |update: Update| {
        if job.updates.send(update).is_err() {
            // The client went away: stop at the next step.
            job.cancel.store(true, Ordering::Relaxed);
        }
    };
    let mut on_event = |e: Event<'_, B>| {
        if let Some(delta) = stream.push(&e) {
            first_token.get_or_insert_with(|| job.arrived.elapsed());
            send(Update::Delta(delta));
        }
        match e {
            Event::GenerateInput { round, role, input } if round == job.opts.rounds && role == final_role => {
                prompt_tokens = input.dims()[0];
            }
            Event::StageEnd(record) => send(Update::Stage(record.to_json())),
            _ => {}
        }
    };
    let run = Run::new(system, &job.opts, &job.question, tools, &mut on_event).cancelled_by(&job.cancel);
    let result = run.in_batch(batch).execute().await;
    let outcome = match result {
        Ok(result) => {
            if let Some(rest) = stream.finish(&result.answer) {
                first_token.get_or_insert_with(|| job.arrived.elapsed());
                send(Update::Delta(rest));
            }
            let (mut tokens, mut generating) = (0, Duration::ZERO);
            let mut retry_ids = 0;
            for stage in &result.stages {
                if let StageKind::Text { ids } | StageKind::Retry { ids } = &stage.kind {
                    tokens += ids.len();
                    generating += Duration::from_secs_f64(stage.ms / 1e3);
                }
                if let StageKind::Retry { ids } = &stage.kind {
                    retry_ids += ids.len();
                }
            }
            metrics.finished(job.arrived.elapsed(), first_token, tokens, generating);
            Ok(Finished {
                hit_limit: result.token_ids.len() >= job.opts.max_new_tokens,
                completion_tokens: result.token_ids.len() + retry_ids,
                prompt_tokens,
                stages: result.stages.iter().map(|s| s.to_json()).collect(),
                token_ids: result.token_ids,
                answer: result.answer,
            })
        }
        Err(RmasError::Cancelled) => {
            metrics.cancelled();
            Err(RunFailure { cancelled: true, message: "the run was cancelled".into() })
        }
        Err(e) => Err(RunFailure { cancelled: false, message: e.to_string() }),
    };
    metrics.packed(batch.stats());
    let _ = job.updates.send(Update::Done(outcome));
}
