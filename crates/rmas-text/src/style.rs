//! A RecursiveMAS style as one table ([`StyleSpec`]): its agents and repos, the outer-link edges
//! with the prompt slot each feeds, its prompts and the reference's record names; the engine's
//! round loop reads everything from here (docs/algorithm.md, "Styles and agents", "Round loop").

use std::fmt;
use std::str::FromStr;

use crate::error::{Result, TextError};
use crate::prompts::{self, Prompt, PromptContext, PromptFn};
use crate::vocab::{Role, parse_name};

/// A RecursiveMAS collaboration style: a key into [`StyleSpec::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Style {
    /// Planner (Qwen3-1.7B) → critic (Llama-3.2-1B) → solver (Qwen2.5-Math-1.5B).
    SequentialLight,
    /// Planner (Gemma-3-4B) → critic (Llama-3.2-3B) → solver (Qwen3.5-4B).
    SequentialScaled,
    /// Math, code and science experts → summarizer.
    Mixture,
    /// Expert → learner.
    Distillation,
    /// Reflector → tool-calling toolcaller.
    Deliberation,
}

/// A directed outer link: `source`'s latents, mapped into `target`'s embedding space, fill `slot`
/// of `target`'s prompt. An edge to a later role delivers in the same round; an edge to an
/// earlier role is feedback, delivered in the next round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkEdge {
    /// The link's key in the outer-link manifest (`outer_12`, …).
    pub key: &'static str,
    /// Sending role.
    pub source: Role,
    /// Receiving role.
    pub target: Role,
    /// The receiver's prompt slot the message fills.
    pub slot: &'static str,
}

/// Everything that makes a style what it is.
#[derive(Debug)]
pub struct StyleSpec {
    /// The style this row describes.
    pub style: Style,
    /// Accepted names (lower-case): the key first, the CLI name last.
    pub names: &'static [&'static str],
    /// The topology family as the official loader names it (both sequential styles: `sequential`).
    pub family: &'static str,
    /// The agents in the order they run within a round; the last one decodes the answer.
    pub roles: &'static [Role],
    /// The released agent repo of each role, in `roles` order.
    pub agent_repos: &'static [&'static str],
    /// The released repo holding the outer links and their manifest.
    pub outer_repo: &'static str,
    /// Whether links are chosen per task (`adapter(math).pt` / `(code)`).
    pub task_scoped: bool,
    /// The outer links, in the order each sender sends them.
    pub edges: &'static [LinkEdge],
    /// The system prompt of every agent.
    pub system_prompt: &'static str,
    /// The user prompts.
    pub user_prompt: PromptFn,
    /// Whether the final agent answers through the python/search tool loop.
    pub tool_loop: bool,
    /// Whether the final agent also decodes its text in the rounds before the last, as the
    /// release's mixture summarizer does (unless `summarize_every_round` is off).
    pub intermediate_text: bool,
    /// The reference's `method` string in result records.
    pub record_method: &'static str,
    /// The reference's `--mas_shape` string in result records.
    pub record_shape: &'static str,
}

const fn edge(key: &'static str, source: Role, target: Role, slot: &'static str) -> LinkEdge {
    LinkEdge { key, source, target, slot }
}

const SEQUENTIAL_ROLES: &[Role] = &[Role::Planner, Role::Critic, Role::Solver];
const SEQUENTIAL_EDGES: &[LinkEdge] = &[
    edge("outer_12", Role::Planner, Role::Critic, prompts::PLANNER_SLOT),
    edge("outer_23", Role::Critic, Role::Solver, prompts::REFINED_SLOT),
    edge("outer_31", Role::Solver, Role::Planner, prompts::FEEDBACK_SLOT),
];

impl StyleSpec {
    /// Every style, in [`Style`] order.
    pub const ALL: [StyleSpec; 5] = [
        StyleSpec {
            style: Style::SequentialLight,
            names: &["sequential_light", "sequential-light"],
            family: "sequential",
            roles: SEQUENTIAL_ROLES,
            agent_repos: &[
                "RecursiveMAS/Sequential-Light-Planner-Qwen3-1.7B",
                "RecursiveMAS/Sequential-Light-Critic-Llama3.2-1B",
                "RecursiveMAS/Sequential-Light-Solver-Qwen2.5-Math-1.5B",
            ],
            outer_repo: "RecursiveMAS/Sequential-Light-Outerlinks",
            task_scoped: true,
            edges: SEQUENTIAL_EDGES,
            system_prompt: prompts::SYSTEM_PROMPT,
            user_prompt: prompts::sequential,
            tool_loop: false,
            intermediate_text: false,
            record_method: "ours_recursive",
            record_shape: "chain",
        },
        StyleSpec {
            style: Style::SequentialScaled,
            names: &["sequential_scaled", "sequential-scaled"],
            family: "sequential",
            roles: SEQUENTIAL_ROLES,
            agent_repos: &[
                "RecursiveMAS/Sequential-Scaled-Planner-Gemma3-4B",
                "RecursiveMAS/Sequential-Scaled-Critic-Llama3.2-3B",
                "RecursiveMAS/Sequential-Scaled-Solver-Qwen3.5-4B",
            ],
            outer_repo: "RecursiveMAS/Sequential-Scaled-Outerlinks",
            task_scoped: true,
            edges: SEQUENTIAL_EDGES,
            system_prompt: prompts::SYSTEM_PROMPT,
            user_prompt: prompts::sequential,
            tool_loop: false,
            intermediate_text: false,
            record_method: "ours_recursive",
            record_shape: "chain",
        },
        StyleSpec {
            style: Style::Mixture,
            names: &["mixture"],
            family: "mixture",
            roles: &[Role::Math, Role::Code, Role::Science, Role::Summarizer],
            agent_repos: &[
                "RecursiveMAS/Mixture-Math-DeepSeek-R1-Distill-Qwen-1.5B",
                "RecursiveMAS/Mixture-Code-Qwen2.5-Coder-3B",
                "RecursiveMAS/Mixture-Science-BioMistral-7B",
                "RecursiveMAS/Mixture-Summarizer-Qwen3.5-2B",
            ],
            outer_repo: "RecursiveMAS/Mixture-Outerlinks",
            task_scoped: false,
            edges: &[
                edge("outer_1s", Role::Math, Role::Summarizer, prompts::HIE_MATH_EXPERT_SLOT),
                edge("outer_2s", Role::Code, Role::Summarizer, prompts::HIE_CODE_EXPERT_SLOT),
                edge("outer_3s", Role::Science, Role::Summarizer, prompts::HIE_SCIENCE_EXPERT_SLOT),
                edge("outer_s1", Role::Summarizer, Role::Math, prompts::HIE_FEEDBACK_SLOT),
                edge("outer_s2", Role::Summarizer, Role::Code, prompts::HIE_FEEDBACK_SLOT),
                edge("outer_s3", Role::Summarizer, Role::Science, prompts::HIE_FEEDBACK_SLOT),
            ],
            system_prompt: prompts::SYSTEM_PROMPT,
            user_prompt: prompts::mixture,
            tool_loop: false,
            intermediate_text: true,
            record_method: "ours_hie_recursive",
            record_shape: "hie",
        },
        StyleSpec {
            style: Style::Distillation,
            names: &["distillation"],
            family: "distillation",
            roles: &[Role::Expert, Role::Learner],
            agent_repos: &[
                "RecursiveMAS/Distillation-Expert-Qwen3.5-9B",
                "RecursiveMAS/Distillation-Learner-Qwen3.5-4B",
            ],
            outer_repo: "RecursiveMAS/Distillation-Outerlinks",
            task_scoped: true,
            edges: &[
                edge("outer_el", Role::Expert, Role::Learner, prompts::DISTILL_EXPERT_SLOT),
                edge("outer_le", Role::Learner, Role::Expert, prompts::DISTILL_FEEDBACK_SLOT),
            ],
            system_prompt: prompts::SYSTEM_PROMPT,
            user_prompt: prompts::distillation,
            tool_loop: false,
            intermediate_text: false,
            record_method: "ours_recursive_distill",
            record_shape: "distill",
        },
        StyleSpec {
            style: Style::Deliberation,
            names: &["deliberation"],
            family: "deliberation",
            roles: &[Role::Reflector, Role::Toolcaller],
            agent_repos: &[
                "RecursiveMAS/Deliberation-Reflector-Qwen3.5-4B",
                "RecursiveMAS/Deliberation-Toolcaller-Qwen3.5-4B",
            ],
            outer_repo: "RecursiveMAS/Deliberation-Outerlinks",
            task_scoped: false,
            edges: &[
                edge("outer_rt", Role::Reflector, Role::Toolcaller, prompts::DELIBERATION_REFLECTOR_SLOT),
                edge("outer_tr", Role::Toolcaller, Role::Reflector, prompts::DELIBERATION_FEEDBACK_SLOT),
            ],
            system_prompt: prompts::DELIBERATION_SYSTEM_PROMPT,
            user_prompt: prompts::deliberation,
            tool_loop: true,
            intermediate_text: false,
            record_method: "ours_recursive_deliberation",
            record_shape: "deliberation",
        },
    ];

    /// The agent that generates the final text.
    pub fn final_role(&self) -> Role {
        *self.roles.last().expect("every style has agents")
    }

    /// `(role, repo id)` per released agent, in `roles` order.
    pub fn agents(&self) -> impl Iterator<Item = (Role, &'static str)> + '_ {
        self.roles.iter().copied().zip(self.agent_repos.iter().copied())
    }

    /// The edges `role` sends through, in sending order.
    pub fn edges_from(&self, role: Role) -> impl Iterator<Item = &'static LinkEdge> + '_ {
        self.edges.iter().filter(move |e| e.source == role)
    }

    /// Whether `edge` feeds a role that ran earlier in the round: its message waits for the next round.
    pub fn is_feedback(&self, edge: &LinkEdge) -> bool {
        let at = |role| self.roles.iter().position(|r| *r == role);
        at(edge.target) <= at(edge.source)
    }

    /// The user prompt of `role` in `round` (1-based; feedback variants from round 2 on).
    pub fn user_prompt(&self, role: Role, round: usize, ctx: &PromptContext<'_>) -> Result<Prompt> {
        if round == 0 {
            return Err(TextError::InvalidRound(round));
        }
        (self.user_prompt)(role, round >= 2, ctx).ok_or_else(|| TextError::RoleNotInStyle {
            style: self.style.key(),
            role: role.key(),
            expected: self.roles.iter().map(|r| r.key()).collect::<Vec<_>>().join(", "),
        })
    }
}

impl Style {
    /// All styles.
    pub const ALL: [Style; 5] =
        [Style::SequentialLight, Style::SequentialScaled, Style::Mixture, Style::Distillation, Style::Deliberation];

    /// This style's table row.
    pub fn spec(self) -> &'static StyleSpec {
        &StyleSpec::ALL[self as usize]
    }

    /// The style key (`sequential_light`, ...).
    pub fn key(self) -> &'static str {
        self.spec().names[0]
    }

    /// The CLI name (`sequential-light`, `mixture`, ...).
    pub fn cli_name(self) -> &'static str {
        let names = self.spec().names;
        names[names.len() - 1]
    }

    /// The agents in the order they run within a round; the last one decodes the answer.
    pub fn roles(self) -> &'static [Role] {
        self.spec().roles
    }

    /// The agent that generates the final text.
    pub fn final_role(self) -> Role {
        self.spec().final_role()
    }

    /// Whether links are chosen per task (`adapter(math).pt` / `(code)`): sequential and distillation.
    pub fn is_task_scoped(self) -> bool {
        self.spec().task_scoped
    }
}

impl FromStr for Style {
    type Err = TextError;
    fn from_str(name: &str) -> Result<Self> {
        parse_name("style", name, &Style::ALL, |s| s.spec().names)
    }
}

impl fmt::Display for Style {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cli_name())
    }
}

/// The system prompt of a style (deliberation: [`prompts::DELIBERATION_SYSTEM_PROMPT`] for both agents).
pub fn system_prompt(style: Style) -> &'static str {
    style.spec().system_prompt
}

/// The user prompt of `role` in `round` (1-based; feedback variants from round 2 on).
pub fn user_prompt(style: Style, role: Role, round: usize, ctx: &PromptContext<'_>) -> Result<Prompt> {
    style.spec().user_prompt(role, round, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_in_style_order_and_consistent() {
        for (i, spec) in StyleSpec::ALL.iter().enumerate() {
            assert_eq!(spec.style as usize, i, "row {i}");
            assert_eq!(spec.roles.len(), spec.agent_repos.len(), "{}", spec.style);
            for e in spec.edges {
                assert!(spec.roles.contains(&e.source) && spec.roles.contains(&e.target), "{}: {}", spec.style, e.key);
            }
            assert!(spec.edges_from(spec.final_role()).all(|e| spec.is_feedback(e)), "{}", spec.style);
            // Each edge's slot is in its receiver's prompt of the round the message arrives in.
            let ctx = PromptContext::new("1+1?", crate::Dataset::Math500);
            for e in spec.edges {
                let round = if spec.is_feedback(e) { 2 } else { 1 };
                let prompt = spec.user_prompt(e.target, round, &ctx).unwrap();
                assert!(prompt.slots.contains(&e.slot), "{}: {} into {}", spec.style, e.key, e.target);
            }
        }
    }
}
