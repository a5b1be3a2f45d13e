//! The recursion engine: a loaded system ([`LoadedSystem`]) and one question's run through it
//! ([`Run`]) with its events and result (docs/architecture.md, docs/algorithm.md "Round loop").

mod batch;
mod events;
mod loaded;
mod run;
mod stream;
mod tool_loop;

pub use batch::{BatchPlan, QuestionOutcome, run_questions};
pub use events::{Event, RunResult, StageKind, StageRecord};
pub use loaded::{Agent, AgentLoader, LoadedSystem};
pub use run::Run;
pub use stream::AnswerStream;
