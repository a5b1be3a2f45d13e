//! The final answer as text while its tokens are generated (`rmas run` prints it, `rmas serve`
//! streams it): every delta extends what was sent, and all of them together are exactly the
//! run's [`RunResult::answer`](super::RunResult) once [`AnswerStream::finish`] added the rest.

use rmas_models::RmasBackend;
use rmas_text::{Role, Style};

use super::events::Event;

/// Turns a run's events into deltas of its final answer.
///
/// Only the final agent's generation in the last round streams; its text is the stripped decode
/// of the ids so far, sent as soon as it extends what was sent (held back while it ends inside a
/// multi-byte character). An answer retry then continues the stripped text, and [`finish`]
/// (`Self::finish`) adds its continuation. A tool-using style streams nothing before the end (its
/// answer splices tool results between generations).
#[derive(Debug)]
pub struct AnswerStream {
    final_role: Role,
    rounds: usize,
    streams: bool,
    /// Whether the final generation started (a later stage of the same agent is the retry).
    started: bool,
    active: bool,
    ids: Vec<u32>,
    sent: String,
}

impl AnswerStream {
    /// A stream of the answer of `style` run for `rounds` rounds.
    pub fn new(style: Style, rounds: usize) -> Self {
        let spec = style.spec();
        Self {
            final_role: spec.final_role(),
            rounds,
            streams: !spec.tool_loop,
            started: false,
            active: false,
            ids: Vec::new(),
            sent: String::new(),
        }
    }

    /// The new answer text that `event` brings, if any.
    pub fn push<B: RmasBackend>(&mut self, event: &Event<'_, B>) -> Option<String> {
        match event {
            Event::StageStart { round, role, text } => {
                let is_final = *text && *round == self.rounds && *role == self.final_role;
                self.active = is_final && !self.started && self.streams;
                self.started |= is_final;
                None
            }
            Event::Token { id, tokenizer, .. } if self.active => {
                self.ids.push(*id);
                let text = tokenizer.decode_generated(&self.ids).ok()?;
                if text.ends_with('\u{FFFD}') {
                    return None;
                }
                self.extend_to(&text)
            }
            _ => None,
        }
    }

    /// The rest of `answer` (the run's final answer) after what was sent; `None` when nothing is
    /// left.
    pub fn finish(&mut self, answer: &str) -> Option<String> {
        self.extend_to(answer)
    }

    /// What `text` adds to the sent text, when it extends it.
    fn extend_to(&mut self, text: &str) -> Option<String> {
        let rest = text.strip_prefix(self.sent.as_str()).filter(|rest| !rest.is_empty())?.to_owned();
        self.sent.push_str(&rest);
        Some(rest)
    }
}
