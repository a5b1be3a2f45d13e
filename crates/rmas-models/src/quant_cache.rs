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
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rmas_kernels::quant::{BlockFormat, QuantMatrix};

use crate::error::{ModelError, Result};
use crate::gguf::{GgmlType, GgufFile, MetaValue};
use crate::weights::{Weights, map_regular_file};

/// Bumped whenever the quantizers or this file's layout change, so that old files miss.
pub const VERSION: u32 = 2;
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
    /// the file is absent, from another checkpoint or damaged. The file is mapped and parsed once.
    pub fn apply(&self, weights: &mut Weights) -> bool {
        let Ok(map) = map_regular_file(&self.path) else { return false };
        let Ok(header) = GgufFile::parse(&map, &self.path) else { return false };
        let text = |k: &str| header.metadata.get(k).and_then(MetaValue::as_str);
        if text("rmas.cache.key") != Some(&self.key) {
            return false;
        }
        let checksum = checksum(header.tensors.iter().map(|t| &map[t.range.clone()]));
        if header.tensors.is_empty() || text("rmas.cache.checksum") != Some(&checksum) {
            return false;
        }
        weights.replace_with_blocks(map, &header).is_ok()
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
        let checksum = checksum(blocks.iter().map(|(.., bytes)| *bytes));

        let mut head = Vec::new();
        head.extend_from_slice(b"GGUF");
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(blocks.len() as u64).to_le_bytes());
        head.extend_from_slice(&2u64.to_le_bytes());
        for (key, value) in [("rmas.cache.key", self.key.clone()), ("rmas.cache.checksum", checksum)] {
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

/// The blocks' checksum as lower-case hex: FNV-1a's step over each tensor's 64-bit little-endian
/// words (its last one zero-padded), tensor after tensor. A stable hash (std's `DefaultHasher` may
/// change between Rust releases) at memory speed.
fn checksum<'a>(tensors: impl Iterator<Item = &'a [u8]>) -> String {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for bytes in tensors {
        for word in bytes.chunks(8) {
            let mut padded = [0u8; 8];
            padded[..word.len()].copy_from_slice(word);
            hash = (hash ^ u64::from_le_bytes(padded)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// 64-bit FNV-1a of `bytes`, for file names.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
