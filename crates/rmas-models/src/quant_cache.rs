//! The on-disk cache of weights quantized at load (`--quantize`; docs/quantization.md, "The cache of
//! `--quantize` results").
//!
//! One GGUF file per checkpoint and format holds every matrix [`crate::nn::Blocks::Quantize`] made,
//! under its HF tensor name, in ggml's block types. Its name and its `rmas.cache.key` come from the
//! checkpoint directory, each weight file's name, size and modification time, the format and
//! [`VERSION`]: a checkpoint replaced on disk gets a new file. `rmas.cache.checksum` covers the
//! blocks, so a damaged file is read as a miss and written again. A cache that cannot be written
//! costs only the next load's time ([`crate::Model::load`] goes on without it).

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rmas_kernels::quant::{BlockFormat, QuantMatrix};

use crate::error::{ModelError, Result};
use crate::gguf::{GgmlType, GgufFile, MetaValue};
use crate::weights::Weights;

/// Bumped whenever the quantizers or this file's layout change, so that old files miss.
pub const VERSION: u32 = 1;
/// GGUF's default alignment of tensor data.
const ALIGN: u64 = 32;

/// One checkpoint's entry in a cache directory.
#[derive(Clone, Debug)]
pub struct QuantCache {
    /// The cache file.
    pub path: PathBuf,
    key: String,
}

impl QuantCache {
    /// The entry in `dir` for the checkpoint in `checkpoint` (whose files `weights` maps) quantized to `format`.
    pub fn entry(dir: &Path, checkpoint: &Path, weights: &Weights, format: BlockFormat) -> Result<Self> {
        let io = |path: &Path, source| ModelError::Io { path: path.to_owned(), source };
        let checkpoint = checkpoint.canonicalize().map_err(|e| io(checkpoint, e))?;
        let mut key = format!("rmas quantize cache v{VERSION} {} {}", format.name(), checkpoint.display());
        for path in weights.paths() {
            let meta = std::fs::metadata(path).map_err(|e| io(path, e))?;
            let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            key += &format!(" {name}:{}:{}", meta.len(), modified.map_or(0, |d| d.as_nanos()));
        }
        // A Hub snapshot (`models--org--name/snapshots/<commit>`) is named after its repo.
        let components: Vec<_> = checkpoint.components().map(|c| c.as_os_str().to_string_lossy()).collect();
        let stem = match components.as_slice() {
            [.., repo, snapshots, _] if repo.starts_with("models--") && snapshots == "snapshots" => repo.clone(),
            [.., last] => last.clone(),
            [] => "checkpoint".into(),
        };
        let stem: String = stem
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
            .collect();
        let file = format!("{stem}-{}-{:016x}.gguf", format.name(), fnv1a(key.as_bytes()));
        Ok(Self { path: dir.join(file), key })
    }

    /// Replaces `weights`' tensors with the cached blocks; `false` (and `weights` unchanged) where
    /// the file is absent, from another checkpoint or damaged.
    pub fn apply(&self, weights: &mut Weights) -> bool {
        let Ok(header) = GgufFile::open(&self.path) else { return false };
        let text = |k: &str| header.metadata.get(k).and_then(MetaValue::as_str).map(str::to_owned);
        if text("rmas.cache.key").as_deref() != Some(&self.key) {
            return false;
        }
        let Some(end) = header.tensors.iter().map(|t| t.range.end).max() else { return false };
        let start = header.tensors.iter().map(|t| t.range.start).min().unwrap_or(end);
        let Ok(checksum) = file_checksum(&self.path, start as u64, end as u64) else { return false };
        if text("rmas.cache.checksum") != Some(checksum) {
            return false;
        }
        weights.replace_with_blocks(&self.path).is_ok()
    }

    /// Writes `matrices` (each in one format) as this entry's file: to a temporary file beside it,
    /// renamed into place once whole.
    pub fn store(&self, matrices: &[(String, QuantMatrix)]) -> Result<()> {
        let io = |source| ModelError::Io { path: self.path.clone(), source };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut seen = std::collections::HashSet::new();
        let blocks: Vec<(&str, BlockFormat, usize, usize, &[u8])> = matrices
            .iter()
            .filter(|(name, _)| seen.insert(name.as_str()))
            .filter_map(|(name, m)| m.single_format().map(|(f, bytes)| (name.as_str(), f, m.rows(), m.cols(), bytes)))
            .collect();
        if blocks.is_empty() {
            return Ok(()); // nothing was quantized: no file, and every load quantizes nothing again
        }
        let mut offsets = Vec::with_capacity(blocks.len());
        let mut at = 0u64;
        for (.., bytes) in &blocks {
            offsets.push(at);
            at = (at + bytes.len() as u64).div_ceil(ALIGN) * ALIGN;
        }
        // The data region as written: each tensor's blocks at its offset, zeros between.
        let data = || {
            let mut written = 0u64;
            blocks.iter().zip(&offsets).flat_map(move |((.., bytes), &offset)| {
                let padding = (offset - written) as usize;
                written = offset + bytes.len() as u64;
                [Cow::Owned(vec![0u8; padding]), Cow::Borrowed(*bytes)]
            })
        };
        let mut checksum = Checksum::new();
        data().for_each(|chunk| checksum.update(&chunk));

        let mut head = Vec::new();
        head.extend_from_slice(b"GGUF");
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(blocks.len() as u64).to_le_bytes());
        head.extend_from_slice(&2u64.to_le_bytes());
        for (key, value) in [("rmas.cache.key", self.key.clone()), ("rmas.cache.checksum", checksum.hex())] {
            put_string(&mut head, key);
            head.extend_from_slice(&8u32.to_le_bytes()); // a string
            put_string(&mut head, &value);
        }
        for ((name, format, rows, cols, _), offset) in blocks.iter().zip(&offsets) {
            put_string(&mut head, name);
            head.extend_from_slice(&2u32.to_le_bytes());
            // ggml's dimensions: the contiguous one (columns) first.
            head.extend_from_slice(&(*cols as u64).to_le_bytes());
            head.extend_from_slice(&(*rows as u64).to_le_bytes());
            head.extend_from_slice(&GgmlType::of_blocks(*format).id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
        }
        head.resize((head.len() as u64).div_ceil(ALIGN) as usize * ALIGN as usize, 0);

        let tmp = self.path.with_extension(format!("gguf.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut out = BufWriter::new(File::create(&tmp)?);
            out.write_all(&head)?;
            for chunk in data() {
                out.write_all(&chunk)?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The [`Checksum`] of the bytes `start..end` of the file at `path`, as lower-case hex.
fn file_checksum(path: &Path, start: u64, end: u64) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(start))?;
    let mut reader = file.take(end - start);
    let mut hash = Checksum::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(hash.hex());
        }
        hash.update(&buf[..n]);
    }
}

/// FNV-1a's step over 64-bit little-endian words (the last one zero-padded), fed in pieces of
/// any length: a stable hash (std's `DefaultHasher` may change between Rust releases) at memory speed.
struct Checksum {
    hash: u64,
    pending: Vec<u8>,
}

impl Checksum {
    fn new() -> Self {
        Self { hash: 0xcbf2_9ce4_8422_2325, pending: Vec::with_capacity(8) }
    }

    fn word(&mut self, word: u64) {
        self.hash = (self.hash ^ word).wrapping_mul(0x0100_0000_01b3);
    }

    fn update(&mut self, mut bytes: &[u8]) {
        if !self.pending.is_empty() {
            let take = (8 - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() < 8 {
                return;
            }
            let word = u64::from_le_bytes(self.pending[..].try_into().expect("8 bytes"));
            self.word(word);
            self.pending.clear();
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.word(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        self.pending.extend_from_slice(words.remainder());
    }

    fn hex(mut self) -> String {
        if !self.pending.is_empty() {
            self.pending.resize(8, 0);
            let word = u64::from_le_bytes(self.pending[..].try_into().expect("8 bytes"));
            self.word(word);
        }
        format!("{:016x}", self.hash)
    }
}

/// 64-bit FNV-1a of `bytes`, for file names.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
