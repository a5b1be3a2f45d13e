//! Safetensors checkpoints (single file or sharded), memory-mapped, converted to the compute dtype on load.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, Tensor, TensorData, backend::Backend};
use safetensors::Dtype;

use crate::error::{ModelError, Result};

/// Bytes of one weight file: memory-mapped from disk or owned (in-process models, the browser).
enum Buffer {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Buffer::Mapped(m) => m,
            Buffer::Owned(v) => v,
        }
    }
}

/// Where one tensor lives.
struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    range: std::ops::Range<usize>,
}

/// Makes the values of a tensor from its name and shape (in-process demo models).
pub type Generator = Box<dyn Fn(&str, &[usize]) -> Vec<f32> + Send + Sync>;

/// A set of safetensors files indexed by tensor name, or a generator of synthetic tensors.
pub struct Weights {
    files: Vec<(PathBuf, Buffer)>,
    index: HashMap<String, Entry>,
    synthetic: Option<Generator>,
}

impl Weights {
    /// Opens `model.safetensors`, or every shard listed by `model.safetensors.index.json`, in `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        let paths = if index_path.exists() {
            let text = read_to_string(&index_path)?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| ModelError::Config { path: index_path.clone(), msg: e.to_string() })?;
            let map = json["weight_map"].as_object().ok_or_else(|| ModelError::Config {
                path: index_path.clone(),
                msg: "missing object `weight_map`".into(),
            })?;
            let mut shards: Vec<String> = map.values().filter_map(|v| v.as_str().map(str::to_owned)).collect();
            shards.sort();
            shards.dedup();
            shards.into_iter().map(|s| dir.join(s)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut weights = Self { files: Vec::new(), index: HashMap::new(), synthetic: None };
        for path in paths {
            let file = std::fs::File::open(&path).map_err(|source| ModelError::Io { path: path.clone(), source })?;
            // SAFETY: the file is opened read-only; rmas never writes to checkpoint files while mapped.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| ModelError::Io { path: path.clone(), source })?;
            weights.add(path, Buffer::Mapped(map))?;
        }
        Ok(weights)
    }

    /// Indexes an in-memory safetensors file (named `name` in error messages).
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Self> {
        let mut weights = Self { files: Vec::new(), index: HashMap::new(), synthetic: None };
        weights.add(PathBuf::from(name), Buffer::Owned(bytes))?;
        Ok(weights)
    }

    /// Weights whose every tensor is produced on request by `generator` (deterministic demo models).
    pub fn synthetic(generator: Generator) -> Self {
        Self { files: Vec::new(), index: HashMap::new(), synthetic: Some(generator) }
    }

    fn add(&mut self, path: PathBuf, buffer: Buffer) -> Result<()> {
        let corrupt = |msg: String| ModelError::CorruptWeights { path: path.clone(), msg };
        let (header_len, meta) = safetensors::SafeTensors::read_metadata(&buffer).map_err(|e| corrupt(e.to_string()))?;
        let start = 8 + header_len;
        let file = self.files.len();
        for (name, info) in meta.tensors() {
            let (b, e) = info.data_offsets;
            let elems: usize = info.shape.iter().product();
            if start + e > buffer.len() {
                return Err(corrupt(format!(
                    "tensor `{name}` ends at byte {} but the file has {} bytes (truncated?)",
                    start + e,
                    buffer.len()
                )));
            }
            if e - b != elems * info.dtype.bitsize() / 8 {
                return Err(corrupt(format!("tensor `{name}` has {} bytes for shape {:?}", e - b, info.shape)));
            }
            self.index.insert(name, Entry { file, dtype: info.dtype, shape: info.shape.clone(), range: start + b..start + e });
        }
        self.files.push((path, buffer));
        Ok(())
    }

    /// Whether a tensor of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.synthetic.is_some() || self.index.contains_key(name)
    }

    /// All tensor names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.index.get(name).map(|e| e.shape.as_slice())
    }

    /// Loads `name`, checks it has `shape`, converts it to `dtype` on `device`.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
        dtype: DType,
    ) -> Result<Tensor<B, D>> {
        let data = self.data(name, &shape)?;
        Ok(Tensor::from_data(data, (device, dtype)))
    }

    /// Loads a `[rows, cols]` matrix transposed to `[cols, rows]`, contiguous (transposed on the host once,
    /// so no backend ever copies a strided weight per matmul).
    pub fn tensor_transposed<B: Backend>(&self, name: &str, shape: [usize; 2], device: &B::Device, dtype: DType) -> Result<Tensor<B, 2>> {
        let [rows, cols] = shape;
        let data = self.data(name, &shape)?;
        let src = data.as_slice::<f32>().expect("weights are converted to f32");
        let mut out = vec![0.0f32; rows * cols];
        const BLOCK: usize = 32;
        for r0 in (0..rows).step_by(BLOCK) {
            for c0 in (0..cols).step_by(BLOCK) {
                for r in r0..(r0 + BLOCK).min(rows) {
                    for c in c0..(c0 + BLOCK).min(cols) {
                        out[c * rows + r] = src[r * cols + c];
                    }
                }
            }
        }
        Ok(Tensor::from_data(TensorData::new(out, [cols, rows]), (device, dtype)))
    }

    /// Reads `name` as f32 host data after checking its shape.
    pub fn data(&self, name: &str, shape: &[usize]) -> Result<TensorData> {
        if let Some(generate) = &self.synthetic {
            return Ok(TensorData::new(generate(name, shape), shape.to_vec()));
        }
        let entry = self.index.get(name).ok_or_else(|| ModelError::MissingTensor {
            name: name.to_owned(),
            files: self.files.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>().join(", "),
        })?;
        let path = &self.files[entry.file].0;
        if entry.shape != shape {
            return Err(ModelError::Shape {
                name: name.to_owned(),
                path: path.clone(),
                expected: shape.to_vec(),
                found: entry.shape.clone(),
            });
        }
        let bytes = &self.files[entry.file].1[entry.range.clone()];
        let values: Vec<f32> = match entry.dtype {
            Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => {
                return Err(ModelError::WeightDtype { name: name.to_owned(), path: path.clone(), dtype: format!("{other:?}") });
            }
        };
        Ok(TensorData::new(values, shape.to_vec()))
    }
}

/// Reads a whole text file with a path-naming error.
pub(crate) fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.to_owned(), source })
}
