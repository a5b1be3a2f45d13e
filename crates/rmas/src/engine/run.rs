//! One question through a loaded system: the table-driven round loop, latent rollouts with
//! caches, messages through outer links spliced into the receivers' prompts, final generation and
//! answer retry (docs/algorithm.md, "Round loop"; the tool loop is in `tool_loop.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Tensor;
use rmas_models::RmasBackend;
use rmas_models::batch::{Batch, Calls};
use rmas_models::generate::{self, GenerateOptions, Sampler, generate_from, last_row};
use rmas_models::model::Cache;
use rmas_text::answer::answer_retry;
use rmas_text::{PromptContext, Role, Tokenizer};
use web_time::Instant;

use super::events::{Event, RunResult, StageKind, StageRecord};
use super::loaded::{Agent, LoadedSystem};
use crate::error::{Result, RmasError};
use crate::options::RunOptions;
use crate::tools::ToolBox;

/// Runs one question through a system.
pub struct Run<'s, 'e, B: RmasBackend> {
    pub(super) system: &'s LoadedSystem<B>,
    pub(super) opts: &'s RunOptions,
    pub(super) question: &'s str,
    pub(super) sampler: Sampler,
    pub(super) on_event: &'e mut dyn FnMut(Event<'_, B>),
    pub(super) stages: Vec<StageRecord>,
    pub(super) tools: Option<&'s ToolBox>,
    pub(super) cancel: Option<&'s AtomicBool>,
    pub(super) calls: Calls<'s, B>,
}

/// Incoming messages of a prompt, by slot.
pub(super) type Slots<B> = Vec<(&'static str, Tensor<B, 2>)>;

/// A prompt run through an agent: its rows, the cache after them, and the final-norm hidden state
/// of its last row `[1, H]`, from which a generation or a latent rollout continues.
#[derive(Clone)]
pub(super) struct Prefilled<B: RmasBackend> {
    input: Tensor<B, 2>,
    cache: Cache<B>,
    h: Tensor<B, 2>,
}

impl<'s, 'e, B: RmasBackend> Run<'s, 'e, B> {
    /// Prepares a run; the sampler is seeded once here, before the first rollout.
    pub fn new(
        system: &'s LoadedSystem<B>,
        opts: &'s RunOptions,
        question: &'s str,
        tools: Option<&'s ToolBox>,
        on_event: &'e mut dyn FnMut(Event<'_, B>),
    ) -> Self {
        Self {
            system,
            opts,
            question,
            sampler: Sampler::new(opts.sampling, opts.seed),
            on_event,
            stages: Vec::new(),
            tools,
            cancel: None,
            calls: Calls::Alone,
        }
    }

    /// Makes the run's model calls in `batch`, packed with the other runs driven by
    /// [`Batch::run_all`]; the result is the same as alone (docs/batching.md).
    pub fn in_batch(mut self, batch: &'s Batch<B>) -> Self {
        self.calls = Calls::Packed(batch);
        self
    }

    /// Stops the run with [`RmasError::Cancelled`] once `flag` is set (checked before each stage,
    /// latent step and token).
    pub fn cancelled_by(mut self, flag: &'s AtomicBool) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// [`RmasError::Cancelled`] once the run was asked to stop.
    fn check_cancelled(&self) -> Result<()> {
        match self.cancel.is_some_and(|flag| flag.load(Ordering::Relaxed)) {
            true => Err(RmasError::Cancelled),
            false => Ok(()),
        }
    }

    /// Runs every round of the style's loop and the final generation (natively: `rmas_models::block_on(run.execute())`).
    ///
    /// One loop for every style, read from its table (docs/algorithm.md, "Round loop"): in each
    /// round every agent in turn takes the messages sent to it, rolls out its latents and sends
    /// them through each of its edges; an edge to an agent that already ran delivers in the next
    /// round (feedback). In the last round the final agent answers instead.
    pub async fn execute(mut self) -> Result<RunResult> {
        let rounds = self.opts.rounds;
        if rounds == 0 {
            return Err(RmasError::InvalidOption { option: "rounds", msg: "must be at least 1 (got 0)".into() });
        }
        let spec = self.system.style.spec();
        let final_role = spec.final_role();
        let mut inbox: BTreeMap<Role, Slots<B>> = BTreeMap::new();
        for round in 1..=rounds {
            for &role in spec.roles {
                self.check_cancelled()?;
                let incoming = inbox.remove(&role).unwrap_or_default();
                if role == final_role {
                    if round == rounds {
                        let (answer, token_ids) = self.answer(role, round, incoming).await?;
                        return Ok(RunResult { answer, token_ids, stages: self.stages });
                    }
                }
                // The final agent's text of an earlier round and its rollout start from the same
                // prompt: it runs once, and the rollout continues from a copy of its cache.
                let shared = if role == final_role && self.opts.final_text_before_last_round(self.system.style) {
                    self.generate_text(role, round, incoming.clone(), self.opts.latent_steps).await?.2
                } else {
                    None
                };
                let latents = self.rollout(role, round, incoming, shared).await?;
                for edge in spec.edges_from(role) {
                    let message = self.message(role, round, edge.key, &latents)?;
                    inbox.entry(edge.target).or_default().push((edge.slot, message));
                }
            }
        }
        unreachable!("the final agent answers in the last round")
    }

    fn message(&mut self, from: Role, round: usize, key: &str, latents: &Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let message = self.system.outer(key)?.forward(latents.clone());
        (self.on_event)(Event::Message { round, from, key, message: &message });
        Ok(message)
    }

    /// The prompt of `role` in `round`, embedded, with the messages spliced into its slots: `[L, H]`.
    pub(super) fn prompt_rows(&self, agent: &Agent<B>, round: usize, mut slots: Slots<B>) -> Result<Tensor<B, 2>> {
        let ctx = PromptContext::new(self.question, self.opts.dataset);
        let ctx = match self.opts.fn_name.as_deref() {
            Some(name) => ctx.with_fn_name(name),
            None => ctx,
        };
        let spec = self.system.style.spec();
        let prompt = spec.user_prompt(agent.role, round, &ctx)?;
        let rendered = agent.tokenizer.render_prompt(spec.system_prompt, &prompt.text, &self.opts.chat)?;
        let pieces = agent.tokenizer.encode_segments(&rendered, &prompt.slots)?;
        // Token ids with placeholder rows (id 0) where messages go, and where each message starts.
        let mut ids = Vec::new();
        let mut spliced = Vec::with_capacity(prompt.slots.len());
        for (i, piece) in pieces.iter().enumerate() {
            if i > 0 {
                let slot = prompt.slots[i - 1];
                let at = slots.iter().position(|(s, _)| *s == slot).ok_or_else(|| RmasError::InvalidSystem {
                    system: self.system.style.to_string(),
                    msg: format!(
                        "the {} prompt of round {round} has slot {slot} but no message was sent to it",
                        agent.role
                    ),
                })?;
                let message = slots.swap_remove(at).1;
                let start = ids.len();
                ids.resize(start + message.dims()[0], 0);
                spliced.push((start, message));
            }
            ids.extend_from_slice(piece);
        }
        if let Some((slot, _)) = slots.first() {
            return Err(RmasError::InvalidSystem {
                system: self.system.style.to_string(),
                msg: format!(
                    "a message was sent to slot {slot}, which the {} prompt of round {round} lacks",
                    agent.role
                ),
            });
        }
        // One embedding lookup for the whole prompt; each message is then written into its rows.
        let mut rows = agent.model.embed(&ids)?; // [L, H]
        let width = rows.dims()[1];
        for (start, message) in spliced {
            let n = message.dims()[0];
            if n > 0 {
                rows = rows.slice_assign([start..start + n, 0..width], message.cast(agent.model.dtype()));
            }
        }
        Ok(rows)
    }

    /// Latent rollout of T steps with a KV/recurrent cache; returns the latents `R_in(h_1..h_T)` `[T, H]`.
    /// One scalar is read back at the end: NaN or infinite latents fail here, naming the agent
    /// and round, instead of poisoning every later agent.
    /// With `shared`, the prompt already ran (for the agent's text) and the rollout continues from it.
    async fn rollout(
        &mut self,
        role: Role,
        round: usize,
        slots: Slots<B>,
        shared: Option<Prefilled<B>>,
    ) -> Result<Tensor<B, 2>> {
        let started = Instant::now();
        (self.on_event)(Event::StageStart { round, role, text: false });
        let steps = self.opts.latent_steps;
        let agent = self.system.agent(role)?;
        let model = &agent.model;
        let latents = if steps == 0 {
            Tensor::zeros([0, model.config().hidden_size], (model.device(), model.dtype()))
        } else {
            let Prefilled { input, mut cache, mut h } = match shared {
                Some(prefilled) => prefilled,
                None => {
                    let input = self.prompt_rows(&agent, round, slots)?;
                    self.prefill(&agent, round, input, steps).await?
                }
            };
            let (mut hs, mut zs) = (Vec::with_capacity(steps), Vec::with_capacity(steps));
            for step in 0..steps {
                self.check_cancelled()?;
                let e = agent.inner.forward(h.clone()).cast(model.dtype());
                hs.push(h.clone());
                zs.push(e.clone());
                (self.on_event)(Event::LatentStep { round, role, step: step + 1 });
                if step + 1 < steps {
                    h = last_row(self.calls.forward(model, e, &mut cache).await?);
                }
            }
            let (hidden, latents) = (Tensor::cat(hs, 0), Tensor::cat(zs, 0));
            rmas_models::generate::check_finite(latents.clone(), "latents")
                .await
                .map_err(|e| self.stage_error(e, role, round))?;
            (self.on_event)(Event::Rollout { round, role, input: &input, hidden: &hidden, latents: &latents });
            latents
        };
        self.finish(round, role, StageKind::Latent { steps }, started);
        Ok(latents)
    }

    /// The final agent's answer: generation (or the tool loop), then the optional answer retry.
    async fn answer(&mut self, role: Role, round: usize, slots: Slots<B>) -> Result<(String, Vec<u32>)> {
        let (text, ids) = if self.system.style.spec().tool_loop {
            self.tool_loop(role, round, slots).await?
        } else {
            let (text, ids, _) = self.generate_text(role, round, slots, 0).await?;
            (text, ids)
        };
        if !self.opts.answer_retry {
            return Ok((text, ids));
        }
        let Some(retry) = answer_retry(self.opts.dataset.mas_task(), &text) else { return Ok((text, ids)) };
        let started = Instant::now();
        (self.on_event)(Event::StageStart { round, role, text: true });
        let prompt = retry.prompt(&text);
        let agent = self.system.agent(role)?;
        let input = agent.model.embed(&agent.tokenizer.encode(&prompt, true)?)?;
        let cont = self.decode(&agent, round, input, retry.max_new_tokens, |_, _| false).await?;
        let answer = format!("{prompt}{}", agent.tokenizer.decode(&cont, true)?);
        self.finish(round, role, StageKind::Retry { ids: cont }, started);
        Ok((answer, ids))
    }

    /// Text generation of `role` from its prompt with messages; returns the stripped text, the ids
    /// and, when `then_steps` latent steps follow from the same prompt, the prompt run (its cache
    /// with room for them) for [`Self::rollout`].
    async fn generate_text(
        &mut self,
        role: Role,
        round: usize,
        slots: Slots<B>,
        then_steps: usize,
    ) -> Result<(String, Vec<u32>, Option<Prefilled<B>>)> {
        let started = Instant::now();
        (self.on_event)(Event::StageStart { round, role, text: true });
        let agent = self.system.agent(role)?;
        let input = self.prompt_rows(&agent, round, slots)?;
        (self.on_event)(Event::GenerateInput { round, role, input: &input });
        let max_new_tokens = self.opts.max_new_tokens;
        let (ids, shared) = if max_new_tokens == 0 {
            (Vec::new(), None)
        } else {
            // One cache with room for both continuations; kept for the rollout only when it follows.
            let prefilled = self.prefill(&agent, round, input, max_new_tokens.max(then_steps)).await?;
            let shared = (then_steps > 0).then(|| prefilled.clone());
            (self.decode_from(&agent, round, prefilled, max_new_tokens, |_, _| false).await?, shared)
        };
        let text = agent.tokenizer.decode_generated(&ids)?;
        self.finish(round, role, StageKind::Text { ids: ids.clone() }, started);
        Ok((text, ids, shared))
    }

    /// Runs `input` through `agent` into a new cache with room for `room` more positions.
    async fn prefill(&self, agent: &Agent<B>, round: usize, input: Tensor<B, 2>, room: usize) -> Result<Prefilled<B>> {
        let mut cache = agent.model.new_cache(input.dims()[0], room)?;
        let h = generate::prefill(self.calls, &agent.model, input.clone(), &mut cache)
            .await
            .map_err(|e| self.stage_error(e, agent.role, round))?;
        Ok(Prefilled { input, cache, h })
    }

    /// Generates from input rows, stopping on the tokenizer's eos or when `stop` says so (docs/algorithm.md, "Text generation").
    pub(super) async fn decode(
        &mut self,
        agent: &Agent<B>,
        round: usize,
        input: Tensor<B, 2>,
        max_new_tokens: usize,
        stop: impl FnMut(&Tokenizer, &[u32]) -> bool,
    ) -> Result<Vec<u32>> {
        if max_new_tokens == 0 {
            return Ok(Vec::new());
        }
        let prefilled = self.prefill(agent, round, input, max_new_tokens).await?;
        self.decode_from(agent, round, prefilled, max_new_tokens, stop).await
    }

    /// [`Self::decode`] after a prompt already run.
    async fn decode_from(
        &mut self,
        agent: &Agent<B>,
        round: usize,
        Prefilled { mut cache, h, .. }: Prefilled<B>,
        max_new_tokens: usize,
        mut stop: impl FnMut(&Tokenizer, &[u32]) -> bool,
    ) -> Result<Vec<u32>> {
        let model = &agent.model;
        let opts = GenerateOptions {
            max_new_tokens,
            stop_ids: agent.tokenizer.eos_token_id().into_iter().collect(),
            logprobs: false,
        };
        let (on_event, cancel) = (&mut self.on_event, self.cancel);
        let cancelled = || cancel.is_some_and(|flag| flag.load(Ordering::Relaxed));
        let out = generate_from(self.calls, model, h, &mut cache, &opts, &mut self.sampler, |ids| {
            let id = *ids.last().expect("called after a token");
            on_event(Event::Token { role: agent.role, id, tokenizer: &agent.tokenizer });
            stop(&agent.tokenizer, ids) || cancelled()
        })
        .await
        .map_err(|e| self.stage_error(e, agent.role, round))?;
        self.check_cancelled()?;
        Ok(out.ids)
    }

    /// A model error of `role`'s stage in `round`; non-finite values and bad input name the agent and round.
    fn stage_error(&self, e: rmas_models::ModelError, role: Role, round: usize) -> RmasError {
        match e {
            rmas_models::ModelError::NonFinite { what } => RmasError::InvalidSystem {
                system: self.system.style.to_string(),
                msg: format!(
                    "agent {role} computed non-finite {what} in round {round}: NaN or infinity in its weights or config (e.g. rms_norm_eps), or in the latent messages it received"
                ),
            },
            rmas_models::ModelError::Input(msg) => {
                rmas_models::ModelError::Input(format!("agent {role} in round {round}: {msg}")).into()
            }
            other => other.into(),
        }
    }

    pub(super) fn finish(&mut self, round: usize, role: Role, kind: StageKind, started: Instant) {
        let record = StageRecord { round, role, kind, ms: started.elapsed().as_secs_f64() * 1e3 };
        (self.on_event)(Event::StageEnd(&record));
        self.stages.push(record);
    }
}
