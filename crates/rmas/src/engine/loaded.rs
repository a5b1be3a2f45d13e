//! A loaded system: its agents (resident, or built for each stage by an [`AgentLoader`]) and its
//! outer links keyed by edge.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::Path;

use rmas_models::{Model, RmasBackend};
use rmas_text::{Role, Style, Tokenizer};

use crate::error::{Result, RmasError};
use crate::link::{InnerLink, OuterLink};

/// One agent: a frozen language model, its tokenizer and its inner RecursiveLink.
pub struct Agent<B: RmasBackend> {
    /// The agent's role in its style.
    pub role: Role,
    /// The frozen language model.
    pub model: Model<B>,
    /// Its tokenizer and chat template.
    pub tokenizer: Tokenizer,
    /// Its inner RecursiveLink (last hidden state → next input embedding).
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
}

/// Builds the agents a system does not keep in memory, once for each stage they run
/// (`--offload`: native loading from a system spec, in `system/load.rs`).
pub trait AgentLoader<B: RmasBackend>: Send + Sync {
    /// Builds the agent of `role`.
    fn load(&self, role: Role) -> Result<Agent<B>>;
}

/// An agent for one stage: borrowed from the system, or loaded for the stage alone.
pub(crate) enum AgentRef<'a, B: RmasBackend> {
    Resident(&'a Agent<B>),
    Loaded(Box<Agent<B>>),
}

impl<B: RmasBackend> Deref for AgentRef<'_, B> {
    type Target = Agent<B>;

    fn deref(&self) -> &Agent<B> {
        match self {
            Self::Resident(agent) => agent,
            Self::Loaded(agent) => agent,
        }
    }
}

/// A loaded RecursiveMAS system, ready to run questions ([`crate::engine::Run`]).
pub struct LoadedSystem<B: RmasBackend> {
    /// The style whose table drives its round loop.
    pub style: Style,
    resident: BTreeMap<Role, Agent<B>>,
    loader: Option<Box<dyn AgentLoader<B>>>,
    outer: BTreeMap<String, OuterLink<B>>,
}

impl<B: RmasBackend> LoadedSystem<B> {
    /// A system whose agents are all in memory.
    pub fn new(style: Style, agents: Vec<Agent<B>>, outer: BTreeMap<String, OuterLink<B>>) -> Self {
        let resident = agents.into_iter().map(|a| (a.role, a)).collect();
        Self { style, resident, loader: None, outer }
    }

    /// A system that keeps no agent in memory: `loader` builds each for the stage it runs.
    pub fn offloaded(style: Style, loader: Box<dyn AgentLoader<B>>, outer: BTreeMap<String, OuterLink<B>>) -> Self {
        Self { style, resident: BTreeMap::new(), loader: Some(loader), outer }
    }

    pub(crate) fn agent(&self, role: Role) -> Result<AgentRef<'_, B>> {
        if let Some(agent) = self.resident.get(&role) {
            return Ok(AgentRef::Resident(agent));
        }
        match &self.loader {
            Some(loader) if self.style.roles().contains(&role) => Ok(AgentRef::Loaded(Box::new(loader.load(role)?))),
            _ => Err(RmasError::InvalidSystem {
                system: self.style.to_string(),
                msg: format!("no agent for role `{role}`"),
            }),
        }
    }

    /// The resident agents (offloaded ones are not loaded for this).
    pub fn agents(&self) -> impl Iterator<Item = &Agent<B>> {
        self.resident.values()
    }

    /// The outer links of the style's table that this system has: `(key, from, to)`.
    pub fn links(&self) -> impl Iterator<Item = (&'static str, Role, Role)> + '_ {
        self.style.spec().edges.iter().filter(|e| self.outer.contains_key(e.key)).map(|e| (e.key, e.source, e.target))
    }

    pub(crate) fn outer(&self, key: &str) -> Result<&OuterLink<B>> {
        self.outer.get(key).ok_or_else(|| RmasError::InvalidSystem {
            system: self.style.to_string(),
            msg: format!("no outer link `{key}` (have: {})", self.outer.keys().cloned().collect::<Vec<_>>().join(", ")),
        })
    }
}
