//! What a run reports as it proceeds ([`Event`]) and what it returns ([`RunResult`]).

use burn::tensor::Tensor;
use rmas_models::RmasBackend;
use rmas_text::{Role, Tokenizer};

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
    /// The round (1-based).
    pub round: usize,
    /// The agent.
    pub role: Role,
    /// What it did.
    pub kind: StageKind,
    /// Wall time in milliseconds.
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
    /// Every stage, in order.
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
