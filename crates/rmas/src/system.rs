//! RecursiveMAS systems: the five released styles, task and link resolution (recursivemas.md §2),
//! and user-written system descriptions.
//!
//! A [`SystemSpec`] holds resolved local paths: every agent's checkpoint directory and inner link
//! file, and every outer link file keyed by its legacy key (`outer_12`, `outer_1s`, …) with its
//! source and target role. [`SystemSpec::resolve_style`] resolves a released style through a
//! [`Hub`]; [`SystemSpec::from_file`] assembles a custom system from a description file.
//!
//! # System description files
//!
//! TOML (or JSON when the file name ends in `.json`, same fields). Relative paths are relative to
//! the file's directory. A `source` is a local checkpoint directory if one exists at that path,
//! otherwise a Hub repo id (`org/name`).
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
//! inner_link = "adapter.pt"    # optional: file inside `source`; default: §2.4 resolution
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

use burn::prelude::Backend;
use rmas_text::prompts::{Role, Style, Task};
use serde::Deserialize;

use crate::error::{Result, RmasError};
use crate::hub::{FileSource, Hub, LocalDir};
use crate::link::{InnerLink, OUTER_LINK_TYPE, OuterLink};
pub use crate::topology::{LinkEdge, outer_links};

/// The outer-link manifest file of an outer repo.
pub const OUTER_MANIFEST: &str = "outerlink_config.json";
/// The per-task inner-link map of sequential / distillation agents.
pub const INNER_LINK_CONFIG: &str = "innerlink_config.json";

const AGENT_FILES: [&str; 3] = ["config.json", "tokenizer.json", "tokenizer_config.json"];
const OPTIONAL_AGENT_FILES: [&str; 2] = ["generation_config.json", "chat_template.jinja"];

/// The topology family of a style as the official loader names it (`sequential` for both
/// sequential styles, else the style key).
pub fn family_name(style: Style) -> &'static str {
    match style {
        Style::SequentialLight | Style::SequentialScaled => "sequential",
        other => other.key(),
    }
}

/// The style whose topology a bare family name (any case) stands for; `sequential` gives
/// sequential-light (both sequential styles share roles, links and prompts).
pub fn family_style(name: &str) -> Result<Style> {
    Style::ALL
        .into_iter()
        .find(|style| family_name(*style).eq_ignore_ascii_case(name.trim()))
        .ok_or_else(|| RmasError::UnknownFamily(name.to_string()))
}

/// `(role, repo id)` per agent of a released style, in [`Style::roles`] order.
pub fn agent_repos(style: Style) -> &'static [(Role, &'static str)] {
    match style {
        Style::SequentialLight => &[
            (
                Role::Planner,
                "RecursiveMAS/Sequential-Light-Planner-Qwen3-1.7B",
            ),
            (
                Role::Critic,
                "RecursiveMAS/Sequential-Light-Critic-Llama3.2-1B",
            ),
            (
                Role::Solver,
                "RecursiveMAS/Sequential-Light-Solver-Qwen2.5-Math-1.5B",
            ),
        ],
        Style::SequentialScaled => &[
            (
                Role::Planner,
                "RecursiveMAS/Sequential-Scaled-Planner-Gemma3-4B",
            ),
            (
                Role::Critic,
                "RecursiveMAS/Sequential-Scaled-Critic-Llama3.2-3B",
            ),
            (
                Role::Solver,
                "RecursiveMAS/Sequential-Scaled-Solver-Qwen3.5-4B",
            ),
        ],
        Style::Mixture => &[
            (
                Role::Math,
                "RecursiveMAS/Mixture-Math-DeepSeek-R1-Distill-Qwen-1.5B",
            ),
            (Role::Code, "RecursiveMAS/Mixture-Code-Qwen2.5-Coder-3B"),
            (Role::Science, "RecursiveMAS/Mixture-Science-BioMistral-7B"),
            (
                Role::Summarizer,
                "RecursiveMAS/Mixture-Summarizer-Qwen3.5-2B",
            ),
        ],
        Style::Distillation => &[
            (Role::Expert, "RecursiveMAS/Distillation-Expert-Qwen3.5-9B"),
            (
                Role::Learner,
                "RecursiveMAS/Distillation-Learner-Qwen3.5-4B",
            ),
        ],
        Style::Deliberation => &[
            (
                Role::Reflector,
                "RecursiveMAS/Deliberation-Reflector-Qwen3.5-4B",
            ),
            (
                Role::Toolcaller,
                "RecursiveMAS/Deliberation-Toolcaller-Qwen3.5-4B",
            ),
        ],
    }
}

/// The repo holding a released style's outer links and their manifest.
pub fn outer_repo(style: Style) -> &'static str {
    match style {
        Style::SequentialLight => "RecursiveMAS/Sequential-Light-Outerlinks",
        Style::SequentialScaled => "RecursiveMAS/Sequential-Scaled-Outerlinks",
        Style::Mixture => "RecursiveMAS/Mixture-Outerlinks",
        Style::Distillation => "RecursiveMAS/Distillation-Outerlinks",
        Style::Deliberation => "RecursiveMAS/Deliberation-Outerlinks",
    }
}

/// One resolved agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSpec {
    /// Role.
    pub role: Role,
    /// Where it came from (repo id or directory), for messages.
    pub source: String,
    /// Local checkpoint directory (`config.json`, `model.safetensors`, tokenizer files).
    pub dir: PathBuf,
    /// Local inner link file.
    pub inner_link: PathBuf,
}

impl AgentSpec {
    /// Checks that the inner link width equals the agent's hidden size.
    pub fn check_inner_dim(&self, link_dim: usize, hidden: &BTreeMap<Role, usize>) -> Result<()> {
        let link = format!("inner link of `{}`", self.role);
        check_dim(&link, "in_dim", link_dim, "agent", self.role, hidden)
    }
}

/// One resolved outer link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OuterLinkSpec {
    /// Legacy key (`outer_12`, …).
    pub key: String,
    /// Local link file.
    pub path: PathBuf,
    /// Sending role.
    pub source_role: Role,
    /// Receiving role.
    pub target_role: Role,
}

impl OuterLinkSpec {
    /// Checks `in_dim` against the sender's and `out_dim` against the receiver's hidden size.
    pub fn check_dims(
        &self,
        in_dim: usize,
        out_dim: usize,
        hidden: &BTreeMap<Role, usize>,
    ) -> Result<()> {
        let link = format!("outer link `{}`", self.key);
        check_dim(
            &link,
            "out_dim",
            out_dim,
            "receiving agent",
            self.target_role,
            hidden,
        )?;
        check_dim(
            &link,
            "in_dim",
            in_dim,
            "source agent",
            self.source_role,
            hidden,
        )
    }
}

fn check_dim(
    link: &str,
    side: &'static str,
    link_dim: usize,
    relation: &'static str,
    role: Role,
    hidden: &BTreeMap<Role, usize>,
) -> Result<()> {
    let &size = hidden.get(&role).ok_or_else(|| RmasError::InvalidSystem {
        system: link.to_string(),
        msg: format!("no hidden size known for role `{role}`"),
    })?;
    if size == link_dim {
        return Ok(());
    }
    Err(RmasError::LinkDimMismatch {
        link: link.to_string(),
        side,
        link_dim,
        relation,
        agent: role.to_string(),
        hidden: size,
    })
}

/// A fully resolved system: local paths of every checkpoint and link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemSpec {
    /// Style name or the description's name.
    pub name: String,
    /// The style whose topology, prompts and round loop it follows (see [`family_style`]).
    pub style: Style,
    /// The task whose links were resolved.
    pub task: Task,
    /// Agents in [`Style::roles`] order.
    pub agents: Vec<AgentSpec>,
    /// Outer links keyed by legacy key.
    pub outer_links: BTreeMap<String, OuterLinkSpec>,
}

impl SystemSpec {
    /// Resolves a released style through the hub (downloads unless offline).
    pub fn resolve_style(hub: &Hub, style: Style, task: Task) -> Result<Self> {
        let agents = agent_repos(style)
            .iter()
            .map(|&(role, repo)| resolve_agent(role, &hub.repo(repo), None, style, task))
            .collect::<Result<Vec<_>>>()?;
        let outer = resolve_manifest_links(&hub.repo(outer_repo(style)), task)?;
        assemble(style.cli_name(), style, task, agents, outer)
    }

    /// Assembles a system from a description file (see the module docs).
    pub fn from_file(path: &Path, hub: &Hub) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RmasError::io("system description", path, e))?;
        let desc: SystemFile = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            toml::from_str(&text).map_err(|e| e.to_string())
        }
        .map_err(|msg| RmasError::config("system description", path, msg))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fallback_name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        desc.resolve(base, hub, fallback_name)
    }

    /// The agent with role `role`.
    pub fn agent(&self, role: Role) -> Option<&AgentSpec> {
        self.agents.iter().find(|a| a.role == role)
    }

    /// The agent that generates the final text.
    pub fn final_agent(&self) -> Option<&AgentSpec> {
        self.agent(self.style.final_role())
    }

    /// Hidden size per role, read from each agent's `config.json`.
    pub fn hidden_sizes(&self) -> Result<BTreeMap<Role, usize>> {
        self.agents
            .iter()
            .map(|a| Ok((a.role, read_hidden_size(&a.dir.join("config.json"))?)))
            .collect()
    }

    /// Loads every inner link, checking its width against `hidden`.
    pub fn load_inner_links<B: Backend>(
        &self,
        hidden: &BTreeMap<Role, usize>,
        device: &B::Device,
    ) -> Result<BTreeMap<Role, InnerLink<B>>> {
        let mut links = BTreeMap::new();
        for agent in &self.agents {
            let link = InnerLink::load(&agent.inner_link, device)?;
            agent.check_inner_dim(link.in_dim(), hidden)?;
            links.insert(agent.role, link);
        }
        Ok(links)
    }

    /// Loads every outer link, checking both widths against `hidden`.
    pub fn load_outer_links<B: Backend>(
        &self,
        hidden: &BTreeMap<Role, usize>,
        device: &B::Device,
    ) -> Result<BTreeMap<String, OuterLink<B>>> {
        let mut links = BTreeMap::new();
        for (key, spec) in &self.outer_links {
            let link = OuterLink::load(&spec.path, device)?;
            spec.check_dims(link.in_dim(), link.out_dim(), hidden)?;
            links.insert(key.clone(), link);
        }
        Ok(links)
    }
}

/// Reads `hidden_size` (or `text_config.hidden_size`) from a model `config.json`.
pub fn read_hidden_size(config: &Path) -> Result<usize> {
    let json = read_json(config, "model config")?;
    json.get("hidden_size")
        .or_else(|| json.get("text_config").and_then(|t| t.get("hidden_size")))
        .and_then(serde_json::Value::as_u64)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| {
            RmasError::config(
                "model config",
                config,
                "no integer `hidden_size` or `text_config.hidden_size`",
            )
        })
}

/// Resolves an agent's inner link file exactly as §2.4: `innerlink_config.json`'s
/// `tasks[task]["adapter.pt"]`, then `adapter({task}).pt`, then `adapter.pt`.
pub fn resolve_inner_link(src: &dyn FileSource, task: Option<Task>) -> Result<PathBuf> {
    let mut tried = Vec::new();
    if let Some(task) = task {
        if src.exists(INNER_LINK_CONFIG)? {
            tried.push(format!("{INNER_LINK_CONFIG} tasks.{task}"));
            let config = src.get(INNER_LINK_CONFIG)?;
            if let Some(file) = inner_config_entry(&config, task)? {
                return src.get(&file);
            }
        }
        let task_file = format!("adapter({task}).pt");
        if src.exists(&task_file)? {
            return src.get(&task_file);
        }
        tried.push(task_file);
    }
    if src.exists("adapter.pt")? {
        return src.get("adapter.pt");
    }
    tried.push("adapter.pt".into());
    Err(RmasError::NoInnerLink {
        source_label: src.label(),
        task: task.map_or("none", Task::key).into(),
        tried,
    })
}

/// The file named by `tasks[task]["adapter.pt"]` (default `adapter.pt`), if the task is listed.
fn inner_config_entry(path: &Path, task: Task) -> Result<Option<String>> {
    let json = read_json(path, "inner link config")?;
    let Some(entry) = json.get("tasks").and_then(|t| t.get(task.key())) else {
        return Ok(None);
    };
    match entry.get("adapter.pt") {
        None => Ok(Some("adapter.pt".into())),
        Some(serde_json::Value::String(file)) => Ok(Some(file.clone())),
        Some(other) => Err(RmasError::config(
            "inner link config",
            path,
            format!("tasks.{task}.\"adapter.pt\" must be a file name, found {other}"),
        )),
    }
}

/// One adapter entry of `outerlink_config.json`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Legacy key (`outer_12`, …).
    pub legacy_key: String,
    /// File name inside the outer repo.
    pub filename: String,
    /// Sending role as written in the manifest (`Planner`).
    #[serde(default)]
    pub source_role: Option<String>,
    /// Receiving role as written in the manifest.
    #[serde(default)]
    pub target_role: Option<String>,
    /// Adapter type (must be `outer_ln_res_adapter` when present).
    #[serde(default)]
    pub adapter_type: Option<String>,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    adapters: Option<Vec<ManifestEntry>>,
    #[serde(default)]
    tasks: Option<BTreeMap<String, TaskAdapters>>,
}

#[derive(Deserialize)]
struct TaskAdapters {
    #[serde(default)]
    adapters: Vec<ManifestEntry>,
}

/// Parses an outer manifest: `tasks[task].adapters` if it is task-scoped, else `adapters` (§2.4).
pub fn parse_outer_manifest(text: &str, path: &Path, task: Task) -> Result<Vec<ManifestEntry>> {
    let err = |msg: String| RmasError::config("outer manifest", path, msg);
    let manifest: Manifest = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
    let entries = match manifest.tasks {
        Some(mut tasks) => match tasks.remove(task.key()) {
            Some(scoped) => scoped.adapters,
            None => {
                let available: Vec<&String> = tasks.keys().collect();
                return Err(err(format!(
                    "no adapters for task `{task}` (tasks: {available:?})"
                )));
            }
        },
        None => manifest.adapters.unwrap_or_default(),
    };
    if entries.is_empty() {
        return Err(err(format!("no outer adapters listed for task `{task}`")));
    }
    if let Some(bad) = entries.iter().find(|e| {
        e.adapter_type
            .as_deref()
            .is_some_and(|t| t != OUTER_LINK_TYPE)
    }) {
        return Err(err(format!(
            "`{}` has adapter_type {:?}; only {OUTER_LINK_TYPE} supported",
            bad.legacy_key, bad.adapter_type
        )));
    }
    Ok(entries)
}

/// Reads the manifest of an outer repo / directory and fetches every listed link file.
fn resolve_manifest_links(
    src: &dyn FileSource,
    task: Task,
) -> Result<BTreeMap<String, (PathBuf, ManifestEntry)>> {
    if !src.exists(OUTER_MANIFEST)? {
        return Err(RmasError::MissingManifest {
            source_label: src.label(),
        });
    }
    let path = src.get(OUTER_MANIFEST)?;
    let text =
        std::fs::read_to_string(&path).map_err(|e| RmasError::io("outer manifest", &path, e))?;
    let mut links = BTreeMap::new();
    for entry in parse_outer_manifest(&text, &path, task)? {
        let file = src.get(&entry.filename)?;
        if links
            .insert(entry.legacy_key.clone(), (file, entry.clone()))
            .is_some()
        {
            return Err(RmasError::config(
                "outer manifest",
                &path,
                format!("duplicate legacy_key `{}`", entry.legacy_key),
            ));
        }
    }
    Ok(links)
}

/// Fetches an agent's checkpoint files and resolves its inner link.
fn resolve_agent(
    role: Role,
    src: &dyn FileSource,
    inner_override: Option<&str>,
    style: Style,
    task: Task,
) -> Result<AgentSpec> {
    let dir = fetch_model(src)?;
    let inner_link = match inner_override {
        Some(file) => src.get(file)?,
        None => resolve_inner_link(src, style.is_task_scoped().then_some(task))?,
    };
    Ok(AgentSpec { role, source: src.label(), dir, inner_link })
}

/// Fetches a model checkpoint (config, tokenizer files, weights) and returns its directory.
pub fn fetch_model(src: &dyn FileSource) -> Result<PathBuf> {
    let config = src.get("config.json")?;
    for file in AGENT_FILES.iter().skip(1) {
        src.get(file)?;
    }
    for file in OPTIONAL_AGENT_FILES {
        if src.exists(file)? {
            src.get(file)?;
        }
    }
    fetch_weights(src)?;
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// Fetches `model.safetensors`, or the shards listed by `model.safetensors.index.json`.
fn fetch_weights(src: &dyn FileSource) -> Result<()> {
    if src.exists("model.safetensors")? {
        return src.get("model.safetensors").map(drop);
    }
    let index = src.get("model.safetensors.index.json")?;
    let json = read_json(&index, "weight index")?;
    let shards: std::collections::BTreeSet<&str> = json
        .get("weight_map")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| RmasError::config("weight index", &index, "missing `weight_map` object"))?
        .values()
        .filter_map(serde_json::Value::as_str)
        .collect();
    shards
        .into_iter()
        .try_for_each(|shard| src.get(shard).map(drop))
}

/// Checks the topology's outer links against the resolved files and builds the spec.
fn assemble(
    name: &str,
    style: Style,
    task: Task,
    agents: Vec<AgentSpec>,
    mut found: BTreeMap<String, (PathBuf, ManifestEntry)>,
) -> Result<SystemSpec> {
    let available: Vec<String> = found.keys().cloned().collect();
    let mut specs = BTreeMap::new();
    for edge in outer_links(style) {
        let (path, entry) = found
            .remove(edge.key)
            .ok_or_else(|| RmasError::MissingOuterLink {
                system: name.to_string(),
                key: edge.key.into(),
                source_role: edge.source.to_string(),
                target_role: edge.target.to_string(),
                available: available.clone(),
            })?;
        check_manifest_roles(name, edge, &entry)?;
        let spec = OuterLinkSpec {
            key: edge.key.into(),
            path,
            source_role: edge.source,
            target_role: edge.target,
        };
        specs.insert(edge.key.to_string(), spec);
    }
    Ok(SystemSpec {
        name: name.to_string(),
        style,
        task,
        agents,
        outer_links: specs,
    })
}

/// The manifest's roles (if given) must name the topology's roles ([`Role::from_str`]).
fn check_manifest_roles(system: &str, edge: &LinkEdge, entry: &ManifestEntry) -> Result<()> {
    let agrees = |given: &Option<String>, expected: Role| {
        given
            .as_deref()
            .is_none_or(|g| g.parse::<Role>().is_ok_and(|role| role == expected))
    };
    if agrees(&entry.source_role, edge.source) && agrees(&entry.target_role, edge.target) {
        return Ok(());
    }
    Err(RmasError::InvalidSystem {
        system: system.to_string(),
        msg: format!(
            "outer link `{}` connects {:?} -> {:?} in the manifest, expected {} -> {}",
            edge.key, entry.source_role, entry.target_role, edge.source, edge.target
        ),
    })
}

fn read_json(path: &Path, what: &'static str) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| RmasError::io(what, path, e))?;
    serde_json::from_str(&text).map_err(|e| RmasError::config(what, path, e.to_string()))
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
        self.role
            .parse::<Role>()
            .ok()
            .filter(|role| roles.contains(role))
            .ok_or_else(|| {
                let keys: Vec<&str> = roles.iter().map(|r| r.key()).collect();
                let family = family_name(style);
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
        let invalid = |msg: String| RmasError::InvalidSystem {
            system: name.clone(),
            msg,
        };
        let released = self.style.as_deref().map(Style::from_str).transpose()?;
        let style = match (released, self.family.as_deref()) {
            (Some(style), None) => style,
            (None, Some(family)) => family_style(family)?,
            _ => return Err(invalid("give exactly one of `style` or `family`".into())),
        };
        let task = self
            .task
            .as_deref()
            .map(Task::from_str)
            .transpose()?
            .unwrap_or(Task::Math);
        let sources = self.agent_sources(released, style).map_err(&invalid)?;
        let mut agents = Vec::new();
        for (role, source, inner) in sources {
            let src = file_source(&source, base, hub).map_err(&invalid)?;
            agents.push(resolve_agent(
                role,
                src.as_ref(),
                inner.as_deref(),
                style,
                task,
            )?);
        }
        let outer_source = self
            .outer
            .clone()
            .or_else(|| released.map(|s| outer_repo(s).to_string()));
        let mut links = match outer_source {
            Some(outer) => resolve_manifest_links(
                file_source(&outer, base, hub).map_err(&invalid)?.as_ref(),
                task,
            )?,
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
                    .and_then(|s| agent_repos(s).iter().find(|(r, _)| *r == role))
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
fn file_source(
    spec: &str,
    base: &Path,
    hub: &Hub,
) -> std::result::Result<Box<dyn FileSource>, String> {
    let dir = base.join(spec);
    if dir.is_dir() {
        return Ok(Box::new(LocalDir::new(dir)));
    }
    if is_repo_id(spec) {
        return Ok(Box::new(hub.repo(spec)));
    }
    Err(format!(
        "`{spec}` is neither a directory (under `{}`) nor a repo id `org/name`",
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
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
}
