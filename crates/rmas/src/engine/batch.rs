//! Many questions through one system at once (docs/batching.md): each question is its own [`Run`],
//! their model calls packed by a [`Batch`]; how many run together is fitted to memory first.

use std::ops::ControlFlow;

use rmas_models::RmasBackend;
use rmas_models::batch::{Batch, Sequence};
use web_time::Instant;

use super::events::{Event, RunResult};
use super::loaded::LoadedSystem;
use super::run::Run;
use crate::error::{Result, RmasError};
use crate::options::RunOptions;
use crate::tools::ToolBox;

/// Prompt rows of a stage besides the question's: system prompt, template and instructions, with
/// room for the longest released prompt (the code and deliberation instructions).
const PROMPT_OVERHEAD_ROWS: usize = 1024;
/// Share of the free memory a batch's caches may take (the rest: activations, allocator slack).
const MEMORY_SHARE: f64 = 0.8;

/// How many questions run together, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchPlan {
    /// Questions in flight at once.
    pub size: usize,
    /// Estimated cache bytes of one question (its largest stage).
    pub per_question_bytes: u64,
    /// Free device memory, where the backend knows it.
    pub available_bytes: Option<u64>,
    /// Why `size` is below what was asked, if it is.
    pub note: Option<String>,
}

impl BatchPlan {
    /// Up to `wanted` questions at once, as many as fit: each holds one stage's cache at a time, of
    /// at most its prompt (question bytes bound its tokens, plus [`PROMPT_OVERHEAD_ROWS`] and the
    /// latent messages) and its latent steps or new tokens, on the agent whose cache is largest;
    /// two on the final agent where its discarded text and its rollout continue one prompt run.
    /// Fails, naming the estimate and the limit, when not even one question fits. Systems that load
    /// each agent per stage (`--offload`) run one question at a time: every question would hold
    /// its own copy of the agent.
    pub fn fit<B: RmasBackend>(
        system: &LoadedSystem<B>,
        opts: &RunOptions,
        longest_question_bytes: usize,
        wanted: usize,
    ) -> Result<Self> {
        let wanted = wanted.max(1);
        let messages = opts.latent_steps.saturating_mul(system.style.roles().len());
        let prompt = longest_question_bytes.saturating_add(PROMPT_OVERHEAD_ROWS).saturating_add(messages);
        let capacity = prompt.saturating_add(opts.latent_steps.max(opts.max_new_tokens));
        let mut agents = system.agents().peekable();
        if agents.peek().is_none() {
            let note = (wanted > 1).then(|| "agents load per stage (--offload): one question at a time".to_owned());
            return Ok(Self { size: 1, per_question_bytes: 0, available_bytes: None, note });
        }
        let spec = system.style.spec();
        let shares_prompt = opts.final_text_before_last_round(system.style);
        let (mut per_question, mut available) = (0u64, None::<u64>);
        for agent in agents {
            let held = if shares_prompt && agent.role == spec.final_role() { 2 } else { 1 };
            per_question = per_question.max(agent.model.cache_bytes(capacity).saturating_mul(held));
            available = B::available_bytes(agent.model.device()).or(available);
        }
        let Some(free) = available else {
            return Ok(Self { size: wanted, per_question_bytes: per_question, available_bytes: None, note: None });
        };
        let budget = (free as f64 * MEMORY_SHARE) as u64;
        let fits = budget.checked_div(per_question.max(1)).unwrap_or(u64::MAX);
        if fits == 0 {
            return Err(RmasError::InvalidOption {
                option: "batch-size",
                msg: format!(
                    "one question's cache needs about {} MiB ({capacity} positions on the largest agent), but only {} MiB of the {} MiB free may hold caches; lower --max-new-tokens or use a smaller system",
                    per_question >> 20,
                    budget >> 20,
                    free >> 20
                ),
            });
        }
        let size = wanted.min(usize::try_from(fits).unwrap_or(usize::MAX));
        let note = (size < wanted).then(|| {
            format!(
                "batch size {wanted} lowered to {size}: a question's cache needs about {} MiB, {} MiB of free memory may hold caches",
                per_question >> 20,
                budget >> 20
            )
        });
        Ok(Self { size, per_question_bytes: per_question, available_bytes: Some(free), note })
    }
}

/// One question's outcome: its result and the wall time from its start to its end (in a batch,
/// shared with the questions beside it).
pub type QuestionOutcome = (Result<RunResult>, f64);

/// Runs `questions` (each with its options) through `system`, `width` at a time with their model
/// calls packed (continuous batching: a finished question's place goes to the next), handing each
/// outcome to `done` with the question's index as it finishes. Each question's result is the one
/// it gets alone. `done` breaking stops the runs and returns its value.
pub fn run_questions<B: RmasBackend, E>(
    system: &LoadedSystem<B>,
    tools: Option<&ToolBox>,
    width: usize,
    questions: impl IntoIterator<Item = (String, RunOptions)>,
    done: impl FnMut(usize, QuestionOutcome) -> ControlFlow<E>,
) -> ControlFlow<E> {
    let batch = Batch::new();
    let batch = &batch;
    let sequences = questions.into_iter().map(|(question, opts)| {
        Box::pin(async move {
            let started = Instant::now();
            let mut quiet = |_: Event<'_, B>| {};
            let result = Run::new(system, &opts, &question, tools, &mut quiet).in_batch(batch).execute().await;
            (result, started.elapsed().as_secs_f64() * 1e3)
        }) as Sequence<'_, QuestionOutcome>
    });
    batch.run_queue(width, sequences, done)
}
