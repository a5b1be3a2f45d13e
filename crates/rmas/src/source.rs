//! Where a system's files come from ([`FileSource`]): a Hub repo (`hub.rs`), a local directory
//! ([`LocalDir`]) or bytes the browser downloaded (`system/downloads.rs`); every file name is
//! checked to stay inside its source ([`check_relative`]).

use std::path::{Path, PathBuf};

use crate::error::{Result, RmasError};

/// Something a system's files come from: a Hub repo, a local directory, or downloads in the browser.
pub trait FileSource {
    /// Repo id or directory, for messages.
    fn label(&self) -> String;
    /// Whether the source has `file`.
    fn exists(&self, file: &str) -> Result<bool>;
    /// The path of `file`, fetching it if needed (a local path, or the key of downloaded bytes).
    fn get(&self, file: &str) -> Result<PathBuf>;
    /// The text of a file returned by [`FileSource::get`] (`what` names it in errors).
    fn read_text(&self, path: &Path, what: &'static str) -> Result<String> {
        std::fs::read_to_string(path).map_err(|e| RmasError::io(what, path, e))
    }
}

/// Rejects file names that could leave the repo / directory (absolute paths, `..`).
pub fn check_relative(name: &str, context: &str) -> Result<()> {
    let plain = !name.is_empty() && Path::new(name).components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if plain { Ok(()) } else { Err(RmasError::InvalidFileName { name: name.into(), context: context.into() }) }
}

/// A plain local directory (e.g. a checkpoint saved with `save_pretrained`).
#[derive(Clone, Debug)]
pub struct LocalDir {
    dir: PathBuf,
}

impl LocalDir {
    /// Wraps `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

impl FileSource for LocalDir {
    fn label(&self) -> String {
        format!("directory `{}`", self.dir.display())
    }

    fn exists(&self, file: &str) -> Result<bool> {
        check_relative(file, &self.label())?;
        Ok(self.dir.join(file).is_file())
    }

    fn get(&self, file: &str) -> Result<PathBuf> {
        check_relative(file, &self.label())?;
        let path = self.dir.join(file);
        let meta = std::fs::metadata(&path).map_err(|e| RmasError::io("file", &path, e))?;
        if !meta.is_file() {
            return Err(RmasError::io("file", &path, std::io::Error::other("not a regular file")));
        }
        Ok(path)
    }
}
