//! RecursiveMAS systems as specs: the released styles' repos resolved per task, link resolution
//! (docs/algorithm.md, "Resolving a system"), user-written system descriptions ([`describe`]),
//! and loading a spec into an [`crate::engine::LoadedSystem`] ([`load`], [`downloads`]).
//!
//! A [`SystemSpec`] holds resolved local paths: every agent's checkpoint directory and inner link
//! file, and every outer link file keyed by its legacy key (`outer_12`, `outer_1s`, …) with its
//! source and target role. [`SystemSpec::resolve_released`] resolves a released style from any
//! [`FileSource`] (a Hub repo natively through `resolve_style`, downloaded bytes in the browser);
//! `SystemSpec::from_file` ([`describe`], native builds) assembles a custom system from a
//! description file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rmas_models::RmasBackend;
use rmas_models::weights::{INDEX_FILE, SINGLE_FILE, shard_files};
use rmas_text::{LinkEdge, Role, Style, Task};
use serde::Deserialize;

use crate::error::{Result, RmasError};
#[cfg(not(target_family = "wasm"))]
use crate::hub::Hub;
#[cfg(not(target_family = "wasm"))]
use crate::link::InnerLink;
use crate::link::{OUTER_LINK_TYPE, OuterLink};
use crate::source::FileSource;

#[cfg(not(target_family = "wasm"))]
pub mod describe;
pub mod downloads;
#[cfg(not(target_family = "wasm"))]
pub mod load;

/// The outer-link manifest file of an outer repo.
pub const OUTER_MANIFEST: &str = "outerlink_config.json";
/// The per-task inner-link map of sequential / distillation agents.
pub const INNER_LINK_CONFIG: &str = "innerlink_config.json";

const AGENT_FILES: [&str; 3] = ["config.json", "tokenizer.json", "tokenizer_config.json"];
const OPTIONAL_AGENT_FILES: [&str; 2] = ["generation_config.json", "chat_template.jinja"];

/// The style whose topology a bare family name (any case) stands for; `sequential` gives
/// sequential-light (both sequential styles share roles, links and prompts).
pub fn family_style(name: &str) -> Result<Style> {
    Style::ALL
        .into_iter()
        .find(|style| style.spec().family.eq_ignore_ascii_case(name.trim()))
        .ok_or_else(|| RmasError::UnknownFamily(name.to_string()))
}

/// Where an agent's model, tokenizer and chat template come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    /// An HF checkpoint directory (`config.json`, `model.safetensors`, tokenizer files).
    Dir(PathBuf),
    /// One GGUF file holding all three (docs/gguf.md); native builds only.
    Gguf(PathBuf),
}

impl Checkpoint {
    /// The model's hidden size, from `config.json` or the GGUF header.
    #[cfg(not(target_family = "wasm"))]
    pub fn hidden_size(&self) -> Result<usize> {
        match self {
            Self::Dir(dir) => read_hidden_size(&dir.join("config.json")),
            Self::Gguf(path) => Ok(rmas_models::gguf::GgufFile::open(path)?.config()?.hidden_size),
        }
    }
}

/// One resolved agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSpec {
    /// Role.
    pub role: Role,
    /// Where it came from (repo id, directory or file), for messages.
    pub source: String,
    /// Local checkpoint.
    pub checkpoint: Checkpoint,
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
    pub fn check_dims(&self, in_dim: usize, out_dim: usize, hidden: &BTreeMap<Role, usize>) -> Result<()> {
        let link = format!("outer link `{}`", self.key);
        check_dim(&link, "out_dim", out_dim, "receiving agent", self.target_role, hidden)?;
        check_dim(&link, "in_dim", in_dim, "source agent", self.source_role, hidden)
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
    #[cfg(not(target_family = "wasm"))]
    pub fn resolve_style(hub: &Hub, style: Style, task: Task) -> Result<Self> {
        Self::resolve_released(style, task, &|repo| Box::new(hub.repo(repo)))
    }

    /// Resolves a released style with `open` giving the source of each of its repo ids.
    pub fn resolve_released<'s>(
        style: Style,
        task: Task,
        open: &dyn Fn(&'static str) -> Box<dyn FileSource + 's>,
    ) -> Result<Self> {
        let spec = style.spec();
        let agents = spec
            .agents()
            .map(|(role, repo)| resolve_agent(role, open(repo).as_ref(), None, style, task))
            .collect::<Result<Vec<_>>>()?;
        let outer = resolve_manifest_links(open(spec.outer_repo).as_ref(), task)?;
        assemble(style.cli_name(), style, task, agents, outer)
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
    #[cfg(not(target_family = "wasm"))]
    pub fn hidden_sizes(&self) -> Result<BTreeMap<Role, usize>> {
        self.agents.iter().map(|a| Ok((a.role, a.checkpoint.hidden_size()?))).collect()
    }

    /// Loads every inner link, checking its width against `hidden`.
    #[cfg(not(target_family = "wasm"))]
    pub fn load_inner_links<B: RmasBackend>(
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

    /// Loads every outer link with `load(path)`, checking both widths against `hidden`.
    pub fn load_outer_links<B: RmasBackend>(
        &self,
        hidden: &BTreeMap<Role, usize>,
        load: impl Fn(&Path) -> Result<OuterLink<B>>,
    ) -> Result<BTreeMap<String, OuterLink<B>>> {
        let mut links = BTreeMap::new();
        for (key, spec) in &self.outer_links {
            let link = load(&spec.path)?;
            spec.check_dims(link.in_dim(), link.out_dim(), hidden)?;
            links.insert(key.clone(), link);
        }
        Ok(links)
    }
}

/// The hidden size of the model whose `config.json` is at `config` (parsed as the model loader parses it).
#[cfg(not(target_family = "wasm"))]
pub fn read_hidden_size(config: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(config).map_err(|e| RmasError::io("model config", config, e))?;
    Ok(rmas_models::config::parse(&text, config)?.hidden_size)
}

/// Resolves an agent's inner link file as the reference does (docs/algorithm.md, "Resolving a system"): `innerlink_config.json`'s
/// `tasks[task]["adapter.pt"]`, then `adapter({task}).pt`, then `adapter.pt`.
pub fn resolve_inner_link(src: &dyn FileSource, task: Option<Task>) -> Result<PathBuf> {
    let mut tried = Vec::new();
    if let Some(task) = task {
        if src.exists(INNER_LINK_CONFIG)? {
            tried.push(format!("{INNER_LINK_CONFIG} tasks.{task}"));
            let config = src.get(INNER_LINK_CONFIG)?;
            if let Some(file) = inner_config_entry(src, &config, task)? {
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
    Err(RmasError::NoInnerLink { source_label: src.label(), task: task.map_or("none", Task::key).into(), tried })
}

/// The file named by `tasks[task]["adapter.pt"]` (default `adapter.pt`), if the task is listed.
fn inner_config_entry(src: &dyn FileSource, path: &Path, task: Task) -> Result<Option<String>> {
    let json = read_json(src, path, "inner link config")?;
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

/// Parses an outer manifest: `tasks[task].adapters` if it is task-scoped, else `adapters`.
pub fn parse_outer_manifest(text: &str, path: &Path, task: Task) -> Result<Vec<ManifestEntry>> {
    let err = |msg: String| RmasError::config("outer manifest", path, msg);
    let manifest: Manifest = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
    let entries = match manifest.tasks {
        Some(mut tasks) => match tasks.remove(task.key()) {
            Some(scoped) => scoped.adapters,
            None => {
                let available: Vec<&String> = tasks.keys().collect();
                return Err(err(format!("no adapters for task `{task}` (tasks: {available:?})")));
            }
        },
        None => manifest.adapters.unwrap_or_default(),
    };
    if entries.is_empty() {
        return Err(err(format!("no outer adapters listed for task `{task}`")));
    }
    if let Some(bad) = entries.iter().find(|e| e.adapter_type.as_deref().is_some_and(|t| t != OUTER_LINK_TYPE)) {
        return Err(err(format!(
            "`{}` has adapter_type {:?}; only {OUTER_LINK_TYPE} supported",
            bad.legacy_key, bad.adapter_type
        )));
    }
    Ok(entries)
}

/// Reads the manifest of an outer repo / directory and fetches every listed link file.
fn resolve_manifest_links(src: &dyn FileSource, task: Task) -> Result<BTreeMap<String, (PathBuf, ManifestEntry)>> {
    if !src.exists(OUTER_MANIFEST)? {
        return Err(RmasError::MissingManifest { source_label: src.label() });
    }
    let path = src.get(OUTER_MANIFEST)?;
    let text = src.read_text(&path, "outer manifest")?;
    let mut links = BTreeMap::new();
    for entry in parse_outer_manifest(&text, &path, task)? {
        let file = src.get(&entry.filename)?;
        if links.insert(entry.legacy_key.clone(), (file, entry.clone())).is_some() {
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
    Ok(AgentSpec { role, source: src.label(), checkpoint: Checkpoint::Dir(dir), inner_link })
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
    if src.exists(SINGLE_FILE)? {
        return src.get(SINGLE_FILE).map(drop);
    }
    let index = src.get(INDEX_FILE)?;
    let shards = shard_files(&src.read_text(&index, "weight index")?, &index)?;
    shards.iter().try_for_each(|shard| src.get(shard).map(drop))
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
    for edge in style.spec().edges {
        let (path, entry) = found.remove(edge.key).ok_or_else(|| RmasError::MissingOuterLink {
            system: name.to_string(),
            key: edge.key.into(),
            source_role: edge.source.to_string(),
            target_role: edge.target.to_string(),
            available: available.clone(),
        })?;
        check_manifest_roles(name, edge, &entry)?;
        let spec = OuterLinkSpec { key: edge.key.into(), path, source_role: edge.source, target_role: edge.target };
        specs.insert(edge.key.to_string(), spec);
    }
    Ok(SystemSpec { name: name.to_string(), style, task, agents, outer_links: specs })
}

/// The manifest's roles (if given) must name the topology's roles ([`Role::from_str`]).
fn check_manifest_roles(system: &str, edge: &LinkEdge, entry: &ManifestEntry) -> Result<()> {
    let agrees = |given: &Option<String>, expected: Role| {
        given.as_deref().is_none_or(|g| g.parse::<Role>().is_ok_and(|role| role == expected))
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

/// Parses a fetched JSON file of `src` (`what` names it in errors).
fn read_json(src: &dyn FileSource, path: &Path, what: &'static str) -> Result<serde_json::Value> {
    serde_json::from_str(&src.read_text(path, what)?).map_err(|e| RmasError::config(what, path, e.to_string()))
}
