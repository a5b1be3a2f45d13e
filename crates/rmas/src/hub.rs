//! Hugging Face hub access: resolve `repo id + file` to a local path in the standard hub cache.
//!
//! Cache layout: `<cache>/models--<org>--<name>/refs/main` holds the commit id,
//! `snapshots/<commit>/<file>` the files (plain files or symlinks into `blobs/`; both work).
//! Offline (`HF_HUB_OFFLINE=1`) only the cache is consulted; online a cached file is used as is and
//! a missing one is downloaded with `hf-hub` (progress bar on stderr).
//!
//! [`Hub::from_env`] is the only place that reads environment variables; tests build a [`Hub`] for
//! an explicit cache with [`Hub::new`] or [`Hub::from_vars`].

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hf_hub::api::sync::{Api, ApiBuilder};
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Result, RmasError};
use crate::source::{FileSource, check_relative};

/// Connection settings for the Hugging Face Hub and its local cache.
#[derive(Clone, Debug)]
pub struct Hub {
    cache_dir: PathBuf,
    offline: bool,
    endpoint: Option<String>,
    token: Option<String>,
    progress: bool,
}

impl Hub {
    /// An online hub over `cache_dir` with the default endpoint, the cache's token file and a
    /// progress bar.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self { cache_dir: cache_dir.into(), offline: false, endpoint: None, token: None, progress: true }
    }

    /// Settings from the process environment (see [`Hub::from_vars`]).
    pub fn from_env() -> Self {
        Self::from_vars(|key| std::env::var(key).ok().filter(|v| !v.is_empty()))
    }

    /// Settings from a variable lookup: cache = `HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `$XDG_CACHE_HOME/huggingface/hub`, else `$HOME/.cache/huggingface/hub`; `HF_HUB_OFFLINE`,
    /// `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_DISABLE_PROGRESS_BARS`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let cache_dir = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| var("HF_HOME").map(|home| Path::new(&home).join("hub")))
            .or_else(|| var("XDG_CACHE_HOME").map(|c| Path::new(&c).join("huggingface/hub")))
            .unwrap_or_else(|| Path::new(&var("HOME").unwrap_or_default()).join(".cache/huggingface/hub"));
        let truthy = |key: &str| var(key).is_some_and(|v| is_truthy(&v));
        Self {
            cache_dir,
            offline: truthy("HF_HUB_OFFLINE"),
            endpoint: var("HF_ENDPOINT"),
            token: var("HF_TOKEN"),
            progress: !truthy("HF_HUB_DISABLE_PROGRESS_BARS"),
        }
    }

    /// Switches offline mode on or off.
    pub fn with_offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Uses another Hub endpoint (mirror).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Uses an access token instead of the cache's token file.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Shows or hides the download progress bar.
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Whether downloads are disabled.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// A handle on one model repo (`org/name`).
    pub fn repo(&self, repo_id: &str) -> RepoHandle {
        self.handle(repo_id, RepoType::Model)
    }

    /// A handle on one dataset repo (`org/name`, cached under `datasets--org--name`).
    pub fn dataset(&self, repo_id: &str) -> RepoHandle {
        self.handle(repo_id, RepoType::Dataset)
    }

    fn handle(&self, repo_id: &str, kind: RepoType) -> RepoHandle {
        RepoHandle { hub: self.clone(), repo_id: repo_id.to_string(), kind, siblings: OnceLock::new() }
    }

    fn api(&self, repo: &str) -> Result<Api> {
        let mut builder = ApiBuilder::from_cache(Cache::new(self.cache_dir.clone())).with_progress(self.progress);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        if let Some(token) = &self.token {
            builder = builder.with_token(Some(token.clone()));
        }
        builder.build().map_err(|e| RmasError::HubRequest {
            repo: repo.to_string(),
            file: "<client>".into(),
            msg: e.to_string(),
        })
    }
}

/// One model or dataset repo on the Hub, resolved through the local cache.
#[derive(Debug)]
pub struct RepoHandle {
    hub: Hub,
    repo_id: String,
    kind: RepoType,
    siblings: OnceLock<Vec<String>>,
}

impl RepoHandle {
    /// The repo id.
    pub fn repo_id(&self) -> &str {
        &self.repo_id
    }

    /// `<cache>/models--<org>--<name>` (`datasets--…` for a dataset).
    pub fn repo_dir(&self) -> PathBuf {
        let prefix = match self.kind {
            RepoType::Dataset => "datasets",
            _ => "models",
        };
        self.hub.cache_dir.join(format!("{prefix}--{}", self.repo_id.replace('/', "--")))
    }

    /// The hf-hub repo description.
    fn api_repo(&self) -> Repo {
        Repo::new(self.repo_id.clone(), self.kind)
    }

    /// The repo's files: the Hub's list online, the cached snapshot's files offline.
    pub fn list_files(&self) -> Result<Vec<String>> {
        if !self.hub.offline {
            return self.siblings().map(<[String]>::to_vec);
        }
        let Some(root) = self.snapshot_dir() else {
            return Err(RmasError::HubOffline {
                repo: self.repo_id.clone(),
                file: "<file list>".into(),
                cache_dir: self.hub.cache_dir.clone(),
            });
        };
        let mut files = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| RmasError::io("snapshot directory", &dir, e))?;
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if let Ok(relative) = path.strip_prefix(&root) {
                    files.push(relative.to_string_lossy().into_owned());
                }
            }
        }
        files.sort();
        Ok(files)
    }

    /// The cached snapshot named by `refs/main`, if the repo is in the cache (a ref that is not a
    /// plain commit name, such as `../../elsewhere`, names none).
    pub fn snapshot_dir(&self) -> Option<PathBuf> {
        let repo_dir = self.repo_dir();
        let commit = std::fs::read_to_string(repo_dir.join("refs/main")).ok()?;
        let commit = commit.trim();
        let plain = !commit.is_empty() && commit.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let dir = repo_dir.join("snapshots").join(commit);
        (plain && dir.is_dir()).then_some(dir)
    }

    /// The cached path of `file`, if present: a regular file that resolves (through the cache's
    /// `blobs/` links) to a place inside this repo's cache directory.
    pub fn cached(&self, file: &str) -> Option<PathBuf> {
        let path = self.snapshot_dir()?.join(file);
        let real = path.canonicalize().ok()?;
        let repo = self.repo_dir().canonicalize().ok()?;
        (real.starts_with(&repo) && std::fs::metadata(&real).is_ok_and(|m| m.is_file())).then_some(path)
    }

    /// The repo's file list from the Hub (fetched once).
    fn siblings(&self) -> Result<&[String]> {
        if let Some(files) = self.siblings.get() {
            return Ok(files);
        }
        let info = self.hub.api(&self.repo_id)?.repo(self.api_repo()).info().map_err(|e| RmasError::HubRequest {
            repo: self.repo_id.clone(),
            file: "<repo info>".into(),
            msg: e.to_string(),
        })?;
        let files = info.siblings.into_iter().map(|s| s.rfilename).collect();
        Ok(self.siblings.get_or_init(|| files))
    }

    fn download(&self, file: &str) -> Result<PathBuf> {
        self.hub.api(&self.repo_id)?.repo(self.api_repo()).download(file).map_err(|e| RmasError::HubRequest {
            repo: self.repo_id.clone(),
            file: file.into(),
            msg: e.to_string(),
        })
    }
}

impl FileSource for RepoHandle {
    fn label(&self) -> String {
        format!("repo `{}`", self.repo_id)
    }

    fn exists(&self, file: &str) -> Result<bool> {
        check_relative(file, &self.label())?;
        if self.cached(file).is_some() {
            return Ok(true);
        }
        if self.hub.offline {
            return Ok(false);
        }
        Ok(self.siblings()?.iter().any(|f| f == file))
    }

    fn get(&self, file: &str) -> Result<PathBuf> {
        check_relative(file, &self.label())?;
        if let Some(path) = self.cached(file) {
            return Ok(path);
        }
        if self.hub.offline {
            return Err(RmasError::HubOffline {
                repo: self.repo_id.clone(),
                file: file.into(),
                cache_dir: self.hub.cache_dir.clone(),
            });
        }
        self.download(file)
    }
}

/// Whether a Hugging Face boolean environment value is set (`1`, `true`, `yes`, `on`).
fn is_truthy(value: &str) -> bool {
    matches!(value.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}
