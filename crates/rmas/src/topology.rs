//! The outer-link topology of each RecursiveMAS style (recursivemas.md §2.1).

use rmas_text::prompts::{Role, Style};

/// A directed outer link of a style's topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkEdge {
    /// Legacy key (`outer_12`, …).
    pub key: &'static str,
    /// Sending role.
    pub source: Role,
    /// Receiving role.
    pub target: Role,
}

const fn edge(key: &'static str, source: Role, target: Role) -> LinkEdge {
    LinkEdge { key, source, target }
}

/// The outer links of a style's topology (§2.1).
pub fn outer_links(style: Style) -> &'static [LinkEdge] {
    const SEQUENTIAL: [LinkEdge; 3] = [
        edge("outer_12", Role::Planner, Role::Critic),
        edge("outer_23", Role::Critic, Role::Solver),
        edge("outer_31", Role::Solver, Role::Planner),
    ];
    const MIXTURE: [LinkEdge; 6] = [
        edge("outer_1s", Role::Math, Role::Summarizer),
        edge("outer_2s", Role::Code, Role::Summarizer),
        edge("outer_3s", Role::Science, Role::Summarizer),
        edge("outer_s1", Role::Summarizer, Role::Math),
        edge("outer_s2", Role::Summarizer, Role::Code),
        edge("outer_s3", Role::Summarizer, Role::Science),
    ];
    const DISTILLATION: [LinkEdge; 2] =
        [edge("outer_el", Role::Expert, Role::Learner), edge("outer_le", Role::Learner, Role::Expert)];
    const DELIBERATION: [LinkEdge; 2] =
        [edge("outer_rt", Role::Reflector, Role::Toolcaller), edge("outer_tr", Role::Toolcaller, Role::Reflector)];
    match style {
        Style::SequentialLight | Style::SequentialScaled => &SEQUENTIAL,
        Style::Mixture => &MIXTURE,
        Style::Distillation => &DISTILLATION,
        Style::Deliberation => &DELIBERATION,
    }
}
