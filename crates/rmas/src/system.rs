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
//! Roles per family: sequential `planner, critic, solver`; mixture `math, code, science,
//! summarizer`; distillation `expert, learner`; deliberation `reflector, toolcaller` (the last one
//! is the final agent). The family fixes the round loop and the outer links that must exist.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::prelude::Backend;
use serde::Deserialize;

use crate::error::{Result, RmasError};
use crate::hub::{FileSource, Hub, LocalDir};
use crate::link::{InnerLink, OUTER_LINK_TYPE, OuterLink};

/// The outer-link manifest file of an outer repo.
pub const OUTER_MANIFEST: &str = "outerlink_config.json";
/// The per-task inner-link map of sequential / distillation agents.
pub const INNER_LINK_CONFIG: &str = "innerlink_config.json";

const AGENT_FILES: [&str; 3] = ["config.json", "tokenizer.json", "tokenizer_config.json"];
const OPTIONAL_AGENT_FILES: [&str; 2] = ["generation_config.json", "chat_template.jinja"];

/// A directed outer link of a family's topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkEdge {
    /// Legacy key (`outer_12`, …).
    pub key: &'static str,
    /// Sending role.
    pub source: &'static str,
    /// Receiving role.
    pub target: &'static str,
}

const fn edge(key: &'static str, source: &'static str, target: &'static str) -> LinkEdge {
    LinkEdge {
        key,
        source,
        target,
    }
}

/// The agent-graph topology of a style (fixes roles, round loop and outer links).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// planner → critic → solver, solver → planner.
    Sequential,
    /// math, code, science → summarizer, summarizer → each expert.
    Mixture,
    /// expert → learner, learner → expert.
    Distillation,
    /// reflector → toolcaller, toolcaller → reflector (tools in the final generation).
    Deliberation,
}

impl Family {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sequential => "sequential",
            Self::Mixture => "mixture",
            Self::Distillation => "distillation",
            Self::Deliberation => "deliberation",
        }
    }

    /// Role keys in pipeline order; the last one is the final agent.
    pub fn roles(self) -> &'static [&'static str] {
        match self {
            Self::Sequential => &["planner", "critic", "solver"],
            Self::Mixture => &["math", "code", "science", "summarizer"],
            Self::Distillation => &["expert", "learner"],
            Self::Deliberation => &["reflector", "toolcaller"],
        }
    }

    /// The role that generates the final text.
    pub fn final_role(self) -> &'static str {
        self.roles().last().copied().unwrap_or_default()
    }

    /// The outer links of the topology (§2.1).
    pub fn outer_links(self) -> &'static [LinkEdge] {
        const SEQUENTIAL: [LinkEdge; 3] = [
            edge("outer_12", "planner", "critic"),
            edge("outer_23", "critic", "solver"),
            edge("outer_31", "solver", "planner"),
        ];
        const MIXTURE: [LinkEdge; 6] = [
            edge("outer_1s", "math", "summarizer"),
            edge("outer_2s", "code", "summarizer"),
            edge("outer_3s", "science", "summarizer"),
            edge("outer_s1", "summarizer", "math"),
            edge("outer_s2", "summarizer", "code"),
            edge("outer_s3", "summarizer", "science"),
        ];
        const DISTILLATION: [LinkEdge; 2] = [
            edge("outer_el", "expert", "learner"),
            edge("outer_le", "learner", "expert"),
        ];
        const DELIBERATION: [LinkEdge; 2] = [
            edge("outer_rt", "reflector", "toolcaller"),
            edge("outer_tr", "toolcaller", "reflector"),
        ];
        match self {
            Self::Sequential => &SEQUENTIAL,
            Self::Mixture => &MIXTURE,
            Self::Distillation => &DISTILLATION,
            Self::Deliberation => &DELIBERATION,
        }
    }

    /// Whether inner links are resolved per task (sequential, distillation; §2.4).
    pub fn task_scoped(self) -> bool {
        matches!(self, Self::Sequential | Self::Distillation)
    }
}

impl FromStr for Family {
    type Err = RmasError;

    fn from_str(s: &str) -> Result<Self> {
        [
            Self::Sequential,
            Self::Mixture,
            Self::Distillation,
            Self::Deliberation,
        ]
        .into_iter()
        .find(|f| f.name().eq_ignore_ascii_case(s.trim()))
        .ok_or_else(|| RmasError::UnknownFamily(s.to_string()))
    }
}

/// One of the five released systems (§2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Style {
    /// Qwen3-1.7B planner, Llama-3.2-1B critic, Qwen2.5-Math-1.5B solver.
    SequentialLight,
    /// Gemma-3-4B planner, Llama-3.2-3B critic, Qwen3.5-4B solver.
    SequentialScaled,
    /// Math / code / science experts and a Qwen3.5-2B summarizer.
    Mixture,
    /// Qwen3.5-9B expert, Qwen3.5-4B learner.
    Distillation,
    /// Qwen3.5-4B reflector and tool-calling Qwen3.5-4B.
    Deliberation,
}

impl Style {
    /// All released styles.
    pub const ALL: [Style; 5] = [
        Self::SequentialLight,
        Self::SequentialScaled,
        Self::Mixture,
        Self::Distillation,
        Self::Deliberation,
    ];

    /// The CLI name (`sequential-light`).
    pub fn cli_name(self) -> &'static str {
        match self {
            Self::SequentialLight => "sequential-light",
            Self::SequentialScaled => "sequential-scaled",
            Self::Mixture => "mixture",
            Self::Distillation => "distillation",
            Self::Deliberation => "deliberation",
        }
    }

    /// The reference code's style key (`sequential_light`).
    pub fn reference_name(self) -> &'static str {
        match self {
            Self::SequentialLight => "sequential_light",
            Self::SequentialScaled => "sequential_scaled",
            other => other.cli_name(),
        }
    }

    /// The topology.
    pub fn family(self) -> Family {
        match self {
            Self::SequentialLight | Self::SequentialScaled => Family::Sequential,
            Self::Mixture => Family::Mixture,
            Self::Distillation => Family::Distillation,
            Self::Deliberation => Family::Deliberation,
        }
    }

    /// `(role, repo id)` per agent, in [`Family::roles`] order.
    pub fn agent_repos(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::SequentialLight => &[
                (
                    "planner",
                    "RecursiveMAS/Sequential-Light-Planner-Qwen3-1.7B",
                ),
                ("critic", "RecursiveMAS/Sequential-Light-Critic-Llama3.2-1B"),
                (
                    "solver",
                    "RecursiveMAS/Sequential-Light-Solver-Qwen2.5-Math-1.5B",
                ),
            ],
            Self::SequentialScaled => &[
                (
                    "planner",
                    "RecursiveMAS/Sequential-Scaled-Planner-Gemma3-4B",
                ),
                (
                    "critic",
                    "RecursiveMAS/Sequential-Scaled-Critic-Llama3.2-3B",
                ),
                ("solver", "RecursiveMAS/Sequential-Scaled-Solver-Qwen3.5-4B"),
            ],
            Self::Mixture => &[
                (
                    "math",
                    "RecursiveMAS/Mixture-Math-DeepSeek-R1-Distill-Qwen-1.5B",
                ),
                ("code", "RecursiveMAS/Mixture-Code-Qwen2.5-Coder-3B"),
                ("science", "RecursiveMAS/Mixture-Science-BioMistral-7B"),
                ("summarizer", "RecursiveMAS/Mixture-Summarizer-Qwen3.5-2B"),
            ],
            Self::Distillation => &[
                ("expert", "RecursiveMAS/Distillation-Expert-Qwen3.5-9B"),
                ("learner", "RecursiveMAS/Distillation-Learner-Qwen3.5-4B"),
            ],
            Self::Deliberation => &[
                (
                    "reflector",
                    "RecursiveMAS/Deliberation-Reflector-Qwen3.5-4B",
                ),
                (
                    "toolcaller",
                    "RecursiveMAS/Deliberation-Toolcaller-Qwen3.5-4B",
                ),
            ],
        }
    }

    /// The repo holding the outer links and their manifest.
    pub fn outer_repo(self) -> &'static str {
        match self {
            Self::SequentialLight => "RecursiveMAS/Sequential-Light-Outerlinks",
            Self::SequentialScaled => "RecursiveMAS/Sequential-Scaled-Outerlinks",
            Self::Mixture => "RecursiveMAS/Mixture-Outerlinks",
            Self::Distillation => "RecursiveMAS/Distillation-Outerlinks",
            Self::Deliberation => "RecursiveMAS/Deliberation-Outerlinks",
        }
    }

    /// The role that generates the final text.
    pub fn final_role(self) -> &'static str {
        self.family().final_role()
    }
}

impl FromStr for Style {
    type Err = RmasError;

    /// Accepts CLI names (`sequential-light`) and reference keys (`sequential_light`), any case.
    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim().replace('_', "-");
        Self::ALL
            .into_iter()
            .find(|style| style.cli_name().eq_ignore_ascii_case(&wanted))
            .ok_or_else(|| RmasError::UnknownStyle(s.to_string()))
    }
}

impl fmt::Display for Style {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cli_name())
    }
}

/// Which trained link set to use (§2.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Task {
    /// Math and multiple-choice datasets.
    #[default]
    Math,
    /// Code datasets (MBPP+).
    Code,
}

impl Task {
    /// `code` for `mbppplus` / `evalplus/mbppplus`, else `math`.
    pub fn from_dataset(dataset: &str) -> Self {
        match dataset.trim() {
            "mbppplus" | "evalplus/mbppplus" => Self::Code,
            _ => Self::Math,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Math => "math",
            Self::Code => "code",
        }
    }
}

impl FromStr for Task {
    type Err = RmasError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "math" => Ok(Self::Math),
            "code" => Ok(Self::Code),
            _ => Err(RmasError::UnknownTask(s.to_string())),
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One resolved agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSpec {
    /// Role key (`planner`, `math`, …).
    pub role: String,
    /// Where it came from (repo id or directory), for messages.
    pub source: String,
    /// Local checkpoint directory (`config.json`, `model.safetensors`, tokenizer files).
    pub dir: PathBuf,
    /// Local inner link file.
    pub inner_link: PathBuf,
}

impl AgentSpec {
    /// Checks that the inner link width equals the agent's hidden size.
    pub fn check_inner_dim(&self, link_dim: usize, hidden: &BTreeMap<String, usize>) -> Result<()> {
        let link = format!("inner link of `{}`", self.role);
        check_dim(&link, "in_dim", link_dim, "agent", &self.role, hidden)
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
    pub source_role: String,
    /// Receiving role.
    pub target_role: String,
}

impl OuterLinkSpec {
    /// Checks `in_dim` against the sender's and `out_dim` against the receiver's hidden size.
    pub fn check_dims(
        &self,
        in_dim: usize,
        out_dim: usize,
        hidden: &BTreeMap<String, usize>,
    ) -> Result<()> {
        let link = format!("outer link `{}`", self.key);
        check_dim(
            &link,
            "out_dim",
            out_dim,
            "receiving agent",
            &self.target_role,
            hidden,
        )?;
        check_dim(
            &link,
            "in_dim",
            in_dim,
            "source agent",
            &self.source_role,
            hidden,
        )
    }
}

fn check_dim(
    link: &str,
    side: &'static str,
    link_dim: usize,
    relation: &'static str,
    role: &str,
    hidden: &BTreeMap<String, usize>,
) -> Result<()> {
    let &size = hidden.get(role).ok_or_else(|| RmasError::InvalidSystem {
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
    /// The topology.
    pub family: Family,
    /// The task whose links were resolved.
    pub task: Task,
    /// Agents in [`Family::roles`] order.
    pub agents: Vec<AgentSpec>,
    /// Outer links keyed by legacy key.
    pub outer_links: BTreeMap<String, OuterLinkSpec>,
}

impl SystemSpec {
    /// Resolves a released style through the hub (downloads unless offline).
    pub fn resolve_style(hub: &Hub, style: Style, task: Task) -> Result<Self> {
        let mut agents = Vec::new();
        for (role, repo) in style.agent_repos() {
            agents.push(resolve_agent(
                role,
                &hub.repo(repo),
                None,
                style.family(),
                task,
            )?);
        }
        let outer = resolve_manifest_links(&hub.repo(style.outer_repo()), task)?;
        assemble(style.cli_name(), style.family(), task, agents, outer)
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
    pub fn agent(&self, role: &str) -> Option<&AgentSpec> {
        self.agents.iter().find(|a| a.role == role)
    }

    /// The agent that generates the final text.
    pub fn final_agent(&self) -> Option<&AgentSpec> {
        self.agent(self.family.final_role())
    }

    /// Hidden size per role, read from each agent's `config.json`.
    pub fn hidden_sizes(&self) -> Result<BTreeMap<String, usize>> {
        self.agents
            .iter()
            .map(|a| {
                Ok((
                    a.role.clone(),
                    read_hidden_size(&a.dir.join("config.json"))?,
                ))
            })
            .collect()
    }

    /// Loads every inner link, checking its width against `hidden`.
    pub fn load_inner_links<B: Backend>(
        &self,
        hidden: &BTreeMap<String, usize>,
        device: &B::Device,
    ) -> Result<BTreeMap<String, InnerLink<B>>> {
        let mut links = BTreeMap::new();
        for agent in &self.agents {
            let link = InnerLink::load(&agent.inner_link, device)?;
            agent.check_inner_dim(link.in_dim(), hidden)?;
            links.insert(agent.role.clone(), link);
        }
        Ok(links)
    }

    /// Loads every outer link, checking both widths against `hidden`.
    pub fn load_outer_links<B: Backend>(
        &self,
        hidden: &BTreeMap<String, usize>,
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
        task: task.map_or("none", Task::name).into(),
        tried,
    })
}

/// The file named by `tasks[task]["adapter.pt"]` (default `adapter.pt`), if the task is listed.
fn inner_config_entry(path: &Path, task: Task) -> Result<Option<String>> {
    let json = read_json(path, "inner link config")?;
    let Some(entry) = json.get("tasks").and_then(|t| t.get(task.name())) else {
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
        Some(mut tasks) => match tasks.remove(task.name()) {
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
    role: &str,
    src: &dyn FileSource,
    inner_override: Option<&str>,
    family: Family,
    task: Task,
) -> Result<AgentSpec> {
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
    let inner_link = match inner_override {
        Some(file) => src.get(file)?,
        None => resolve_inner_link(src, family.task_scoped().then_some(task))?,
    };
    Ok(AgentSpec {
        role: role.to_string(),
        source: src.label(),
        dir: config.parent().map(Path::to_path_buf).unwrap_or_default(),
        inner_link,
    })
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
    family: Family,
    task: Task,
    agents: Vec<AgentSpec>,
    mut found: BTreeMap<String, (PathBuf, ManifestEntry)>,
) -> Result<SystemSpec> {
    let available: Vec<String> = found.keys().cloned().collect();
    let mut outer_links = BTreeMap::new();
    for edge in family.outer_links() {
        let (path, entry) = found
            .remove(edge.key)
            .ok_or_else(|| RmasError::MissingOuterLink {
                system: name.to_string(),
                key: edge.key.into(),
                source_role: edge.source.into(),
                target_role: edge.target.into(),
                available: available.clone(),
            })?;
        check_manifest_roles(name, edge, &entry)?;
        let spec = OuterLinkSpec {
            key: edge.key.into(),
            path,
            source_role: edge.source.into(),
            target_role: edge.target.into(),
        };
        outer_links.insert(edge.key.to_string(), spec);
    }
    Ok(SystemSpec {
        name: name.to_string(),
        family,
        task,
        agents,
        outer_links,
    })
}

/// The manifest's roles (if given) must agree with the topology, case-insensitively.
fn check_manifest_roles(system: &str, edge: &LinkEdge, entry: &ManifestEntry) -> Result<()> {
    let agrees = |given: &Option<String>, expected: &str| {
        given
            .as_deref()
            .is_none_or(|g| g.eq_ignore_ascii_case(expected))
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
        let style = self.style.as_deref().map(Style::from_str).transpose()?;
        let family = match (style, self.family.as_deref()) {
            (Some(style), None) => style.family(),
            (None, Some(family)) => family.parse()?,
            _ => return Err(invalid("give exactly one of `style` or `family`".into())),
        };
        let task = self
            .task
            .as_deref()
            .map(Task::from_str)
            .transpose()?
            .unwrap_or_default();
        let sources = self.agent_sources(style, family).map_err(&invalid)?;
        let mut agents = Vec::new();
        for (role, source, inner) in sources {
            let src = file_source(&source, base, hub).map_err(&invalid)?;
            agents.push(resolve_agent(
                role,
                src.as_ref(),
                inner.as_deref(),
                family,
                task,
            )?);
        }
        let outer_source = self
            .outer
            .clone()
            .or_else(|| style.map(|s| s.outer_repo().to_string()));
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
        assemble(&name, family, task, agents, links)
    }

    /// `(role, source, inner link override)` for every role of the family, in order.
    fn agent_sources(
        &self,
        style: Option<Style>,
        family: Family,
    ) -> std::result::Result<Vec<(&'static str, String, Option<String>)>, String> {
        if let Some(entry) = self
            .agents
            .iter()
            .find(|a| !family.roles().contains(&a.role.as_str()))
        {
            return Err(format!(
                "unknown role `{}`; {} roles are {:?}",
                entry.role,
                family.name(),
                family.roles()
            ));
        }
        family
            .roles()
            .iter()
            .map(|&role| {
                let entry = self.agents.iter().rev().find(|a| a.role == role);
                let default = style
                    .and_then(|s| s.agent_repos().iter().find(|(r, _)| *r == role))
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
