//! Run policy: the settings of one run, and how a released system's recommended settings
//! (`recommended_settings` in rmas-text; docs/architecture.md) combine with what a user overrides. The CLI, the
//! evaluator and the browser build all configure runs here, so one question gets the same run
//! everywhere.

use chrono::NaiveDate;
use rmas_models::generate::Sampling;
use rmas_text::ChatOptions;
use rmas_text::prompts::with_choice_instruction;
use rmas_text::{Dataset, MasTask, Style, recommended_settings};

/// The question a run on `dataset` asks for the user's `question`: a choice question closed by the
/// reference loaders' "Choose the correct option (A/B/C/D)." unless it asks so already.
pub fn dataset_question(dataset: Dataset, question: &str) -> String {
    if dataset.mas_task() == MasTask::Choice { with_choice_instruction(question) } else { question.to_owned() }
}

/// Settings of one run (docs/algorithm.md: "Round loop", "Text generation", "Recommended settings").
#[derive(Clone, Debug, PartialEq)]
pub struct RunOptions {
    /// The prompt set and answer kind.
    pub dataset: Dataset,
    /// The function code prompts ask for.
    pub fn_name: Option<String>,
    /// Latent steps T per rollout.
    pub latent_steps: usize,
    /// Recursion rounds R.
    pub rounds: usize,
    /// Generation budget of the final answer.
    pub max_new_tokens: usize,
    /// Greedy or sampled decoding.
    pub sampling: Sampling,
    /// Seed of the sampler, set once before the first stage.
    pub seed: u64,
    /// Chat-template settings (date, thinking).
    pub chat: ChatOptions,
    /// The reference `run.py`'s one retry when the answer lacks its expected form.
    pub answer_retry: bool,
    /// Mixture: let the summarizer also generate in non-final rounds (the reference does; the text is discarded).
    pub summarize_every_round: bool,
}

/// What a user sets over a released system's recommended settings; `None` keeps the recommended
/// (or the reference's default) value.
#[derive(Clone, Debug, Default)]
pub struct RunOverrides {
    /// Recursion rounds.
    pub rounds: Option<usize>,
    /// Latent steps per rollout.
    pub latent_steps: Option<usize>,
    /// Final answer budget.
    pub max_new_tokens: Option<usize>,
    /// Decode greedily whatever the recommended temperature.
    pub greedy: bool,
    /// Sampling temperature (0 means greedy).
    pub temperature: Option<f32>,
    /// Nucleus mass.
    pub top_p: Option<f32>,
    /// Top-k cut (HF's default 50 when absent; 0 disables).
    pub top_k: Option<usize>,
    /// Sampler seed (recommended 42).
    pub seed: Option<u64>,
    /// Answer retry (on by default, as `run.py`).
    pub answer_retry: Option<bool>,
    /// The function name of a code question.
    pub fn_name: Option<String>,
    /// Mixture: the summarizer's discarded non-final-round text (on by default, as the reference).
    pub summarize_every_round: Option<bool>,
}

/// HF `generate`'s top-k when a repo sets none (docs/algorithm.md, "Text generation").
pub const DEFAULT_TOP_K: usize = 50;
/// The sampling seed when none is given (`rmas run --seed`, a request without `seed`).
pub const DEFAULT_SEED: u64 = 42;

impl RunOptions {
    /// Whether the final agent of `style` decodes text in the rounds before the last, from the same
    /// prompt as its rollout there (docs/algorithm.md, "Round loop"): the engine runs that prompt
    /// once for both, and a batch plans room for the two caches it then holds.
    pub fn final_text_before_last_round(&self, style: Style) -> bool {
        style.spec().intermediate_text && self.summarize_every_round && self.rounds > 1
    }

    /// A released system's run on `dataset`: the recommended T, R, budget, temperature, top-p and
    /// seed of `(style, dataset)`, the answer retry on, overridden by `o`; chat templates print
    /// `chat_date`.
    pub fn released(style: Style, dataset: Dataset, chat_date: NaiveDate, o: &RunOverrides) -> Self {
        let rec = recommended_settings(style, dataset);
        let temperature = o.temperature.unwrap_or(rec.temperature);
        let sampling = if o.greedy || temperature <= 0.0 {
            Sampling::Greedy
        } else {
            Sampling::Sample {
                temperature,
                top_k: o.top_k.unwrap_or(DEFAULT_TOP_K),
                top_p: o.top_p.unwrap_or(rec.top_p),
            }
        };
        Self {
            dataset,
            fn_name: o.fn_name.clone(),
            latent_steps: o.latent_steps.unwrap_or(rec.latent_steps),
            rounds: o.rounds.unwrap_or(rec.rounds),
            max_new_tokens: o.max_new_tokens.unwrap_or(rec.max_new_tokens),
            sampling,
            seed: o.seed.unwrap_or(rec.seed),
            chat: ChatOptions::recursivemas(chat_date),
            answer_retry: o.answer_retry.unwrap_or(true),
            summarize_every_round: o.summarize_every_round.unwrap_or(true),
        }
    }

    /// `self` with `o` applied over it (for systems without recommended settings, such as the
    /// demo: only what `o` sets changes; a temperature without top-p samples the whole nucleus).
    pub fn overridden(mut self, o: &RunOverrides) -> Self {
        self.rounds = o.rounds.unwrap_or(self.rounds);
        self.latent_steps = o.latent_steps.unwrap_or(self.latent_steps);
        self.max_new_tokens = o.max_new_tokens.unwrap_or(self.max_new_tokens);
        self.seed = o.seed.unwrap_or(self.seed);
        self.answer_retry = o.answer_retry.unwrap_or(self.answer_retry);
        self.summarize_every_round = o.summarize_every_round.unwrap_or(self.summarize_every_round);
        if o.fn_name.is_some() {
            self.fn_name = o.fn_name.clone();
        }
        match o.temperature {
            _ if o.greedy => self.sampling = Sampling::Greedy,
            Some(t) if t > 0.0 => {
                self.sampling = Sampling::Sample {
                    temperature: t,
                    top_k: o.top_k.unwrap_or(DEFAULT_TOP_K),
                    top_p: o.top_p.unwrap_or(1.0),
                }
            }
            Some(_) => self.sampling = Sampling::Greedy,
            None => {}
        }
        self
    }
}
