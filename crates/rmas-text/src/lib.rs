//! Text layer of rmas: HF-compatible tokenizers and chat templates, slot splitting, and the
//! RecursiveMAS prompt texts, answer-retry rules and recommended settings.

pub mod chat;
pub mod datasets;
pub mod error;
pub mod nprandom;
pub mod prompts;
pub mod pyrandom;
pub mod pystr;
pub mod scoring;
pub mod tokenizer;

pub use chat::{ChatMessage, ChatOptions, ChatTemplate};
pub use datasets::{RowQuestion, row_gold, row_question};
pub use error::{Result, TextError};
pub use prompts::{
    CodeTask, Dataset, MasTask, Prompt, PromptContext, RecommendedSettings, Role, Style, Task, system_prompt,
    user_prompt,
};
pub use tokenizer::{Tokenizer, TokenizerFiles, split_at_slots};
