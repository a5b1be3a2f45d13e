//! The deliberation toolcaller's answer: generation interrupted by `<python>` / `<search>` calls
//! whose results are spliced back as text (docs/algorithm.md, "Deliberation tool loop").

use burn::tensor::Tensor;
use rmas_models::RmasBackend;
use rmas_text::Role;
use web_time::Instant;

use super::events::{Event, StageKind, StageRecord};
use super::run::{Run, Slots};
use crate::error::Result;
use crate::tools::{self, ToolBox};

impl<B: RmasBackend> Run<'_, '_, B> {
    /// The deliberation toolcaller's generation with `<python>` / `<search>` calls.
    pub(super) async fn tool_loop(&mut self, role: Role, round: usize, slots: Slots<B>) -> Result<(String, Vec<u32>)> {
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
        let loop_started = Instant::now();
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
                .decode(&agent, round, input, budget, |tok, ids| {
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
                // One time budget for all of a question's calls, besides each call's own limit.
                let result = if started.duration_since(loop_started) < tools::TOOL_TIME_BUDGET {
                    toolbox.run(&call)
                } else {
                    format!("[tool time budget of {} s exhausted]", tools::TOOL_TIME_BUDGET.as_secs())
                };
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
}
