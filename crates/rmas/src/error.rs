//! The crate's error type: every variant names the file, tensor, link, role or value involved and
//! what was expected.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = RmasError> = std::result::Result<T, E>;

/// Everything that can go wrong while resolving, loading or validating a RecursiveMAS system.
#[derive(Debug, thiserror::Error)]
pub enum RmasError {
    /// An agent model failed to load or run.
    #[error(transparent)]
    Model(#[from] rmas_models::ModelError),

    /// A file could not be read (missing, unreadable, ...).
    #[error("cannot read {what} `{path}`: {source}")]
    Io {
        /// What the file is (e.g. "inner link", "outer manifest").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// A JSON or TOML file does not parse or lacks required fields.
    #[error("invalid {what} `{path}`: {msg}")]
    Config {
        /// What the file is (e.g. "outer manifest `outerlink_config.json`").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },

    /// A link checkpoint is not a readable PyTorch / safetensors state dict (corrupt, truncated, ...).
    #[error("cannot load {link} link from `{path}`: {msg}")]
    LinkFormat {
        /// "inner" or "outer".
        link: &'static str,
        /// The checkpoint (or "<bytes>" for in-memory data).
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },

    /// A checkpoint is not of the only supported link type.
    #[error("{path}: only {supported} supported: missing tensors {missing:?} (found {found:?})")]
    UnsupportedLinkType {
        /// The checkpoint.
        path: PathBuf,
        /// The supported adapter type (`ln_res_adapter` / `outer_ln_res_adapter`).
        supported: &'static str,
        /// Required tensors or tensor prefixes that are absent.
        missing: Vec<String>,
        /// Tensor names present in the file.
        found: Vec<String>,
    },

    /// Strict loading failed: the state dict has missing or unexpected tensors.
    #[error("{path}: {link_type} state dict mismatch: missing {missing:?}, unexpected {unexpected:?}")]
    LinkKeys {
        /// The checkpoint.
        path: PathBuf,
        /// The adapter type being loaded.
        link_type: &'static str,
        /// Expected tensors that are absent.
        missing: Vec<String>,
        /// Tensors that should not be there.
        unexpected: Vec<String>,
    },

    /// A link tensor has the wrong shape.
    #[error("{path}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    LinkShape {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The expected shape.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },

    /// A file is absent from the local Hugging Face cache while offline.
    #[error(
        "`{file}` of repo `{repo}` is not in the Hugging Face cache `{cache_dir}` and HF_HUB_OFFLINE is set; \
         unset HF_HUB_OFFLINE to download it, or download it first (e.g. `hf download {repo} {file}`)"
    )]
    HubOffline {
        /// The repo id.
        repo: String,
        /// The file inside the repo.
        file: String,
        /// The cache directory that was searched.
        cache_dir: PathBuf,
    },

    /// Talking to the Hugging Face Hub failed.
    #[error("hub request for `{file}` of repo `{repo}` failed: {msg}")]
    HubRequest {
        /// The repo id.
        repo: String,
        /// The file (or "<repo info>").
        file: String,
        /// The underlying error.
        msg: String,
    },

    /// A file name taken from a manifest or description is not a plain relative path.
    #[error("invalid file name `{name}` in {context}: must be a relative path without `..`")]
    InvalidFileName {
        /// The offending name.
        name: String,
        /// Where it came from.
        context: String,
    },

    /// A file of a source that fetches asynchronously (the browser) has not been downloaded yet.
    #[error("`{file}` of `{repo}` has not been downloaded yet")]
    NotFetched {
        /// The repo id.
        repo: String,
        /// The file inside it.
        file: String,
    },

    /// No inner link file could be resolved for an agent.
    #[error("no inner link found in {source_label} for task {task}: tried {tried:?}")]
    NoInnerLink {
        /// The repo id or directory.
        source_label: String,
        /// The task ("none" for task-less styles).
        task: String,
        /// The file names that were tried, in order.
        tried: Vec<String>,
    },

    /// The outer-link manifest `outerlink_config.json` is missing.
    #[error("outer-link manifest `outerlink_config.json` not found in {source_label}")]
    MissingManifest {
        /// The repo id or directory searched.
        source_label: String,
    },

    /// An outer link required by the system's topology is absent.
    #[error("system `{system}` has no outer link `{key}` ({source_role} -> {target_role}); available: {available:?}")]
    MissingOuterLink {
        /// The system name.
        system: String,
        /// The legacy key (`outer_12`, `outer_1s`, ...).
        key: String,
        /// The sending role.
        source_role: String,
        /// The receiving role.
        target_role: String,
        /// The keys that were found.
        available: Vec<String>,
    },

    /// A style, role, task or dataset name is unknown, or another text-layer failure.
    #[error(transparent)]
    Text(#[from] rmas_text::TextError),

    /// A string does not name a known family.
    #[error("unknown family `{0}`; expected one of sequential, mixture, distillation, deliberation")]
    UnknownFamily(String),

    /// A system description has the wrong roles or references an unknown role.
    #[error("system `{system}`: {msg}")]
    InvalidSystem {
        /// The system name.
        system: String,
        /// What is wrong.
        msg: String,
    },

    /// Model-written code cannot be isolated on this machine (and isolation was not turned off).
    #[error("{0}")]
    Sandbox(String),

    /// The run was stopped from outside (a client went away, a time limit passed).
    #[error("the run was cancelled")]
    Cancelled,

    /// A run option is out of its range.
    #[error("run option `{option}` {msg}")]
    InvalidOption {
        /// The option (`rounds`).
        option: &'static str,
        /// What is wrong, with the value given.
        msg: String,
    },

    /// A link's width does not match the hidden size of the agent it connects.
    #[error("{link} has {side} {link_dim}, but {relation} `{agent}` has hidden size {hidden}")]
    LinkDimMismatch {
        /// The link (`outer link `outer_12``, `inner link of `planner``).
        link: String,
        /// "in_dim" or "out_dim".
        side: &'static str,
        /// The link's width on that side.
        link_dim: usize,
        /// How the agent relates to the link ("receiving agent", "source agent", "agent").
        relation: &'static str,
        /// The agent's role.
        agent: String,
        /// The agent's hidden size.
        hidden: usize,
    },
}

impl RmasError {
    /// Builds an [`RmasError::Io`] for `path`.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { what, path: path.into(), source }
    }

    /// Builds an [`RmasError::Config`] for `path`.
    pub fn config(what: &'static str, path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::Config { what, path: path.into(), msg: msg.into() }
    }
}
