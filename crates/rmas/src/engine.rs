//! The recursion engine: latent rollouts with caches, messages through outer links, splicing into
//! the receivers' prompts, the per-style round loops, final generation, answer retry and the tool loop.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::Path;

use burn::tensor::{DType, Tensor};
use rmas_models::generate::{GenerateOptions, Sampler, generate, last_row};
use rmas_models::{Model, RmasBackend};
use rmas_text::Tokenizer;
use rmas_text::prompts::{self, PromptContext, Role, Style};
use web_time::Instant;

use crate::error::{Result, RmasError};
use crate::link::{InnerLink, OuterLink};
pub use crate::options::RunOptions;
#[cfg(not(target_family = "wasm"))]
use crate::system::{AgentSpec, SystemSpec};
use crate::tools::{self, ToolBox};
use crate::topology::outer_links;

/// One agent: a frozen language model, its tokenizer and its inner RecursiveLink.
pub struct Agent<B: RmasBackend> {
    pub role: Role,
    pub model: Model<B>,
    pub tokenizer: Tokenizer,
    pub inner: InnerLink<B>,
}

impl<B: RmasBackend> Agent<B> {
    /// An agent from its parts, checking that the inner link (`link` in errors) fits the model's width.
    pub fn new(role: Role, model: Model<B>, tokenizer: Tokenizer, inner: InnerLink<B>, link: &Path) -> Result<Self> {
        let hidden = model.config().hidden_size;
        if inner.in_dim() != hidden {
            return Err(RmasError::LinkDimMismatch {
                link: format!("inner link {}", link.display()),
                side: "in_dim",
                link_dim: inner.in_dim(),
                relation: "its agent",
                agent: role.to_string(),
                hidden,
            });
        }
        Ok(Self { role, model, tokenizer, inner })
    }

    /// Loads the checkpoint, tokenizer and inner link of `spec`.
    #[cfg(not(target_family = "wasm"))]
    pub fn load(spec: &AgentSpec, device: &B::Device, dtype: DType) -> Result<Self> {
        let model = Model::load(&spec.dir, device, dtype)?;
        let tokenizer = Tokenizer::from_dir(&spec.dir)?;
        let inner = InnerLink::load(&spec.inner_link, device)?;
        Self::new(spec.role, model, tokenizer, inner, &spec.inner_link)
    }
}

/// An agent kept in memory, or loaded for each stage and dropped after it (`--offload`).
enum Slot<B: RmasBackend> {
    Resident(Box<Agent<B>>),
    #[cfg(not(target_family = "wasm"))]
    Offloaded(AgentSpec),
}

/// An agent for one stage: borrowed from the system, or loaded for the stage alone.
enum AgentRef<'a, B: RmasBackend> {
    Resident(&'a Agent<B>),
    #[cfg(not(target_family = "wasm"))]
    Loaded(Box<Agent<B>>),
}

impl<B: RmasBackend> Deref for AgentRef<'_, B> {
    type Target = Agent<B>;

    fn deref(&self) -> &Agent<B> {
        match self {
            Self::Resident(agent) => agent,
            #[cfg(not(target_family = "wasm"))]
            Self::Loaded(agent) => agent,
        }
    }
}

/// A loaded RecursiveMAS system.
pub struct System<B: RmasBackend> {
    pub style: Style,
    agents: BTreeMap<Role, Slot<B>>,
    outer: BTreeMap<String, OuterLink<B>>,
    #[cfg_attr(target_family = "wasm", allow(dead_code))]
    device: B::Device,
    #[cfg_attr(target_family = "wasm", allow(dead_code))]
    dtype: DType,
}

impl<B: RmasBackend> System<B> {
    /// Loads every link and (unless `offload`) every agent of a resolved system.
    #[cfg(not(target_family = "wasm"))]
    pub fn load(spec: &SystemSpec, device: &B::Device, dtype: DType, offload: bool) -> Result<Self> {
        let hidden = spec.hidden_sizes()?;
        let outer = spec.load_outer_links(&hidden, |path| OuterLink::load(path, device))?;
        let mut agents = BTreeMap::new();
        for a in &spec.agents {
            let slot = if offload {
                Slot::Offloaded(a.clone())
            } else {
                Slot::Resident(Box::new(Agent::load(a, device, dtype)?))
            };
            agents.insert(a.role, slot);
        }
        Ok(Self { style: spec.style, agents, outer, device: device.clone(), dtype })
    }

    /// Assembles a system from agents and outer links built in memory (the demo).
    pub fn from_parts(
        style: Style,
        agents: Vec<Agent<B>>,
        outer: BTreeMap<String, OuterLink<B>>,
        device: &B::Device,
    ) -> Self {
        let dtype = agents.first().map_or(DType::F32, |a| a.model.dtype());
        let agents = agents.into_iter().map(|a| (a.role, Slot::Resident(Box::new(a)))).collect();
        Self { style, agents, outer, device: device.clone(), dtype }
    }

    fn agent(&self, role: Role) -> Result<AgentRef<'_, B>> {
        match self.agents.get(&role) {
            Some(Slot::Resident(agent)) => Ok(AgentRef::Resident(agent)),
            #[cfg(not(target_family = "wasm"))]
            Some(Slot::Offloaded(spec)) => Ok(AgentRef::Loaded(Box::new(Agent::load(spec, &self.device, self.dtype)?))),
            None => Err(RmasError::InvalidSystem {
                system: self.style.to_string(),
                msg: format!("no agent for role `{role}`"),
            }),
        }
    }

    /// The resident agents (offloaded ones are not loaded for this).
    pub fn agents(&self) -> impl Iterator<Item = &Agent<B>> {
        self.agents.values().filter_map(|slot| match slot {
            Slot::Resident(agent) => Some(&**agent),
            #[cfg(not(target_family = "wasm"))]
            Slot::Offloaded(_) => None,
        })
    }

    /// The outer links of the style's topology that this system has: `(key, from, to)`.
    pub fn links(&self) -> impl Iterator<Item = (&'static str, Role, Role)> + '_ {
        outer_links(self.style).iter().filter(|e| self.outer.contains_key(e.key)).map(|e| (e.key, e.source, e.target))
    }

    fn outer(&self, key: &str) -> Result<&OuterLink<B>> {
        self.outer.get(key).ok_or_else(|| RmasError::InvalidSystem {
            system: self.style.to_string(),
            msg: format!("no outer link `{key}` (have: {})", self.outer.keys().cloned().collect::<Vec<_>>().join(", ")),
        })
    }
}

/// What a stage did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StageKind {
    /// A latent rollout of this many steps.
    Latent { steps: usize },
    /// Text generation of these ids.
    Text { ids: Vec<u32> },
    /// The answer-retry continuation.
    Retry { ids: Vec<u32> },
    /// A deliberation tool call.
    Tool { call: String },
}

/// One finished stage, for `--json` and progress displays.
#[derive(Clone, Debug)]
pub struct StageRecord {
    pub round: usize,
    pub role: Role,
    pub kind: StageKind,
    pub ms: f64,
}

/// Progress and intermediate values as the run proceeds.
pub enum Event<'a, B: RmasBackend> {
    /// A stage starts.
    StageStart { round: usize, role: Role, text: bool },
    /// One latent step finished (no host sync happens for it).
    LatentStep { round: usize, role: Role, step: usize },
    /// A rollout finished: its input rows, hidden states `h_t` and latents `R_in(h_t)`.
    Rollout { round: usize, role: Role, input: &'a Tensor<B, 2>, hidden: &'a Tensor<B, 2>, latents: &'a Tensor<B, 2> },
    /// A message left `from` through the outer link `key`.
    Message { round: usize, from: Role, key: &'a str, message: &'a Tensor<B, 2> },
    /// Text generation starts from these input rows.
    GenerateInput { round: usize, role: Role, input: &'a Tensor<B, 2> },
    /// A token was generated.
    Token { role: Role, id: u32, tokenizer: &'a Tokenizer },
    /// A stage finished.
    StageEnd(&'a StageRecord),
}

/// The final answer and the record of every stage.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// Final text (`skip_special_tokens`, stripped; with the retry continuation when one ran).
    pub answer: String,
    /// Ids the final agent generated for the answer (every tool-loop continuation in order; not the
    /// retry's, which its own stage holds).
    pub token_ids: Vec<u32>,
    pub stages: Vec<StageRecord>,
}

impl StageRecord {
    /// `{"agent", "round", "ms", "kind", …}` as `rmas run --json` prints it.
    pub fn to_json(&self) -> serde_json::Value {
        let mut o = serde_json::json!({ "agent": self.role.to_string(), "round": self.round, "ms": self.ms });
        let (kind, key, value) = match &self.kind {
            StageKind::Latent { steps } => ("latent", "latent_steps", serde_json::json!(steps)),
            StageKind::Text { ids } => ("text", "generated_ids", serde_json::json!(ids)),
            StageKind::Retry { ids } => ("answer_retry", "generated_ids", serde_json::json!(ids)),
            StageKind::Tool { call } => ("tool", "call", serde_json::json!(call)),
        };
        o["kind"] = kind.into();
        o[key] = value;
        o
    }
}

impl RunResult {
    /// `{"answer", "token_ids", "stages"}` as `rmas run --json` prints it.
    pub fn to_json(&self) -> serde_json::Value {
        let stages: Vec<_> = self.stages.iter().map(StageRecord::to_json).collect();
        serde_json::json!({ "answer": self.answer, "token_ids": self.token_ids, "stages": stages })
    }
}

/// Runs one question through a system.
pub struct Run<'s, 'e, B: RmasBackend> {
    system: &'s System<B>,
    opts: &'s RunOptions,
    question: &'s str,
    sampler: Sampler,
    on_event: &'e mut dyn FnMut(Event<'_, B>),
    stages: Vec<StageRecord>,
    tools: Option<&'s ToolBox>,
}

/// Incoming messages of a prompt, by slot.
type Slots<B> = Vec<(&'static str, Tensor<B, 2>)>;

impl<'s, 'e, B: RmasBackend> Run<'s, 'e, B> {
    /// Prepares a run; the sampler is seeded once here, before the first rollout.
    pub fn new(
        system: &'s System<B>,
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
        }
    }

    /// Runs every round of the style's loop and the final generation (natively: `rmas_models::block_on(run.execute())`).
    pub async fn execute(mut self) -> Result<RunResult> {
        let rounds = self.opts.rounds;
        if rounds == 0 {
            return Err(RmasError::InvalidOption { option: "rounds", msg: "must be at least 1 (got 0)".into() });
        }
        let (answer, token_ids) = match self.system.style {
            Style::SequentialLight | Style::SequentialScaled => self.sequential(rounds).await?,
            Style::Mixture => self.mixture(rounds).await?,
            Style::Distillation | Style::Deliberation => self.pair(rounds).await?,
        };
        Ok(RunResult { answer, token_ids, stages: self.stages })
    }

    /// planner → critic → solver, solver → planner (§7.1).
    async fn sequential(&mut self, rounds: usize) -> Result<(String, Vec<u32>)> {
        let mut feedback = None;
        let mut refined = None;
        for r in 1..=rounds {
            let fb: Slots<B> = feedback.take().map(|m| vec![(prompts::FEEDBACK_SLOT, m)]).unwrap_or_default();
            let plan = self.send(Role::Planner, r, fb, "outer_12")?;
            let m23 = self.send(Role::Critic, r, vec![(prompts::PLANNER_SLOT, plan)], "outer_23")?;
            if r < rounds {
                feedback = Some(self.send(Role::Solver, r, vec![(prompts::REFINED_SLOT, m23.clone())], "outer_31")?);
            }
            refined = Some(m23);
        }
        let slots = vec![(prompts::REFINED_SLOT, refined.expect("at least one round"))];
        self.answer(Role::Solver, rounds, slots).await
    }

    /// math, code, science → summarizer; summarizer → every expert (§7.2).
    async fn mixture(&mut self, rounds: usize) -> Result<(String, Vec<u32>)> {
        let experts = [
            (Role::Math, "outer_1s", "outer_s1"),
            (Role::Code, "outer_2s", "outer_s2"),
            (Role::Science, "outer_3s", "outer_s3"),
        ];
        let slots = [prompts::HIE_MATH_EXPERT_SLOT, prompts::HIE_CODE_EXPERT_SLOT, prompts::HIE_SCIENCE_EXPERT_SLOT];
        let mut feedback: Vec<Option<Tensor<B, 2>>> = vec![None, None, None];
        for r in 1..=rounds {
            let mut incoming = Vec::new();
            for (i, (role, to_summarizer, _)) in experts.iter().enumerate() {
                let fb = feedback[i].take().map(|m| vec![(prompts::HIE_FEEDBACK_SLOT, m)]).unwrap_or_default();
                incoming.push((slots[i], self.send(*role, r, fb, to_summarizer)?));
            }
            if r == rounds {
                return self.answer(Role::Summarizer, r, incoming).await;
            }
            if self.opts.summarize_every_round {
                self.generate_text(Role::Summarizer, r, incoming.clone()).await?;
            }
            let latents = self.rollout(Role::Summarizer, r, incoming)?;
            for (i, (_, _, back)) in experts.iter().enumerate() {
                feedback[i] = Some(self.message(Role::Summarizer, r, back, &latents)?);
            }
        }
        unreachable!("the last round returns")
    }

    /// expert/reflector → learner/toolcaller, and back (§7.3, §7.4).
    async fn pair(&mut self, rounds: usize) -> Result<(String, Vec<u32>)> {
        let (first, last, fwd, back, fb_slot, in_slot) = if self.system.style == Style::Distillation {
            (
                Role::Expert,
                Role::Learner,
                "outer_el",
                "outer_le",
                prompts::DISTILL_FEEDBACK_SLOT,
                prompts::DISTILL_EXPERT_SLOT,
            )
        } else {
            (
                Role::Reflector,
                Role::Toolcaller,
                "outer_rt",
                "outer_tr",
                prompts::DELIBERATION_FEEDBACK_SLOT,
                prompts::DELIBERATION_REFLECTOR_SLOT,
            )
        };
        let mut feedback = None;
        for r in 1..=rounds {
            let fb: Slots<B> = feedback.take().map(|m| vec![(fb_slot, m)]).unwrap_or_default();
            let m = self.send(first, r, fb, fwd)?;
            let slots = vec![(in_slot, m)];
            if r == rounds {
                return self.answer(last, r, slots).await;
            }
            feedback = Some(self.send(last, r, slots, back)?);
        }
        unreachable!("the last round returns")
    }

    /// Rollout of `role` then its outer link `key`: the message it sends.
    fn send(&mut self, role: Role, round: usize, slots: Slots<B>, key: &str) -> Result<Tensor<B, 2>> {
        let latents = self.rollout(role, round, slots)?;
        self.message(role, round, key, &latents)
    }

    fn message(&mut self, from: Role, round: usize, key: &str, latents: &Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let message = self.system.outer(key)?.forward(latents.clone());
        (self.on_event)(Event::Message { round, from, key, message: &message });
        Ok(message)
    }

    /// The prompt of `role` in `round`, embedded, with the messages spliced into its slots: `[L, H]`.
    fn prompt_rows(&self, agent: &Agent<B>, round: usize, mut slots: Slots<B>) -> Result<Tensor<B, 2>> {
        let ctx = PromptContext::new(self.question, self.opts.dataset);
        let ctx = match self.opts.fn_name.as_deref() {
            Some(name) => ctx.with_fn_name(name),
            None => ctx,
        };
        let prompt = prompts::user_prompt(self.system.style, agent.role, round, &ctx)?;
        let rendered =
            agent.tokenizer.render_prompt(prompts::system_prompt(self.system.style), &prompt.text, &self.opts.chat)?;
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
    /// Nothing is read back to the host.
    fn rollout(&mut self, role: Role, round: usize, slots: Slots<B>) -> Result<Tensor<B, 2>> {
        let started = Instant::now();
        (self.on_event)(Event::StageStart { round, role, text: false });
        let steps = self.opts.latent_steps;
        let agent = self.system.agent(role)?;
        let input = self.prompt_rows(&agent, round, slots)?;
        let model = &agent.model;
        let latents = if steps == 0 {
            Tensor::zeros([0, model.config().hidden_size], (model.device(), model.dtype()))
        } else {
            let mut cache = model.new_cache(input.dims()[0] + steps)?;
            let mut h = last_row(model.forward(input.clone(), &mut cache)?);
            let (mut hs, mut zs) = (Vec::with_capacity(steps), Vec::with_capacity(steps));
            for step in 0..steps {
                let e = agent.inner.forward(h.clone()).cast(model.dtype());
                hs.push(h.clone());
                zs.push(e.clone());
                (self.on_event)(Event::LatentStep { round, role, step: step + 1 });
                if step + 1 < steps {
                    h = last_row(model.forward(e, &mut cache)?);
                }
            }
            let (hidden, latents) = (Tensor::cat(hs, 0), Tensor::cat(zs, 0));
            (self.on_event)(Event::Rollout { round, role, input: &input, hidden: &hidden, latents: &latents });
            latents
        };
        self.finish(round, role, StageKind::Latent { steps }, started);
        Ok(latents)
    }

    /// The final agent's answer: generation (or the tool loop), then the optional answer retry.
    async fn answer(&mut self, role: Role, round: usize, slots: Slots<B>) -> Result<(String, Vec<u32>)> {
        let (text, ids) = if self.system.style == Style::Deliberation {
            self.tool_loop(role, round, slots).await?
        } else {
            self.generate_text(role, round, slots).await?
        };
        if !self.opts.answer_retry {
            return Ok((text, ids));
        }
        let Some(retry) = prompts::answer_retry(self.opts.dataset.mas_task(), &text) else { return Ok((text, ids)) };
        let started = Instant::now();
        (self.on_event)(Event::StageStart { round, role, text: true });
        let prompt = retry.prompt(&text);
        let agent = self.system.agent(role)?;
        let input = agent.model.embed(&agent.tokenizer.encode(&prompt, true)?)?;
        let cont = self.decode(&agent, input, retry.max_new_tokens, |_, _| false).await?;
        let answer = format!("{prompt}{}", agent.tokenizer.decode(&cont, true)?);
        self.finish(round, role, StageKind::Retry { ids: cont }, started);
        Ok((answer, ids))
    }

    /// Text generation of `role` from its prompt with messages; returns the stripped text and the ids.
    async fn generate_text(&mut self, role: Role, round: usize, slots: Slots<B>) -> Result<(String, Vec<u32>)> {
        let started = Instant::now();
        (self.on_event)(Event::StageStart { round, role, text: true });
        let agent = self.system.agent(role)?;
        let input = self.prompt_rows(&agent, round, slots)?;
        (self.on_event)(Event::GenerateInput { round, role, input: &input });
        let ids = self.decode(&agent, input, self.opts.max_new_tokens, |_, _| false).await?;
        let text = agent.tokenizer.decode_generated(&ids)?;
        self.finish(round, role, StageKind::Text { ids: ids.clone() }, started);
        Ok((text, ids))
    }

    /// Generates from input rows, stopping on the tokenizer's eos (§8) or when `stop` says so.
    async fn decode(
        &mut self,
        agent: &Agent<B>,
        input: Tensor<B, 2>,
        max_new_tokens: usize,
        mut stop: impl FnMut(&Tokenizer, &[u32]) -> bool,
    ) -> Result<Vec<u32>> {
        if max_new_tokens == 0 {
            return Ok(Vec::new());
        }
        let model = &agent.model;
        let mut cache = model.new_cache(input.dims()[0] + max_new_tokens)?;
        let opts = GenerateOptions {
            max_new_tokens,
            stop_ids: agent.tokenizer.eos_token_id().into_iter().collect(),
            logprobs: false,
        };
        let on_event = &mut self.on_event;
        let out = generate(model, input, &mut cache, &opts, &mut self.sampler, |ids| {
            let id = *ids.last().expect("called after a token");
            on_event(Event::Token { role: agent.role, id, tokenizer: &agent.tokenizer });
            stop(&agent.tokenizer, ids)
        })
        .await
        .map_err(|e| match e {
            rmas_models::ModelError::NonFinite => RmasError::InvalidSystem {
                system: self.system.style.to_string(),
                msg: format!(
                    "agent {} computed non-finite logits when generating its text: NaN or infinity in its weights or config (e.g. rms_norm_eps), or in the latent messages it received",
                    agent.role
                ),
            },
            other => other.into(),
        })?;
        Ok(out.ids)
    }

    /// The deliberation toolcaller's generation with `<python>` / `<search>` calls (§10).
    async fn tool_loop(&mut self, role: Role, round: usize, slots: Slots<B>) -> Result<(String, Vec<u32>)> {
        let own_tools;
        let toolbox = match self.tools {
            Some(t) => t,
            None => {
                own_tools = ToolBox::from_env()?;
                &own_tools
            }
        };
        let agent = self.system.agent(role)?;
        let prompt = self.prompt_rows(&agent, round, slots)?;
        let eos: Vec<u32> =
            agent.tokenizer.generation_eos_ids().iter().copied().chain(agent.tokenizer.eos_token_id()).collect();
        let (mut text, mut cursor, mut calls, mut budget) = (String::new(), 0usize, 0usize, self.opts.max_new_tokens);
        let mut all_ids = Vec::new();
        // Each continuation is one generate call of the reference, recorded as its own text stage.
        while budget > 0 {
            let started = Instant::now();
            (self.on_event)(Event::StageStart { round, role, text: true });
            let input = if text.is_empty() {
                prompt.clone()
            } else {
                let ids = agent.tokenizer.encode(&text, false)?;
                Tensor::cat(vec![prompt.clone(), agent.model.embed(&ids)?], 0)
            };
            (self.on_event)(Event::GenerateInput { round, role, input: &input });
            // The reference slices its generated ids at the input's length (generating from
            // embeddings, its `input_ids` hold only the new tokens), so a call stops for a tool only
            // once it has generated more tokens than its input has rows; the text past the first
            // call is then cut off, its tokens still spent.
            let rows = input.dims()[0];
            let mut tool_stop = false;
            let ids = self
                .decode(&agent, input, budget, |tok, ids| {
                    tool_stop = tools::stops_for_tool(tok, ids, rows);
                    tool_stop
                })
                .await?;
            self.finish(round, role, StageKind::Text { ids: ids.clone() }, started);
            budget = budget.saturating_sub(ids.len());
            text.push_str(&agent.tokenizer.decode(&ids, true)?);
            let saw_eos = ids.iter().any(|id| eos.contains(id));
            all_ids.extend_from_slice(&ids);
            if let Some(call) = tools::find_tool_call(&text, cursor) {
                calls += 1;
                text.truncate(call.end);
                if calls > tools::MAX_TOOL_ROUNDS {
                    text.push_str(" <result> [tool limit reached after 5 calls] </result>");
                    break;
                }
                let started = Instant::now();
                let result = toolbox.run(&call);
                let ms = started.elapsed().as_secs_f64() * 1e3;
                self.stages.push(StageRecord { round, role, kind: StageKind::Tool { call: call.body.clone() }, ms });
                text.push_str(&format!(" <result> {result} </result>"));
                cursor = text.len();
                continue;
            }
            if tools::has_unclosed_tool_call(&text, cursor) {
                continue;
            }
            if saw_eos || !tool_stop {
                break;
            }
        }
        Ok((rmas_text::pystr::py_strip(&text).to_owned(), all_ids))
    }

    fn finish(&mut self, round: usize, role: Role, kind: StageKind, started: Instant) {
        let record = StageRecord { round, role, kind, ms: started.elapsed().as_secs_f64() * 1e3 };
        (self.on_event)(Event::StageEnd(&record));
        self.stages.push(record);
    }
}
