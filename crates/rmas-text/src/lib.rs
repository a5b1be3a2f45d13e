//! Text layer of rmas: HF-compatible tokenizers and chat templates, slot splitting, and the
//! RecursiveMAS vocabulary, style table, prompt texts, answer-retry rules, recommended settings and
//! the reference's scoring.

pub mod answer;
pub mod chat;
pub mod datasets;
pub mod error;
pub mod nprandom;
pub mod prompts;
pub mod pyrandom;
pub mod pystr;
pub mod scoring;
pub mod settings;
pub mod style;
pub mod tokenizer;
pub mod vocab;

pub use chat::{ChatMessage, ChatOptions, ChatTemplate};
pub use datasets::{RowQuestion, row_gold, row_question};
pub use error::{Result, TextError};
pub use prompts::{Prompt, PromptContext};
pub use settings::{RecommendedSettings, recommended_settings};
pub use style::{LinkEdge, Style, StyleSpec, system_prompt, user_prompt};
pub use tokenizer::{Tokenizer, TokenizerFiles, split_at_slots};
pub use vocab::{CodeTask, Dataset, MasTask, Role, Task};
