//! System description files: custom RecursiveMAS systems assembled from local checkpoints and Hub
//! repos.
//!
//! TOML (or JSON when the file name ends in `.json`, same fields). Relative paths are relative to
//! the file's directory. A `source` is a GGUF file if it names a file ending in `.gguf` (its
//! `inner_link` is then required, relative to the description), a local checkpoint directory if one
//! exists at that path, otherwise a Hub repo id (`org/name`).
//!
//! ```toml
//! name = "my-mixture"          # optional, defaults to the file stem
//! style = "mixture"            # start from a released style (its repos and outer repo) ...
//! # family = "mixture"         # ... or give a bare family: then every role and link is required
//! task = "math"                # optional: math (default) or code
//! outer = "RecursiveMAS/Mixture-Outerlinks"   # optional: repo id or directory holding outerlink_config.json
//!
//! [[agents]]                   # overrides / defines one role of the family
//! role = "science"
//! source = "./my-science-agent"
//! inner_link = "adapter.pt"    # optional: file inside `source`; default: the released resolution rules
//!
//! [[agents]]                   # a GGUF agent (docs/gguf.md): weights, tokenizer and chat template
//! role = "code"
//! source = "./code-agent.Q8_0.gguf"
//! inner_link = "./links/code-adapter.pt"   # required, relative to this file
//!
//! [[outer_links]]              # optional: explicit files, taking precedence over the manifest
//! key = "outer_3s"
//! file = "./links/Science-Summarizer-Outerlink.pt"
//! ```
//!
//! Roles per family ([`Style::roles`], parsed with [`Role::from_str`]): sequential `planner,
//! critic, solver`; mixture `math, code, science, summarizer`; distillation `expert, learner`;
//! deliberation `reflector, toolcaller` (the last one is the final agent). The family fixes the
//! round loop and the outer links that must exist; a bare `sequential` family follows
//! sequential-light (see [`family_style`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rmas_text::{Role, Style, Task};
use serde::Deserialize;

use super::{
    AgentSpec, Checkpoint, ManifestEntry, SystemSpec, assemble, family_style, resolve_agent, resolve_manifest_links,
};
use crate::error::{Result, RmasError};
use crate::hub::Hub;
use crate::source::{FileSource, LocalDir};

impl SystemSpec {
    /// Assembles a system from a description file (see the module docs).
    pub fn from_file(path: &Path, hub: &Hub) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| RmasError::io("system description", path, e))?;
        let desc: SystemFile = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            toml::from_str(&text).map_err(|e| e.to_string())
        }
        .map_err(|msg| RmasError::config("system description", path, msg))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fallback_name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        desc.resolve(base, hub, fallback_name)
    }
}

/// A parsed system description file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SystemFile {
    name: Option<String>,
    style: Option<String>,
    family: Option<String>,
    task: Option<String>,
    outer: Option<String>,
    #[serde(default)]
    agents: Vec<AgentEntry>,
    #[serde(default)]
    outer_links: Vec<OuterEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentEntry {
    role: String,
    source: String,
    inner_link: Option<String>,
}

impl AgentEntry {
    /// The entry's role ([`Role::from_str`]), which must be one of `style`'s.
    fn role_in(&self, style: Style) -> std::result::Result<Role, String> {
        let roles = style.roles();
        self.role.parse::<Role>().ok().filter(|role| roles.contains(role)).ok_or_else(|| {
            let keys: Vec<&str> = roles.iter().map(|r| r.key()).collect();
            let family = style.spec().family;
            format!("unknown role `{}`; {family} roles are {keys:?}", self.role)
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OuterEntry {
    key: String,
    file: PathBuf,
}

impl SystemFile {
    fn resolve(self, base: &Path, hub: &Hub, fallback_name: String) -> Result<SystemSpec> {
        let name = self.name.clone().unwrap_or(fallback_name);
        let invalid = |msg: String| RmasError::InvalidSystem { system: name.clone(), msg };
        let released = self.style.as_deref().map(Style::from_str).transpose()?;
        let style = match (released, self.family.as_deref()) {
            (Some(style), None) => style,
            (None, Some(family)) => family_style(family)?,
            _ => return Err(invalid("give exactly one of `style` or `family`".into())),
        };
        let task = self.task.as_deref().map(Task::from_str).transpose()?.unwrap_or(Task::Math);
        let sources = self.agent_sources(released, style).map_err(&invalid)?;
        let mut agents = Vec::new();
        for (role, source, inner) in sources {
            let gguf = base.join(&source);
            if gguf.is_file() && gguf.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
                let inner = inner.ok_or_else(|| {
                    invalid(format!("GGUF agent `{role}` needs `inner_link`, a file relative to the description"))
                })?;
                let inner_link = base.join(inner);
                std::fs::metadata(&inner_link).map_err(|e| RmasError::io("inner link", &inner_link, e))?;
                agents.push(AgentSpec { role, source, checkpoint: Checkpoint::Gguf(gguf), inner_link });
                continue;
            }
            let src = file_source(&source, base, hub).map_err(&invalid)?;
            agents.push(resolve_agent(role, src.as_ref(), inner.as_deref(), style, task)?);
        }
        let outer_source = self.outer.clone().or_else(|| released.map(|s| s.spec().outer_repo.to_string()));
        let mut links = match outer_source {
            Some(outer) => resolve_manifest_links(file_source(&outer, base, hub).map_err(&invalid)?.as_ref(), task)?,
            None => BTreeMap::new(),
        };
        for entry in self.outer_links {
            let path = base.join(&entry.file);
            std::fs::metadata(&path).map_err(|e| RmasError::io("outer link", &path, e))?;
            let manifest_entry = ManifestEntry {
                legacy_key: entry.key.clone(),
                filename: entry.file.to_string_lossy().into_owned(),
                source_role: None,
                target_role: None,
                adapter_type: None,
            };
            links.insert(entry.key, (path, manifest_entry));
        }
        assemble(&name, style, task, agents, links)
    }

    /// `(role, source, inner link override)` for every role of `style`, in order; sources
    /// default to the `released` style's repos.
    fn agent_sources(
        &self,
        released: Option<Style>,
        style: Style,
    ) -> std::result::Result<Vec<(Role, String, Option<String>)>, String> {
        let entries = self
            .agents
            .iter()
            .map(|entry| Ok((entry.role_in(style)?, entry)))
            .collect::<std::result::Result<Vec<_>, String>>()?;
        style
            .roles()
            .iter()
            .map(|&role| {
                let entry = entries.iter().rev().find(|(r, _)| *r == role).map(|e| e.1);
                let default = released
                    .and_then(|s| s.spec().agents().find(|(r, _)| *r == role))
                    .map(|(_, repo)| repo.to_string());
                let source = entry
                    .map(|e| e.source.clone())
                    .or(default)
                    .ok_or_else(|| format!("no source for role `{role}`"))?;
                Ok((role, source, entry.and_then(|e| e.inner_link.clone())))
            })
            .collect()
    }
}

/// A local directory if `spec` names one (relative to `base`), else a Hub repo id.
fn file_source(spec: &str, base: &Path, hub: &Hub) -> std::result::Result<Box<dyn FileSource>, String> {
    let dir = base.join(spec);
    if dir.is_dir() {
        return Ok(Box::new(LocalDir::new(dir)));
    }
    if is_repo_id(spec) {
        return Ok(Box::new(hub.repo(spec)));
    }
    Err(format!(
        "`{spec}` is neither a `.gguf` file, a directory (under `{}`) nor a repo id `org/name`",
        base.display()
    ))
}

/// `name` or `org/name` with characters `[A-Za-z0-9._-]`, no `..`.
fn is_repo_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.contains("..")
                && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
}
