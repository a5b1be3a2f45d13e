//! Safetensors checkpoints (single file or sharded), memory-mapped, converted to the compute dtype on load.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use burn::tensor::{DType, Tensor, TensorData, backend::Backend};
use safetensors::Dtype;

use crate::error::{ModelError, Result};
use rmas_kernels::quant::QuantMatrix;

use crate::gguf::{Conversion, GgmlType, GgufFile, reorder};

/// Random access to a weight file held outside this process's memory (in the browser: a
/// downloaded file on the JS heap), so that only one tensor at a time is copied in.
pub trait ByteSource {
    /// Size in bytes.
    fn len(&self) -> usize;
    /// Whether there are no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A copy of the bytes in `range` (within `0..len()`).
    fn read(&self, range: Range<usize>) -> Vec<u8>;
}

impl ByteSource for Vec<u8> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn read(&self, range: Range<usize>) -> Vec<u8> {
        self[range].to_vec()
    }
}

/// Bytes of one weight file: memory-mapped from disk, or read range by range from a [`ByteSource`].
enum Buffer {
    Mapped(memmap2::Mmap),
    Source(Box<dyn ByteSource>),
}

impl Buffer {
    fn len(&self) -> usize {
        match self {
            Buffer::Mapped(m) => m.len(),
            Buffer::Source(s) => s.len(),
        }
    }

    /// The bytes in `range` (within `0..len()`).
    fn bytes(&self, range: Range<usize>) -> Cow<'_, [u8]> {
        match self {
            Buffer::Mapped(m) => Cow::Borrowed(&m[range]),
            Buffer::Source(s) => Cow::Owned(s.read(range)),
        }
    }
}

/// How a tensor's bytes encode its values.
#[derive(Clone, Copy, Debug)]
enum Stored {
    /// Safetensors elements.
    Float(Dtype),
    /// ggml blocks (GGUF).
    Ggml(GgmlType),
}

/// Where one tensor lives.
struct Entry {
    file: usize,
    stored: Stored,
    shape: Vec<usize>,
    range: Range<usize>,
    /// GGUF tensors: what llama.cpp's converter did to the HF tensor, undone on read.
    conversion: Conversion,
}

/// Makes the values of a tensor from its name and shape (in-process demo models).
pub type Generator = Box<dyn Fn(&str, &[usize]) -> Vec<f32> + Send + Sync>;

/// A set of safetensors files indexed by tensor name, or a generator of synthetic tensors.
pub struct Weights {
    files: Vec<(PathBuf, Buffer)>,
    index: HashMap<String, Entry>,
    synthetic: Option<Generator>,
    /// Matrices quantized at load, kept while [`Weights::record_quantized`] asks for them.
    quantized: Mutex<Option<Vec<(String, QuantMatrix)>>>,
}

impl Weights {
    /// No files or tensors yet, and `synthetic`'s tensors if given.
    fn empty(synthetic: Option<Generator>) -> Self {
        Self { files: Vec::new(), index: HashMap::new(), synthetic, quantized: Mutex::new(None) }
    }

    /// Opens `model.safetensors`, or every shard listed by `model.safetensors.index.json`, in `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let index_path = dir.join(INDEX_FILE);
        let files = if index_path.exists() {
            shard_files(&read_to_string(&index_path)?, &index_path)?
        } else {
            vec![SINGLE_FILE.to_owned()]
        };
        let mut weights = Self::empty(None);
        for path in files.into_iter().map(|f| dir.join(f)) {
            let map = map_regular_file(&path)?;
            weights.add(path, Buffer::Mapped(map))?;
        }
        Ok(weights)
    }

    /// Indexes safetensors files read through [`ByteSource`]s, each with the name used in errors.
    pub fn from_sources(files: impl IntoIterator<Item = (PathBuf, Box<dyn ByteSource>)>) -> Result<Self> {
        let mut weights = Self::empty(None);
        for (path, source) in files {
            weights.add(path, Buffer::Source(source))?;
        }
        Ok(weights)
    }

    /// Weights whose every tensor is produced on request by `generator` (deterministic demo models).
    pub fn synthetic(generator: Generator) -> Self {
        Self::empty(Some(generator))
    }

    /// Opens a GGUF file: its tensors under their HF names (dequantized to f32 on read), and its
    /// header for the config and tokenizer.
    pub fn from_gguf(path: &Path) -> Result<(Self, GgufFile)> {
        let map = map_regular_file(path)?;
        let gguf = GgufFile::parse(&map, path)?;
        let mut weights = Self::empty(None);
        for (tensor, (name, conversion)) in gguf.tensors.iter().zip(gguf.hf_names()?) {
            let mut shape = tensor.shape();
            if conversion.squeezed && shape.len() == 2 {
                shape.insert(1, 1);
            }
            let entry = Entry {
                file: 0,
                stored: Stored::Ggml(tensor.ggml_type),
                shape,
                range: tensor.range.clone(),
                conversion,
            };
            weights.index.insert(name, entry);
        }
        weights.files.push((path.to_owned(), Buffer::Mapped(map)));
        Ok((weights, gguf))
    }

    fn add(&mut self, path: PathBuf, buffer: Buffer) -> Result<()> {
        let corrupt = |msg: String| ModelError::CorruptWeights { path: path.clone(), msg };
        // Header: an u64 length, then that many bytes of JSON.
        let len = buffer.len();
        if len < 8 {
            return Err(corrupt(format!("{len} bytes, too short for a safetensors header")));
        }
        let header_len = u64::from_le_bytes(buffer.bytes(0..8).as_ref().try_into().expect("8 bytes"));
        if header_len > MAX_HEADER_BYTES || 8 + header_len as usize > len {
            // The length itself is not shown: in a file that is no checkpoint it would spell out the
            // file's first 8 bytes (say, a token's).
            return Err(corrupt(format!("its first 8 bytes give no header length that fits its {len} bytes")));
        }
        let start = 8 + header_len as usize;
        let meta: safetensors::tensor::Metadata =
            serde_json::from_slice(&buffer.bytes(8..start)).map_err(|e| corrupt(format!("header: {e}")))?;
        let file = self.files.len();
        for (name, info) in meta.tensors() {
            let (b, e) = info.data_offsets;
            let elems: usize = info.shape.iter().product();
            if start + e > len {
                return Err(corrupt(format!(
                    "tensor `{name}` ends at byte {} but the file has {len} bytes (truncated?)",
                    start + e
                )));
            }
            if e - b != elems * info.dtype.bitsize() / 8 {
                return Err(corrupt(format!("tensor `{name}` has {} bytes for shape {:?}", e - b, info.shape)));
            }
            let entry = Entry {
                file,
                stored: Stored::Float(info.dtype),
                shape: info.shape.clone(),
                range: start + b..start + e,
                conversion: Conversion::default(),
            };
            self.index.insert(name, entry);
        }
        self.files.push((path, buffer));
        Ok(())
    }

    /// The files the tensors come from.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(path, _)| path.as_path())
    }

    /// Reads the tensors of a GGUF file of blocks (mapped in `map`, its header parsed in `gguf`)
    /// under their own names in place of this set's tensors of the same names and shapes (a
    /// [`crate::quant_cache`] file); an error names the first tensor that is not one of this set's
    /// or has another shape, and leaves the set unchanged.
    pub(crate) fn replace_with_blocks(&mut self, map: memmap2::Mmap, gguf: &GgufFile) -> Result<()> {
        let path = &gguf.path;
        let corrupt = |msg: String| ModelError::CorruptWeights { path: path.to_owned(), msg };
        let file = self.files.len();
        let mut entries = Vec::with_capacity(gguf.tensors.len());
        for tensor in &gguf.tensors {
            let shape = tensor.shape();
            match self.index.get(&tensor.name) {
                Some(entry) if entry.shape == shape => {}
                _ => return Err(corrupt(format!("`{}` {shape:?} is no tensor of the checkpoint", tensor.name))),
            }
            let stored = Stored::Ggml(tensor.ggml_type);
            entries.push((
                tensor.name.clone(),
                Entry { file, stored, shape, range: tensor.range.clone(), conversion: Conversion::default() },
            ));
        }
        self.index.extend(entries);
        self.files.push((path.clone(), Buffer::Mapped(map)));
        Ok(())
    }

    /// Keeps every matrix quantized from now on ([`Weights::note_quantized`]) for [`Weights::take_quantized`].
    pub fn record_quantized(&mut self) {
        *self.quantized.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(Vec::new());
    }

    /// Keeps a copy of `matrix`, quantized from tensor `name`, if [`Weights::record_quantized`] asked.
    pub fn note_quantized(&self, name: &str, matrix: &QuantMatrix) {
        if let Some(kept) = self.quantized.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            kept.push((name.to_owned(), matrix.clone()));
        }
    }

    /// The matrices kept since [`Weights::record_quantized`], by tensor name.
    pub fn take_quantized(&self) -> Vec<(String, QuantMatrix)> {
        self.quantized.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default()
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

    /// Loads a tensor of `shape` as a `[rows, cols]` matrix (cols the last axis) transposed to
    /// `[cols, rows]`, contiguous (transposed on the host once, so no backend ever copies a strided
    /// weight per use).
    pub fn tensor_transposed<B: Backend>(
        &self,
        name: &str,
        shape: &[usize],
        device: &B::Device,
        dtype: DType,
    ) -> Result<Tensor<B, 2>> {
        Ok(Tensor::from_data(transpose_host(self.data(name, shape)?), (device, dtype)))
    }

    /// Reads `name` as f32 host data after checking its shape.
    pub fn data(&self, name: &str, shape: &[usize]) -> Result<TensorData> {
        let numel = shape.iter().product();
        Ok(TensorData::new(self.values(name, shape, 0..numel)?, shape.to_vec()))
    }

    /// Reads rows `rows` of `name` (shape checked against `shape`) as f32 host data.
    pub fn rows(&self, name: &str, shape: &[usize], rows: Range<usize>) -> Result<TensorData> {
        let row: usize = shape.iter().skip(1).product();
        let mut block = shape.to_vec();
        block[0] = rows.len();
        Ok(TensorData::new(self.values(name, shape, rows.start * row..rows.end * row)?, block))
    }

    /// `name` `[rows, cols]` as its blocks, when a GGUF file stores it in a format the products take
    /// (Q8_0, Q4_0, Q4_1; llama.cpp's row permutation of queries and keys undone); `None` otherwise.
    pub fn blocks(&self, name: &str, shape: [usize; 2]) -> Result<Option<QuantMatrix>> {
        let Some(entry) = self.index.get(name) else { return Ok(None) };
        let Stored::Ggml(ggml) = entry.stored else { return Ok(None) };
        let Some(format) = ggml.block_format() else { return Ok(None) };
        if entry.conversion.changes_values() {
            return Ok(None); // a shifted or mapped weight is no matrix; read its values
        }
        self.check_shape(name, entry, &shape)?;
        let path = &self.files[entry.file].0;
        let [rows, cols] = shape;
        let corrupt = |msg: String| ModelError::CorruptWeights { path: path.clone(), msg };
        // The stored order of rows and columns, checked before any byte is copied.
        let row_order = self.stored_order(name, entry, 0, rows)?;
        let column_order = self.stored_order(name, entry, 1, cols)?;
        let bytes = self.files[entry.file].1.bytes(entry.range.clone()).into_owned();
        let mut matrix = QuantMatrix::from_blocks(format, rows, cols, bytes)
            .ok_or_else(|| corrupt(format!("`{name}` [{rows}, {cols}] is not whole rows of {format} blocks")))?;
        if let Some(order) = row_order {
            matrix = matrix.select_rows(&order);
        }
        match column_order {
            // Columns reordered in runs of whole blocks move as blocks; others are read as values.
            Some(order) => Ok(matrix.select_column_blocks(&order)),
            None => Ok(Some(matrix)),
        }
    }

    /// For each HF index along `axis` (0: rows, 1: the rest) of tensor `name`, `n` long, the stored
    /// index, where the converter reordered that axis (`gguf::Order`); an error if the order does not
    /// fit `n`.
    fn stored_order(&self, name: &str, entry: &Entry, axis: usize, n: usize) -> Result<Option<Vec<usize>>> {
        let Some(order) = [entry.conversion.rows, entry.conversion.columns][axis] else { return Ok(None) };
        order.hf_order(n).map(Some).ok_or_else(|| ModelError::CorruptWeights {
            path: self.files[entry.file].0.clone(),
            msg: format!("`{name}` has {n} {}, which {order:?} does not fit", ["rows", "columns"][axis]),
        })
    }

    /// An error naming the file unless tensor `name` has `shape`.
    fn check_shape(&self, name: &str, entry: &Entry, shape: &[usize]) -> Result<()> {
        if entry.shape == shape {
            return Ok(());
        }
        Err(ModelError::Shape {
            name: name.to_owned(),
            path: self.files[entry.file].0.clone(),
            expected: shape.to_vec(),
            found: entry.shape.clone(),
        })
    }

    /// Elements `elems` (row-major) of `name`, converted to f32.
    fn values(&self, name: &str, shape: &[usize], elems: Range<usize>) -> Result<Vec<f32>> {
        if let Some(generate) = &self.synthetic {
            return Ok(generate(name, shape)[elems].to_vec());
        }
        let entry = self.index.get(name).ok_or_else(|| ModelError::MissingTensor {
            name: name.to_owned(),
            files: self.files.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>().join(", "),
        })?;
        self.check_shape(name, entry, shape)?;
        let path = &self.files[entry.file].0;
        let bytes = |bytes: Range<usize>| {
            self.files[entry.file].1.bytes(entry.range.start + bytes.start..entry.range.start + bytes.end)
        };
        match entry.stored {
            Stored::Float(dtype @ (Dtype::F32 | Dtype::BF16 | Dtype::F16)) => {
                let size = dtype.bitsize() / 8;
                Ok(floats_to_f32(dtype, &bytes(elems.start * size..elems.end * size)).expect("a float dtype"))
            }
            Stored::Float(other) => {
                Err(ModelError::WeightDtype { name: name.to_owned(), path: path.clone(), dtype: format!("{other:?}") })
            }
            Stored::Ggml(ggml) => {
                let (block, size) = ggml.block();
                let corrupt = |msg: String| ModelError::CorruptWeights { path: path.clone(), msg };
                if !elems.start.is_multiple_of(block) || !elems.end.is_multiple_of(block) {
                    return Err(corrupt(format!("`{name}`: elements {elems:?} are not whole {ggml:?} blocks")));
                }
                let mut values = ggml.dequantize(&bytes(elems.start / block * size..elems.end / block * size));
                let c = entry.conversion;
                if c.shift != 0.0 {
                    values.iter_mut().for_each(|v| *v += c.shift);
                }
                if c.neg_exp {
                    // `−exp(x)` is negative and finite; anything else would read as NaN.
                    if let Some(v) = values.iter().find(|v| !(v.is_finite() && **v < 0.0)) {
                        return Err(corrupt(format!("`{name}` holds {v}; −exp(A_log) is negative and finite")));
                    }
                    values.iter_mut().for_each(|v| *v = (-*v).ln());
                }
                let (rows, cols) = (shape[0], shape.iter().skip(1).product());
                for (axis, n) in [(0, rows), (1, cols)] {
                    let Some(order) = self.stored_order(name, entry, axis, n)? else { continue };
                    if elems != (0..rows * cols) {
                        return Err(corrupt(format!("`{name}` is read whole (it is stored reordered)")));
                    }
                    values = reorder(&values, [rows, cols], axis, &order).expect("an order of the axis' length");
                }
                Ok(values)
            }
        }
    }
}

/// Memory-maps a checkpoint file, refusing anything but a regular file (a FIFO or device under a
/// checkpoint's name would hang or never end).
pub(crate) fn map_regular_file(path: &Path) -> Result<memmap2::Mmap> {
    let io = |source| ModelError::Io { path: path.to_owned(), source };
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(io(std::io::Error::other("not a regular file")));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: the file is opened read-only; rmas never writes to checkpoint files while mapped.
    unsafe { memmap2::Mmap::map(&file) }.map_err(io)
}

/// Little-endian F64 / F32 / F16 / BF16 values as f32: the one decoder of stored floats (model
/// weights, link safetensors, `.pt` storages); `None` for other dtypes.
pub fn floats_to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F64 => {
            bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect()
        }
        Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => return None,
    })
}

/// Largest safetensors header accepted (as the safetensors crate).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The single-file checkpoint name.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The shard index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The distinct shard files named by a `model.safetensors.index.json` (`path` is used in errors), sorted.
pub fn shard_files(index: &str, path: &Path) -> Result<Vec<String>> {
    let err = |msg: String| ModelError::Config { path: path.to_owned(), msg };
    let json: serde_json::Value = serde_json::from_str(index).map_err(|e| err(e.to_string()))?;
    let map = json["weight_map"].as_object().ok_or_else(|| err("missing object `weight_map`".into()))?;
    let shards: std::collections::BTreeSet<String> = map
        .values()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| err(format!("weight_map value {v} is not a file name"))))
        .collect::<Result<_>>()?;
    // Shards are files of the checkpoint directory itself: no absolute paths, `..` or subdirectories.
    if let Some(bad) =
        shards.iter().find(|f| f.is_empty() || f.contains(['/', '\\']) || f.as_str() == "." || f.as_str() == "..")
    {
        return Err(err(format!("weight_map names `{bad}`, which is not a file name inside the checkpoint directory")));
    }
    Ok(shards.into_iter().collect())
}

/// Reads a whole text file with a path-naming error.
pub(crate) fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.to_owned(), source })
}

/// Host values of shape `[.., cols]` (all but the last axis counted as rows) transposed to `[cols, rows]`
/// in f32, in blocks for cache locality.
pub fn transpose_host(data: TensorData) -> TensorData {
    let cols = data.shape.last().copied().unwrap_or(1);
    let rows = data.shape.iter().rev().skip(1).product();
    let data = data.convert::<f32>();
    let src = data.as_slice::<f32>().expect("converted to f32");
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
    TensorData::new(out, [cols, rows])
}
