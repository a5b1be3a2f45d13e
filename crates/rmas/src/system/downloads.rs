//! Released systems from downloaded bytes (the browser, which has no files): a store of fetched
//! files, a [`FileSource`] per repo over it, resolution that downloads what it asks for, and
//! loading straight from the bytes.
//!
//! Resolution is the native one ([`SystemSpec::resolve_released`]): a file it asks for that is not
//! in the store stops it with [`RmasError::NotFetched`]; [`Downloads::resolve`] fetches that file
//! and runs it again, until it completes. Paths in the resolved [`SystemSpec`] are store keys
//! `<repo id>/<file>`.
//!
//! Weight files are only downloaded during resolution (the fetcher may keep them in a cache, not
//! in memory) and fetched as bytes agent by agent while loading, each agent's files leaving the
//! store once it is built. Files are [`ByteSource`]s: the browser keeps them on the JS heap and
//! weights are copied into wasm memory one tensor at a time.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};

use rmas_models::weights::{ByteSource, INDEX_FILE, SINGLE_FILE, shard_files};
use rmas_models::{Model, Precision, RmasBackend, Weights, config};
use rmas_text::Tokenizer;
use rmas_text::{Style, Task};

use super::{AgentSpec, Checkpoint, SystemSpec};
use crate::engine::{Agent, LoadedSystem};
use crate::error::{Result, RmasError};
use crate::link::{InnerLink, OuterLink};
use crate::source::{FileSource, check_relative};

/// A fetched file.
pub type Fetched = Box<dyn ByteSource>;

/// What a fetch asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The file's bytes.
    Bytes,
    /// Only that the file exists and is downloaded (weights during resolution); the fetcher may
    /// answer with any bytes (they are dropped) and is asked for them again when the agent loads.
    Presence,
}

/// A stored file.
enum Stored {
    Bytes(Fetched),
    /// Downloaded, bytes not held: fetched again on load.
    Later {
        repo: String,
        file: String,
    },
}

/// Files fetched so far, keyed `<repo id>/<file>`; `None` records a file the repo does not have.
#[derive(Default)]
pub struct Downloads {
    files: RefCell<BTreeMap<PathBuf, Option<Stored>>>,
}

impl Downloads {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The [`FileSource`] of one repo over this store.
    pub fn repo<'a>(&'a self, repo: &str) -> DownloadedRepo<'a> {
        DownloadedRepo { downloads: self, repo: repo.to_string() }
    }

    /// Resolves a released style, awaiting `fetch(repo, file, want)` (the file, or `None` when the
    /// repo lacks it) for every file resolution asks for that is not in the store yet; weight files
    /// are asked for with [`Want::Presence`].
    pub async fn resolve<F, Fut>(&self, style: Style, task: Task, mut fetch: F) -> Result<SystemSpec>
    where
        F: FnMut(String, String, Want) -> Fut,
        Fut: Future<Output = Result<Option<Fetched>>>,
    {
        loop {
            match SystemSpec::resolve_released(style, task, &|repo| Box::new(self.repo(repo))) {
                Err(RmasError::NotFetched { repo, file }) => {
                    let want = if file.ends_with(".safetensors") { Want::Presence } else { Want::Bytes };
                    let fetched = fetch(repo.clone(), file.clone(), want).await?;
                    let stored = fetched.map(|bytes| match want {
                        Want::Bytes => Stored::Bytes(bytes),
                        Want::Presence => Stored::Later { repo: repo.clone(), file: file.clone() },
                    });
                    self.files.borrow_mut().insert(key(&repo, &file), stored);
                }
                done => return done,
            }
        }
    }

    /// Loads a system resolved by [`Downloads::resolve`], agent by agent: its weight files are
    /// fetched with [`Want::Bytes`] and, like the link files, leave the store once it is built.
    pub async fn load<B, F, Fut>(
        &self,
        spec: &SystemSpec,
        device: &B::Device,
        precision: impl Into<Precision>,
        mut fetch: F,
    ) -> Result<LoadedSystem<B>>
    where
        B: RmasBackend,
        F: FnMut(String, String, Want) -> Fut,
        Fut: Future<Output = Result<Option<Fetched>>>,
    {
        let precision = precision.into();
        let mut agents = Vec::with_capacity(spec.agents.len());
        for agent in &spec.agents {
            let mut weights = Vec::new();
            for path in self.weight_files(checkpoint_dir(agent)?)? {
                let bytes = match self.take_stored(&path)? {
                    Stored::Bytes(bytes) => bytes,
                    Stored::Later { repo, file } => {
                        fetch(repo, file, Want::Bytes).await?.ok_or_else(|| missing(&path))?
                    }
                };
                weights.push((path, bytes));
            }
            agents.push(self.agent(agent, Weights::from_sources(weights)?, device, precision.clone())?);
        }
        let hidden = agents.iter().map(|a| (a.role, a.model.config().hidden_size)).collect();
        let outer = spec.load_outer_links(&hidden, |path| {
            OuterLink::from_pt_bytes(&whole(&*self.take(path)?), &path.display().to_string(), device)
        })?;
        Ok(LoadedSystem::new(spec.style, agents, outer))
    }

    /// The weight files of the checkpoint in `dir`: `model.safetensors` or the index's shards.
    fn weight_files(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        if self.files.borrow().get(&dir.join(SINGLE_FILE)).is_some_and(Option::is_some) {
            return Ok(vec![dir.join(SINGLE_FILE)]);
        }
        let index = dir.join(INDEX_FILE);
        Ok(shard_files(&self.text(&index, "weight index")?, &index)?.into_iter().map(|f| dir.join(f)).collect())
    }

    fn agent<B: RmasBackend>(
        &self,
        spec: &AgentSpec,
        weights: Weights,
        device: &B::Device,
        precision: Precision,
    ) -> Result<Agent<B>> {
        let dir = checkpoint_dir(spec)?;
        let config_path = dir.join("config.json");
        let config = config::parse(&self.text(&config_path, "model config")?, &config_path)?;
        let model = Model::from_weights(config, &weights, device, precision)?;
        drop(weights);
        let tokenizer = Tokenizer::from_reader(&dir.display().to_string(), |name| Ok(self.bytes(&dir.join(name))))?;
        let inner = InnerLink::from_pt_bytes(
            &whole(&*self.take(&spec.inner_link)?),
            &spec.inner_link.display().to_string(),
            device,
        )?;
        Agent::new(spec.role, model, tokenizer, inner, &spec.inner_link)
    }

    /// A copy of the bytes stored at `path`, if downloaded, present and held.
    fn bytes(&self, path: &Path) -> Option<Vec<u8>> {
        match self.files.borrow().get(path)? {
            Some(Stored::Bytes(bytes)) => Some(whole(bytes.as_ref())),
            _ => None,
        }
    }

    /// Moves the file at `path` out of the store.
    fn take_stored(&self, path: &Path) -> Result<Stored> {
        self.files.borrow_mut().get_mut(path).and_then(Option::take).ok_or_else(|| missing(path))
    }

    /// Moves the held bytes at `path` out of the store.
    fn take(&self, path: &Path) -> Result<Fetched> {
        match self.take_stored(path)? {
            Stored::Bytes(bytes) => Ok(bytes),
            Stored::Later { .. } => Err(missing(path)),
        }
    }

    fn text(&self, path: &Path, what: &'static str) -> Result<String> {
        let bytes = self.bytes(path).ok_or_else(|| missing(path))?;
        String::from_utf8(bytes).map_err(|_| RmasError::config(what, path, "not UTF-8 text"))
    }
}

/// One repo's files in a [`Downloads`] store.
pub struct DownloadedRepo<'a> {
    downloads: &'a Downloads,
    repo: String,
}

impl DownloadedRepo<'_> {
    /// Whether the repo has `file`: `None` while it has not been fetched.
    fn lookup(&self, file: &str) -> Result<Option<bool>> {
        check_relative(file, &self.label())?;
        Ok(self.downloads.files.borrow().get(&key(&self.repo, file)).map(Option::is_some))
    }

    fn not_fetched(&self, file: &str) -> RmasError {
        RmasError::NotFetched { repo: self.repo.clone(), file: file.to_string() }
    }
}

impl FileSource for DownloadedRepo<'_> {
    fn label(&self) -> String {
        format!("repo `{}`", self.repo)
    }

    fn exists(&self, file: &str) -> Result<bool> {
        self.lookup(file)?.ok_or_else(|| self.not_fetched(file))
    }

    fn get(&self, file: &str) -> Result<PathBuf> {
        match self.lookup(file)? {
            Some(true) => Ok(key(&self.repo, file)),
            Some(false) => Err(RmasError::HubRequest {
                repo: self.repo.clone(),
                file: file.to_string(),
                msg: "the repo has no such file".into(),
            }),
            None => Err(self.not_fetched(file)),
        }
    }

    fn read_text(&self, path: &Path, what: &'static str) -> Result<String> {
        self.downloads.text(path, what)
    }
}

/// All bytes of a file.
fn whole(file: &dyn ByteSource) -> Vec<u8> {
    file.read(0..file.len())
}

fn key(repo: &str, file: &str) -> PathBuf {
    Path::new(repo).join(file)
}

fn missing(path: &Path) -> RmasError {
    RmasError::io(
        "downloaded file",
        path,
        std::io::Error::new(std::io::ErrorKind::NotFound, "not in the download store"),
    )
}

/// A downloaded agent's checkpoint directory: GGUF agents come only from system descriptions, which
/// load from local files.
fn checkpoint_dir(spec: &AgentSpec) -> Result<&Path> {
    match &spec.checkpoint {
        Checkpoint::Dir(dir) => Ok(dir),
        Checkpoint::Gguf(path) => Err(RmasError::InvalidSystem {
            system: spec.source.clone(),
            msg: format!("GGUF agent `{}` cannot be downloaded; load it from a local file", path.display()),
        }),
    }
}
