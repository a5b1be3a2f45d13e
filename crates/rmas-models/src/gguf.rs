//! GGUF files (llama.cpp's single-file checkpoints; docs/gguf.md): the header, metadata and tensor
//! index read with every count and offset checked against the file, the block formats
//! dequantized to f32, and the pieces rmas builds a model from — an HF-style `config.json`, HF
//! tensor names, and `tokenizer.json` / `tokenizer_config.json` texts from `tokenizer.ggml.*`.
//!
//! Format: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>; the block layouts are
//! ggml's `block_q4_0` … `block_q6_K` (`ggml-common.h`), decoded as `dequantize_row_*` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::f16;
use rmas_kernels::quant::BlockFormat;
use serde_json::{Value, json};

use crate::error::{ModelError, Result};

/// Most tensors and metadata entries a file may declare (real models have a few thousand).
const MAX_ENTRIES: u64 = 1 << 20;
/// Most elements of a metadata array (a vocabulary has ~10^5–10^6 tokens).
const MAX_ARRAY: u64 = 1 << 24;
/// Most dimensions of a tensor.
const MAX_DIMS: u32 = 4;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::UInt(v) => Some(v),
            Self::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::Float(v) => Some(v),
            Self::UInt(v) => Some(v as f64),
            Self::Int(v) => Some(v as f64),
            _ => None,
        }
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// ggml's tensor element types that rmas decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

impl GgmlType {
    const ALL: [Self; 9] =
        [Self::F32, Self::F16, Self::BF16, Self::Q4_0, Self::Q4_1, Self::Q8_0, Self::Q4K, Self::Q5K, Self::Q6K];

    /// ggml's id of the type (`enum ggml_type`).
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q8_0 => 8,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::BF16 => 30,
        }
    }

    /// The type of ggml's id, or `None` for types rmas does not decode.
    fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.id() == id)
    }

    /// The block format of a quantized type (rmas multiplies its blocks without decoding them first).
    pub fn block_format(self) -> Option<BlockFormat> {
        match self {
            Self::Q8_0 => Some(BlockFormat::Q8_0),
            Self::Q4_0 => Some(BlockFormat::Q4_0),
            Self::Q4_1 => Some(BlockFormat::Q4_1),
            Self::Q4K => Some(BlockFormat::Q4K),
            Self::Q5K => Some(BlockFormat::Q5K),
            Self::Q6K => Some(BlockFormat::Q6K),
            Self::F32 | Self::F16 | Self::BF16 => None,
        }
    }

    /// The type whose blocks are `format`'s.
    pub fn of_blocks(format: BlockFormat) -> Self {
        Self::ALL.into_iter().find(|t| t.block_format() == Some(format)).expect("every block format is a ggml type")
    }

    /// `(elements per block, bytes per block)`.
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            quantized => {
                let format = quantized.block_format().expect("a block type");
                (format.block_weights(), format.block_bytes())
            }
        }
    }

    /// Decodes whole blocks of this type to f32 (`bytes.len()` a multiple of the block size).
    pub fn dequantize(self, bytes: &[u8]) -> Vec<f32> {
        let (n, size) = self.block();
        let mut out = vec![0f32; bytes.len() / size * n];
        for (b, out) in bytes.chunks_exact(size).zip(out.chunks_exact_mut(n)) {
            match self {
                Self::F32 => out[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                Self::F16 => out[0] = f16::from_le_bytes([b[0], b[1]]).to_f32(),
                Self::BF16 => out[0] = half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
                quantized => quantized.block_format().expect("a block type").decode(b, out),
            }
        }
        out
    }
}

/// One tensor of a GGUF file.
#[derive(Clone, Debug)]
pub struct GgufTensor {
    /// The name in the file (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions as ggml orders them: `dims[0]` varies fastest (a weight's input width).
    pub dims: Vec<usize>,
    pub ggml_type: GgmlType,
    /// Byte range in the file.
    pub range: std::ops::Range<usize>,
}

impl GgufTensor {
    /// The shape in row-major order (`[out, in]` for a weight), as HF stores it.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A GGUF architecture rmas reads: the HF `model_type` its metadata becomes, what llama.cpp's converter
/// did to its tensors (undone on read: [`Conversion`]), and the HF norm its `ffn_norm` is.
struct Arch {
    name: &'static str,
    model_type: &'static str,
    /// Query/key rows permuted into llama.cpp's rotary layout (llama-style models only).
    permuted_qk: bool,
    /// What the converter added to every norm weight (1 for Gemma, whose norms scale by `1 + w`).
    norm_shift: f32,
    /// The HF name of the norm before the MLP.
    ffn_norm: &'static str,
}

/// The architectures rmas reads (Mistral GGUF files are `llama`). Tensor names are llama.cpp's, the same
/// for all; Qwen2's q/k/v biases, Qwen3's and Gemma 3's q/k norms, Gemma 3's post-norms and Qwen3.5's
/// linear-attention tensors are read where present.
const ARCHS: &[Arch] = &[
    Arch {
        name: "llama",
        model_type: "llama",
        permuted_qk: true,
        norm_shift: 0.0,
        ffn_norm: "post_attention_layernorm",
    },
    Arch {
        name: "qwen2",
        model_type: "qwen2",
        permuted_qk: false,
        norm_shift: 0.0,
        ffn_norm: "post_attention_layernorm",
    },
    Arch {
        name: "qwen3",
        model_type: "qwen3",
        permuted_qk: false,
        norm_shift: 0.0,
        ffn_norm: "post_attention_layernorm",
    },
    Arch {
        name: "gemma3",
        model_type: "gemma3_text",
        permuted_qk: false,
        norm_shift: 1.0,
        ffn_norm: "pre_feedforward_layernorm",
    },
    Arch {
        name: "qwen35",
        model_type: "qwen3_5_text",
        permuted_qk: false,
        norm_shift: 1.0,
        ffn_norm: "post_attention_layernorm",
    },
];

/// What llama.cpp's converter did to a tensor of the HF checkpoint, undone when it is read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Conversion {
    /// The order the rows (the first axis) were stored in.
    pub rows: Option<Order>,
    /// The order the columns (the last axis) of a matrix were stored in.
    pub columns: Option<Order>,
    /// Added to every value on read (−1 for a Gemma or Qwen3.5 norm weight).
    pub shift: f32,
    /// Stored as `−exp(x)` (Qwen3.5's `A_log` as `ssm_a`): read back as `ln(−v)`.
    pub neg_exp: bool,
    /// Stored without HF's middle axis of 1 (`[channels, kernel]` for a conv weight of
    /// `[channels, 1, kernel]`).
    pub squeezed: bool,
}

impl Conversion {
    /// Whether the stored values themselves differ from the HF ones (not only their order).
    pub fn changes_values(&self) -> bool {
        self.shift != 0.0 || self.neg_exp
    }
}

/// An order llama.cpp's converter stores a tensor's rows or columns in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Order {
    /// The rotary permutation of a query/key weight over this many heads (`LlamaModel.permute`): each
    /// head's two halves interleaved in pairs.
    Rotary { heads: usize },
    /// Qwen3.5's value heads of `head_dim` entries, from index `first` on, tiled
    /// (`[K0v0, K1v0, …, K0v1, …]`) instead of grouped by key head as HF has them
    /// (`_LinearAttentionVReorderBase`).
    TiledValueHeads { first: usize, key_heads: usize, head_dim: usize },
}

impl Order {
    /// For each index of HF's layout of `n` entries, the stored index; `None` unless `n` fits.
    pub fn hf_order(self, n: usize) -> Option<Vec<usize>> {
        match self {
            Self::Rotary { heads } => {
                if heads == 0 || !n.is_multiple_of(2 * heads) {
                    return None;
                }
                let half = n / heads / 2;
                // HF row h·2·half + j·half + i is stored row h·2·half + 2i + j.
                Some(
                    (0..heads)
                        .flat_map(|h| (0..2).flat_map(move |j| (0..half).map(move |i| h * 2 * half + 2 * i + j)))
                        .collect(),
                )
            }
            Self::TiledValueHeads { first, key_heads, head_dim } => {
                let values = n.checked_sub(first)?;
                if key_heads == 0 || head_dim == 0 || !values.is_multiple_of(key_heads * head_dim) {
                    return None;
                }
                let per_key = values / key_heads / head_dim;
                // HF head g·per_key + j (key head g's j-th) is stored head j·key_heads + g.
                let heads = (0..key_heads).flat_map(|g| (0..per_key).map(move |j| j * key_heads + g));
                Some((0..first).chain(heads.flat_map(|h| first + h * head_dim..first + (h + 1) * head_dim)).collect())
            }
        }
    }
}

/// llama.cpp's hard-coded Gemma 3 attention (`llama-model.cpp`): every 6th layer global, the others
/// sliding-window with rope base 10 000 and no rope scaling.
const GEMMA3_SWA_PATTERN: usize = 6;
const GEMMA3_SWA_ROPE_BASE: f64 = 10_000.0;

/// How text is split before a byte-level BPE (`tokenizer.ggml.pre`).
enum Split {
    /// GPT-2's own regex, inside the byte-level step.
    Gpt2,
    /// Digits one by one, then GPT-2's regex.
    Digits,
    /// This regex (isolated matches), then the bytes.
    Regex(&'static str),
}

/// A pre-tokenizer rmas builds from `tokenizer.ggml.pre`: the names llama.cpp gives it (`llama-vocab.cpp`),
/// its split, and the HF tokenizer's NFC normalizer and `ignore_merges` for the same family.
struct PreTokenizer {
    names: &'static [&'static str],
    split: Split,
    nfc: bool,
    ignore_merges: bool,
}

/// Qwen2's split (Qwen2.5, Qwen3, DeepSeek-R1-Distill-Qwen): single digits.
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's split: runs of up to three digits.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizers rmas reads (docs/gguf.md, "Tokenizer").
const PRE_TOKENIZERS: &[PreTokenizer] = &[
    PreTokenizer { names: &["default", "gpt2"], split: Split::Gpt2, nfc: false, ignore_merges: false },
    PreTokenizer { names: &["smollm", "starcoder"], split: Split::Digits, nfc: false, ignore_merges: false },
    PreTokenizer {
        names: &["qwen2", "deepseek-r1-qwen"],
        split: Split::Regex(QWEN2_SPLIT),
        nfc: true,
        ignore_merges: false,
    },
    PreTokenizer { names: &["llama-bpe"], split: Split::Regex(LLAMA3_SPLIT), nfc: false, ignore_merges: true },
];

/// llama.cpp's token types (`tokenizer.ggml.token_type`) that the tokenizer treats apart.
const TOKEN_NORMAL: u64 = 1;
const TOKEN_CONTROL: u64 = 3;
const TOKEN_USER_DEFINED: u64 = 4;

/// The model-specific parts of an HF `tokenizer.json`.
struct Pipeline {
    normalizer: Value,
    pre_tokenizer: Value,
    /// Runs before the BOS template, if any.
    post_processor: Option<Value>,
    decoder: Value,
    model: Value,
}

/// A GGUF file's header: metadata and tensor index.
#[derive(Clone, Debug)]
pub struct GgufFile {
    pub path: PathBuf,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<GgufTensor>,
}

/// Reads little-endian values from a byte slice, every read checked against its end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            format!("the header claims {n} bytes at offset {} but the file has {}", self.at, self.bytes.len())
        })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn count(&mut self, what: &str, max: u64) -> std::result::Result<usize, String> {
        let n = self.u64()?;
        if n > max {
            return Err(format!("{what} count {n} is implausible (at most {max})"));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| format!("a string of {n} bytes"))?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| format!("a string at offset {} is not UTF-8", self.at))
    }

    fn value(&mut self, kind: u32, depth: usize) -> std::result::Result<MetaValue, String> {
        Ok(match kind {
            0 => MetaValue::UInt(self.take(1)?[0].into()),
            1 => MetaValue::Int((self.take(1)?[0] as i8).into()),
            2 => MetaValue::UInt(u16::from_le_bytes(self.take(2)?.try_into().expect("2")).into()),
            3 => MetaValue::Int(i16::from_le_bytes(self.take(2)?.try_into().expect("2")).into()),
            4 => MetaValue::UInt(self.u32()?.into()),
            5 => MetaValue::Int((self.u32()? as i32).into()),
            6 => MetaValue::Float(f32::from_bits(self.u32()?).into()),
            7 => MetaValue::Bool(self.take(1)?[0] != 0),
            8 => MetaValue::Str(self.string()?),
            9 if depth == 0 => {
                let kind = self.u32()?;
                let n = self.count("array element", MAX_ARRAY)?;
                // Every element takes at least a byte: a count past the file's end fails here, before allocating.
                if n > self.bytes.len() - self.at {
                    return Err(format!("an array of {n} elements cannot fit the rest of the file"));
                }
                MetaValue::Array((0..n).map(|_| self.value(kind, depth + 1)).collect::<std::result::Result<_, _>>()?)
            }
            10 => MetaValue::UInt(self.u64()?),
            11 => MetaValue::Int(self.u64()? as i64),
            12 => MetaValue::Float(f64::from_bits(self.u64()?)),
            other => return Err(format!("unknown or nested metadata value type {other}")),
        })
    }
}

impl GgufFile {
    /// Reads the header of the GGUF file at `path` (memory-mapped: the tensors' bytes are not read).
    pub fn open(path: &Path) -> Result<Self> {
        Self::parse(&crate::weights::map_regular_file(path)?, path)
    }

    /// The model's config, as [`crate::config::parse`] maps the file's [`Self::hf_config`].
    pub fn config(&self) -> Result<crate::config::Config> {
        crate::config::parse(&self.hf_config()?.to_string(), &self.path)
    }

    /// Parses the header of a GGUF file's bytes (`path` names it in errors).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        Self::parse_inner(bytes, path).map_err(|msg| ModelError::CorruptWeights { path: path.to_owned(), msg })
    }

    fn parse_inner(bytes: &[u8], path: &Path) -> std::result::Result<Self, String> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(4).ok() != Some(b"GGUF".as_slice()) {
            return Err("not a GGUF file (no `GGUF` magic)".into());
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!("GGUF version {version} is not supported (2 and 3 are)"));
        }
        let n_tensors = r.count("tensor", MAX_ENTRIES)?;
        let n_meta = r.count("metadata", MAX_ENTRIES)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_meta {
            let key = r.string()?;
            let kind = r.u32()?;
            let value = r.value(kind, 0).map_err(|e| format!("metadata `{key}`: {e}"))?;
            metadata.insert(key, value);
        }
        let mut infos = Vec::with_capacity(n_tensors.min(bytes.len() / 24));
        for _ in 0..n_tensors {
            let name = r.string()?;
            let n_dims = r.u32()?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(format!("tensor `{name}` has {n_dims} dimensions (1 to {MAX_DIMS} expected)"));
            }
            let dims = (0..n_dims).map(|_| r.u64()).collect::<std::result::Result<Vec<_>, _>>()?;
            let id = r.u32()?;
            let ggml_type = GgmlType::from_id(id)
                .ok_or_else(|| format!("tensor `{name}` has ggml type {id}, which rmas does not decode"))?;
            let offset = r.u64()?;
            infos.push((name, dims, ggml_type, offset));
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => v.as_u64().filter(|a| a.is_power_of_two()).ok_or("general.alignment is not a power of two")?,
        } as usize;
        let data_start = r.at.div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(infos.len());
        for (name, dims, ggml_type, offset) in infos {
            let numel = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
            let (block, size) = ggml_type.block();
            let row = dims[0];
            let bytes_len = numel
                .filter(|_| row.is_multiple_of(block as u64))
                .and_then(|n| (n / block as u64).checked_mul(size as u64))
                .ok_or_else(|| {
                    format!(
                        "tensor `{name}` has dimensions {dims:?}: too large, or rows of no whole {ggml_type:?} blocks"
                    )
                })?;
            let start = (data_start as u64).checked_add(offset);
            let end =
                start.and_then(|s| s.checked_add(bytes_len)).filter(|&e| e <= bytes.len() as u64).ok_or_else(|| {
                    format!("tensor `{name}` lies past the end of the file ({} bytes; truncated?)", bytes.len())
                })?;
            let dims = dims.iter().map(|&d| d as usize).collect();
            tensors.push(GgufTensor { name, dims, ggml_type, range: (end - bytes_len) as usize..end as usize });
        }
        Ok(Self { path: path.to_owned(), metadata, tensors })
    }

    fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    fn err(&self, msg: String) -> ModelError {
        ModelError::Config { path: self.path.clone(), msg }
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.get("general.architecture")
            .and_then(MetaValue::as_str)
            .ok_or_else(|| self.err("missing `general.architecture`".into()))
    }

    /// The row of [`ARCHS`] for the file's `general.architecture`, or an error naming the supported ones.
    fn arch(&self) -> Result<&'static Arch> {
        let arch = self.architecture()?;
        ARCHS.iter().find(|a| a.name == arch).ok_or_else(|| ModelError::UnknownArchitecture {
            path: self.path.clone(),
            found: format!("GGUF architecture {arch}"),
            supported: ARCHS.iter().map(|a| a.name).collect::<Vec<_>>().join(", "),
        })
    }

    /// An HF-style `config.json` for the model, for `config::parse`.
    pub fn hf_config(&self) -> Result<Value> {
        let Arch { name: arch, model_type, .. } = self.arch()?;
        let key = |k: &str| format!("{arch}.{k}");
        let uint = |k: &str| {
            self.get(&key(k))
                .and_then(MetaValue::as_u64)
                .ok_or_else(|| self.err(format!("missing integer `{}`", key(k))))
        };
        let float = |k: &str| self.get(&key(k)).and_then(MetaValue::as_f64);
        let heads = uint("attention.head_count")?;
        let vocab = match self.get("tokenizer.ggml.tokens") {
            Some(MetaValue::Array(tokens)) => tokens.len() as u64,
            _ => uint("vocab_size")?,
        };
        let token = |k: &str| self.get(&format!("tokenizer.ggml.{k}")).and_then(MetaValue::as_u64);
        let hidden = uint("embedding_length")?;
        let layers = self.layers()?;
        let head_dim =
            self.get(&key("attention.key_length")).and_then(MetaValue::as_u64).unwrap_or(hidden / heads.max(1));
        let mut config = json!({
            "model_type": model_type,
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": self.get(&key("attention.head_count_kv")).and_then(MetaValue::as_u64).unwrap_or(heads),
            "intermediate_size": uint("feed_forward_length")?,
            "head_dim": head_dim,
            "max_position_embeddings": uint("context_length")?,
            "rms_norm_eps": float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            "rope_theta": float("rope.freq_base").unwrap_or(10_000.0),
            "vocab_size": vocab,
            "tie_word_embeddings": !self.tensors.iter().any(|t| t.name == "output.weight"),
            "bos_token_id": token("bos_token_id"),
            "eos_token_id": token("eos_token_id"),
        });
        if *model_type == "gemma3_text" {
            // As llama.cpp builds Gemma 3: its fixed sliding pattern and local rope, the rope
            // scaling of the global layers, and 27B's query scale (hidden / heads, else head_dim).
            let layer_types: Vec<&str> = (0..layers)
                .map(|l| if (l + 1) % GEMMA3_SWA_PATTERN == 0 { "full_attention" } else { "sliding_attention" })
                .collect();
            let base = float("rope.freq_base").unwrap_or(1_000_000.0);
            let scaling = self.get(&key("rope.scaling.type")).and_then(MetaValue::as_str).unwrap_or("linear");
            if !matches!(scaling, "linear" | "none") {
                return Err(self
                    .err(format!("`{}` is `{scaling}`; Gemma 3 takes linear rope scaling", key("rope.scaling.type"))));
            }
            let global = match float("rope.scaling.factor").filter(|f| *f != 0.0 && *f != 1.0 && scaling == "linear") {
                Some(factor) => json!({"rope_type": "linear", "factor": factor, "rope_theta": base}),
                None => json!({"rope_type": "default", "rope_theta": base}),
            };
            config["layer_types"] = json!(layer_types);
            config["sliding_window"] = json!(uint("attention.sliding_window")?);
            config["rope_parameters"] = json!({"full_attention": global,
                "sliding_attention": {"rope_type": "default", "rope_theta": GEMMA3_SWA_ROPE_BASE}});
            config["query_pre_attn_scalar"] = json!(if layers == 62 { hidden / heads.max(1) } else { head_dim });
            config["hidden_activation"] = json!("gelu_pytorch_tanh");
            config["final_logit_softcapping"] = json!(float("final_logit_softcapping"));
            config["attn_logit_softcapping"] = Value::Null;
        }
        if *model_type == "qwen3_5_text" {
            // `Qwen3NextModel.set_gguf_parameters`: the linear attention's sizes, which layers
            // attend to every key, and the rotary width (MRoPE's sections are plain RoPE for text).
            let value_heads = uint("ssm.time_step_rank")?;
            let layer_types: Vec<&str> = match self.get(&key("attention.recurrent_layers")) {
                Some(MetaValue::Array(flags)) => flags
                    .iter()
                    .take(layers)
                    .map(|f| if matches!(f, MetaValue::Bool(true)) { "linear_attention" } else { "full_attention" })
                    .collect(),
                _ => {
                    let interval = uint("full_attention_interval")?.max(1) as usize;
                    (0..layers)
                        .map(|l| if (l + 1) % interval == 0 { "full_attention" } else { "linear_attention" })
                        .collect()
                }
            };
            config["layer_types"] = json!(layer_types);
            config["linear_num_key_heads"] = json!(uint("ssm.group_count")?);
            config["linear_num_value_heads"] = json!(value_heads);
            config["linear_key_head_dim"] = json!(uint("ssm.state_size")?);
            config["linear_value_head_dim"] = json!(uint("ssm.inner_size")? / value_heads.max(1));
            config["linear_conv_kernel_dim"] = json!(uint("ssm.conv_kernel")?);
            config["partial_rotary_factor"] = json!(uint("rope.dimension_count")? as f64 / head_dim.max(1) as f64);
        }
        Ok(config)
    }

    /// Each tensor's HF name (`model.layers.0.self_attn.q_proj.weight`) and what the converter did to
    /// it: the query and key projections' rotary permutation (llama only), Gemma's and Qwen3.5's
    /// shifted norms, Qwen3.5's `A_log` and tiled value heads. The layers past the model's (MTP
    /// layers, `nextn_predict_layers`) keep their names under `mtp.`, which no model reads.
    pub fn hf_names(&self) -> Result<Vec<(String, Conversion)>> {
        let arch = self.arch()?;
        let meta = |k: &str| self.get(&format!("{}.{k}", arch.name)).and_then(MetaValue::as_u64).map(|v| v as usize);
        let rotary = |k: &str| meta(k).filter(|_| arch.permuted_qk).map(|heads| Order::Rotary { heads });
        let (q_rows, k_rows) = (rotary("attention.head_count"), rotary("attention.head_count_kv"));
        let layers = self.layers()?;
        // Qwen3.5's value heads where fewer key heads are shared among them: `ssm.group_count` key
        // heads of `ssm.state_size` (q and k, 2·k·state rows, come first), `ssm.time_step_rank` value
        // heads making `ssm.inner_size`.
        let linear = (arch.name == "qwen35")
            .then(|| {
                let (k, v) = (meta("ssm.group_count")?, meta("ssm.time_step_rank")?);
                let (inner, state) = (meta("ssm.inner_size")?, meta("ssm.state_size")?);
                (k != v && k != 0 && v.is_multiple_of(k) && inner.is_multiple_of(v)).then_some((
                    k,
                    2 * k * state,
                    inner / v,
                ))
            })
            .flatten();
        // The tiled order of a tensor's value heads: after q and k or from the start, each a head's
        // width or one entry.
        let tiled = |after_qk: bool, per_head: bool| {
            linear.map(|(key_heads, qk, dv)| Order::TiledValueHeads {
                first: if after_qk { qk } else { 0 },
                key_heads,
                head_dim: if per_head { dv } else { 1 },
            })
        };
        self.tensors
            .iter()
            .map(|t| {
                let name = &t.name;
                let top = match name.as_str() {
                    "token_embd.weight" => Some("model.embed_tokens.weight".to_owned()),
                    "output_norm.weight" => Some("model.norm.weight".to_owned()),
                    "output.weight" => Some("lm_head.weight".to_owned()),
                    // Llama 3's rope scaling as per-frequency divisors (`Rope::with_freq_factors`).
                    "rope_freqs.weight" => Some("rope_freqs.weight".to_owned()),
                    _ => None,
                };
                // The delta rule's own norm (`ssm_norm`) scales by its weight, unshifted.
                let shifted = name.ends_with("norm.weight") && !name.ends_with("ssm_norm.weight");
                let plain = Conversion { shift: if shifted { -arch.norm_shift } else { 0.0 }, ..Default::default() };
                if let Some(hf) = top {
                    return Ok((hf, plain));
                }
                let unknown = || self.err(format!("tensor `{name}` has no known HF name"));
                let (layer, rest) = name.strip_prefix("blk.").and_then(|r| r.split_once('.')).ok_or_else(unknown)?;
                if layer.parse::<usize>().is_ok_and(|l| l >= layers) {
                    return Ok((format!("mtp.{name}"), plain));
                }
                let (part, suffix) = rest.split_once('.').unwrap_or((rest, ""));
                let weight = suffix == "weight";
                let (hf, rows, columns) = match part {
                    "attn_q" => ("self_attn.q_proj", q_rows.filter(|_| weight), None),
                    "attn_k" => ("self_attn.k_proj", k_rows.or(q_rows).filter(|_| weight), None),
                    "attn_v" => ("self_attn.v_proj", None, None),
                    "attn_output" => ("self_attn.o_proj", None, None),
                    "attn_q_norm" => ("self_attn.q_norm", None, None),
                    "attn_k_norm" => ("self_attn.k_norm", None, None),
                    "attn_norm" => ("input_layernorm", None, None),
                    "ffn_norm" => (arch.ffn_norm, None, None),
                    "post_attention_norm" => ("post_attention_layernorm", None, None),
                    "post_ffw_norm" => ("post_feedforward_layernorm", None, None),
                    "ffn_gate" => ("mlp.gate_proj", None, None),
                    "ffn_up" => ("mlp.up_proj", None, None),
                    "ffn_down" => ("mlp.down_proj", None, None),
                    // Qwen3.5's Gated DeltaNet (`linear_attn`), value heads tiled.
                    "attn_qkv" => ("linear_attn.in_proj_qkv", tiled(true, true), None),
                    "ssm_conv1d" => ("linear_attn.conv1d", tiled(true, true), None),
                    "attn_gate" => ("linear_attn.in_proj_z", tiled(false, true), None),
                    "ssm_alpha" => ("linear_attn.in_proj_a", tiled(false, false), None),
                    "ssm_beta" => ("linear_attn.in_proj_b", tiled(false, false), None),
                    "ssm_out" => ("linear_attn.out_proj", None, tiled(false, true)),
                    "ssm_norm" => ("linear_attn.norm", None, None),
                    "ssm_a" => ("linear_attn.A_log", tiled(false, false), None),
                    "ssm_dt" if suffix == "bias" => ("linear_attn.dt_bias", tiled(false, false), None),
                    _ => return Err(unknown()),
                };
                let conversion =
                    Conversion { rows, columns, neg_exp: part == "ssm_a", squeezed: part == "ssm_conv1d", ..plain };
                let hf = match (part, suffix) {
                    ("ssm_a", _) | ("ssm_dt", _) => format!("model.layers.{layer}.{hf}"),
                    _ => format!("model.layers.{layer}.{hf}.{suffix}"),
                };
                Ok((hf, conversion))
            })
            .collect()
    }

    /// The model's layers: `block_count` less the MTP layers the converter appends
    /// (`nextn_predict_layers`).
    fn layers(&self) -> Result<usize> {
        let arch = self.architecture()?;
        let key = |k: &str| self.get(&format!("{arch}.{k}")).and_then(MetaValue::as_u64);
        let blocks = key("block_count").ok_or_else(|| self.err(format!("missing integer `{arch}.block_count`")))?;
        let mtp = key("nextn_predict_layers").unwrap_or(0);
        match blocks.checked_sub(mtp) {
            Some(n) if n > 0 => Ok(n as usize),
            _ => Err(self.err(format!("`{arch}.nextn_predict_layers` {mtp} leaves none of the {blocks} blocks"))),
        }
    }

    /// `tokenizer.json` and `tokenizer_config.json` texts built from `tokenizer.ggml.*` and
    /// `tokenizer.chat_template`: a byte-level BPE (`gpt2` model) or a SentencePiece BPE (`llama`
    /// model, Llama 2 / Mistral vocabularies) as llama.cpp tokenizes them (docs/gguf.md, "Tokenizer").
    pub fn tokenizer_files(&self) -> Result<(String, String)> {
        let model = self.get("tokenizer.ggml.model").and_then(MetaValue::as_str).unwrap_or("none");
        if !matches!(model, "gpt2" | "llama") {
            return Err(self.err(format!(
                "tokenizer.ggml.model `{model}` is not supported (byte-level BPE, `gpt2`, and SentencePiece BPE, `llama`, are)"
            )));
        }
        let strings = |k: &str| -> Result<Vec<&str>> {
            match self.get(k) {
                Some(MetaValue::Array(items)) => items
                    .iter()
                    .map(|v| v.as_str().ok_or_else(|| self.err(format!("`{k}` holds a non-string"))))
                    .collect(),
                _ => Err(self.err(format!("missing string array `{k}`"))),
            }
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let types: Vec<u64> = match self.get("tokenizer.ggml.token_type") {
            Some(MetaValue::Array(items)) => items.iter().map(|v| v.as_u64().unwrap_or(TOKEN_NORMAL)).collect(),
            _ => vec![TOKEN_NORMAL; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(self.err(format!("{} token types for {} tokens", types.len(), tokens.len())));
        }
        let token_text = |k: &str| {
            self.get(&format!("tokenizer.ggml.{k}"))
                .and_then(MetaValue::as_u64)
                .and_then(|id| tokens.get(id as usize))
                .map(|t| (*t).to_owned())
        };
        let vocab: serde_json::Map<String, Value> =
            tokens.iter().enumerate().map(|(i, t)| ((*t).to_owned(), json!(i))).collect();
        let (pipeline, user_normalized) = match model {
            "gpt2" => (self.byte_level_bpe(vocab, strings("tokenizer.ggml.merges")?)?, true),
            _ => (self.sentencepiece_bpe(vocab, &tokens, &types, token_text("unknown_token_id"))?, false),
        };
        // Control (3) and user-defined (4) tokens are matched whole before the BPE.
        let added: Vec<Value> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (_, ty))| matches!(**ty, TOKEN_CONTROL | TOKEN_USER_DEFINED))
            .map(|(id, (t, ty))| {
                json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                       "normalized": *ty == TOKEN_USER_DEFINED && user_normalized, "special": *ty == TOKEN_CONTROL})
            })
            .collect();
        // `add_bos_token` (llama.cpp's converter reads it from the HF post-processor) puts the BOS
        // token before every encoded text, as HF's `TemplateProcessing` does.
        let add_bos = matches!(self.get("tokenizer.ggml.add_bos_token"), Some(MetaValue::Bool(true)));
        let bos = token_text("bos_token_id").filter(|_| add_bos).map(|bos| {
            let id = self.get("tokenizer.ggml.bos_token_id").and_then(MetaValue::as_u64);
            let special = |type_id: u32| json!({"SpecialToken": {"id": bos, "type_id": type_id}});
            let sequence = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
            json!({"type": "TemplateProcessing",
                "single": [special(0), sequence("A", 0)],
                "pair": [special(0), sequence("A", 0), special(1), sequence("B", 1)],
                "special_tokens": {bos.as_str(): {"id": bos, "ids": [id], "tokens": [bos]}}})
        });
        let post_processor = match (pipeline.post_processor, bos) {
            (Some(post), Some(bos)) => json!({"type": "Sequence", "processors": [post, bos]}),
            (post, bos) => post.or(bos).unwrap_or(Value::Null),
        };
        let tokenizer = json!({
            "version": "1.0",
            "added_tokens": added,
            "normalizer": pipeline.normalizer,
            "pre_tokenizer": pipeline.pre_tokenizer,
            "post_processor": post_processor,
            "decoder": pipeline.decoder,
            "model": pipeline.model,
        });
        let config = json!({
            "bos_token": token_text("bos_token_id"),
            "eos_token": token_text("eos_token_id"),
            "pad_token": token_text("padding_token_id"),
            "unk_token": token_text("unknown_token_id"),
            "chat_template": self.get("tokenizer.chat_template").and_then(MetaValue::as_str),
            "clean_up_tokenization_spaces": false,
        });
        Ok((tokenizer.to_string(), config.to_string()))
    }

    /// A byte-level BPE (`gpt2` model): its pre-tokenizer from `tokenizer.ggml.pre`.
    fn byte_level_bpe(&self, vocab: serde_json::Map<String, Value>, merges: Vec<&str>) -> Result<Pipeline> {
        let pre = self.get("tokenizer.ggml.pre").and_then(MetaValue::as_str).unwrap_or("default");
        let pre = PRE_TOKENIZERS.iter().find(|p| p.names.contains(&pre)).ok_or_else(|| {
            let names: Vec<&str> = PRE_TOKENIZERS.iter().flat_map(|p| p.names.iter().copied()).collect();
            self.err(format!("tokenizer.ggml.pre `{pre}` is not supported ({})", names.join(", ")))
        })?;
        let byte_level =
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
        let pre_tokenizer = match pre.split {
            Split::Gpt2 => byte_level,
            Split::Digits => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level]}),
            Split::Regex(regex) => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}),
        };
        Ok(Pipeline {
            normalizer: if pre.nfc { json!({"type": "NFC"}) } else { Value::Null },
            pre_tokenizer,
            post_processor: Some(
                json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true}),
            ),
            decoder: json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
            model: json!({"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                          "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                          "ignore_merges": pre.ignore_merges, "vocab": vocab, "merges": merges}),
        })
    }

    /// A SentencePiece BPE (`llama` model) as llama.cpp's tokenizer runs it: spaces as `▁`, one
    /// before each text between special tokens where `tokenizer.ggml.add_space_prefix` (the
    /// default), then the merge of adjacent pieces whose join has the highest score, and bytes
    /// (`<0xXX>` tokens) for characters outside the vocabulary. The merges are derived from the
    /// scores (every split of a normal token into two tokens, ranked by the token's score), as HF's
    /// converter of SentencePiece models does.
    fn sentencepiece_bpe(
        &self,
        vocab: serde_json::Map<String, Value>,
        tokens: &[&str],
        types: &[u64],
        unk: Option<String>,
    ) -> Result<Pipeline> {
        let scores: Vec<f64> = match self.get("tokenizer.ggml.scores") {
            Some(MetaValue::Array(items)) if items.len() == tokens.len() => items
                .iter()
                .map(|v| v.as_f64().ok_or_else(|| self.err("`tokenizer.ggml.scores` holds a non-number".into())))
                .collect::<Result<_>>()?,
            _ => return Err(self.err(format!("missing `tokenizer.ggml.scores` of {} numbers", tokens.len()))),
        };
        let index: std::collections::HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (*t, i)).collect();
        // (score, id, left id, right id) of each split of a normal token into two tokens.
        let mut splits: Vec<(f64, usize, usize, usize)> = Vec::new();
        for (id, token) in tokens.iter().enumerate().filter(|(id, _)| types[*id] == TOKEN_NORMAL) {
            for (at, _) in token.char_indices().skip(1) {
                if let (Some(&l), Some(&r)) = (index.get(&token[..at]), index.get(&token[at..])) {
                    splits.push((scores[id], id, l, r));
                }
            }
        }
        splits.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2, a.3).cmp(&(b.1, b.2, b.3))));
        let merges: Vec<[&str; 2]> = splits.iter().map(|&(_, _, l, r)| [tokens[l], tokens[r]]).collect();
        let prefix = !matches!(self.get("tokenizer.ggml.add_space_prefix"), Some(MetaValue::Bool(false)));
        let replace = json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
        let (normalizer, strip) = if prefix {
            let prepend = json!({"type": "Prepend", "prepend": "\u{2581}"});
            (
                json!({"type": "Sequence", "normalizers": [prepend, replace]}),
                vec![json!({"type": "Strip", "content": " ", "start": 1, "stop": 0})],
            )
        } else {
            (replace, Vec::new())
        };
        let mut decoders = vec![
            json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
            json!({"type": "ByteFallback"}),
            json!({"type": "Fuse"}),
        ];
        decoders.extend(strip);
        Ok(Pipeline {
            normalizer,
            pre_tokenizer: Value::Null,
            post_processor: None,
            decoder: json!({"type": "Sequence", "decoders": decoders}),
            model: json!({"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                          "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                          "ignore_merges": false, "vocab": vocab, "merges": merges}),
        })
    }
}

/// The rows (`axis` 0) or columns (`axis` 1) of row-major `values` `[rows, cols]` in HF's layout:
/// entry `i` along the axis is stored entry `order[i]`. `None` if the sizes disagree.
pub fn reorder(values: &[f32], [rows, cols]: [usize; 2], axis: usize, order: &[usize]) -> Option<Vec<f32>> {
    if values.len() != rows * cols || order.len() != [rows, cols][axis] {
        return None;
    }
    Some(match axis {
        0 => order.iter().flat_map(|&src| &values[src * cols..(src + 1) * cols]).copied().collect(),
        _ => values.chunks_exact(cols).flat_map(|row| order.iter().map(|&src| row[src])).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmas_kernels::quant::BLOCK;

    /// Random blocks and their values as llama.cpp's Python reference decodes them
    /// (`tests/gguf_quants.py`).
    const QUANTS: &str = include_str!("../../../tests/fixtures/gguf/quants.json");

    #[test]
    fn every_block_format_decodes_as_llama_cpp() {
        let cases: serde_json::Map<String, Value> = serde_json::from_str(QUANTS).unwrap();
        let types = [
            ("Q4_0", GgmlType::Q4_0),
            ("Q4_1", GgmlType::Q4_1),
            ("Q8_0", GgmlType::Q8_0),
            ("Q4_K", GgmlType::Q4K),
            ("Q5_K", GgmlType::Q5K),
            ("Q6_K", GgmlType::Q6K),
            ("F16", GgmlType::F16),
            ("BF16", GgmlType::BF16),
        ];
        assert_eq!(cases.len(), types.len() + 1, "every decoded type, and `quantize`");
        for (name, ty) in types {
            let case = &cases[name];
            let got = ty.dequantize(&hex_bytes(&case["bytes"]));
            let want: Vec<f64> = case["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert_eq!(got.len(), want.len(), "{name}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((*g as f64 - w).abs() <= 1e-6 * w.abs().max(1e-3), "{name}[{i}]: {g} vs {w}");
            }
        }
    }

    fn hex_bytes(hex: &Value) -> Vec<u8> {
        let hex = hex.as_str().unwrap();
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn quantizing_makes_llama_cpp_blocks_byte_for_byte() {
        let cases: serde_json::Map<String, Value> = serde_json::from_str(QUANTS).unwrap();
        let formats = [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1];
        for format in formats {
            let case = &cases["quantize"][format.name()];
            let values: Vec<f32> =
                case["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            let rows = values.len() / (2 * BLOCK);
            let m = rmas_kernels::quant::QuantMatrix::quantize(format, &values, rows, 2 * BLOCK).unwrap();
            let want = hex_bytes(&case["bytes"]);
            let got: Vec<u8> = (0..rows).flat_map(|r| m.row_blocks(r).1.to_vec()).collect();
            assert_eq!(got.len(), want.len(), "{format}");
            for (b, (g, w)) in got.chunks(format.block_bytes()).zip(want.chunks(format.block_bytes())).enumerate() {
                assert_eq!(g, w, "{format} block {b}");
            }
        }
    }

    /// A minimal GGUF v3 file: one metadata string and one F32 tensor of `dims`.
    fn file(dims: &[u64], data: &[f32]) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        let string = |b: &mut Vec<u8>, s: &str| {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        };
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes()); // tensors
        b.extend(1u64.to_le_bytes()); // metadata
        string(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        string(&mut b, "llama");
        string(&mut b, "token_embd.weight");
        b.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| b.extend(d.to_le_bytes()));
        b.extend(0u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.resize(b.len().div_ceil(32) * 32, 0);
        data.iter().for_each(|x| b.extend(x.to_le_bytes()));
        b
    }

    #[test]
    fn headers_parse_and_hostile_ones_fail_clearly() {
        let path = Path::new("x.gguf");
        let good = file(&[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let g = GgufFile::parse(&good, path).unwrap();
        assert_eq!(g.architecture().unwrap(), "llama");
        assert_eq!((g.tensors[0].shape(), g.tensors[0].ggml_type), (vec![2, 3], GgmlType::F32));
        let t = &g.tensors[0];
        assert_eq!(GgmlType::F32.dequantize(&good[t.range.clone()]), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);

        let err = |bytes: &[u8]| GgufFile::parse(bytes, path).unwrap_err().to_string();
        assert!(err(b"GGML").contains("magic"));
        assert!(err(&good[..good.len() - 4]).contains("past the end"), "{}", err(&good[..good.len() - 4]));
        assert!(err(&good[..40]).contains("claims"));
        let mut huge = good.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(err(&huge).contains("implausible"));
        let overflow = file(&[u64::MAX / 2, 4], &[]);
        assert!(err(&overflow).contains("too large"), "{}", err(&overflow));
    }

    #[test]
    fn rotary_rows_are_unpermuted_as_transformers_does() {
        // 2 heads of 4 rows, 1 column: HF row h·4 + j·2 + i is stored at h·4 + 2i + j.
        let stored = [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0];
        let order = Order::Rotary { heads: 2 }.hf_order(8).unwrap();
        assert_eq!(reorder(&stored, [8, 1], 0, &order).unwrap(), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
        assert!(Order::Rotary { heads: 3 }.hf_order(8).is_none());
    }

    /// A Qwen3.5 file as the converter writes it by default, its MTP layer appended
    /// (`nextn_predict_layers`): the model has the other layers, and the MTP tensors keep names no
    /// model reads.
    #[test]
    fn qwen35_mtp_layers_are_set_apart() {
        let uint = MetaValue::UInt;
        let mut metadata: BTreeMap<String, MetaValue> = [
            ("block_count", 5),
            ("nextn_predict_layers", 1),
            ("embedding_length", 64),
            ("feed_forward_length", 128),
            ("context_length", 1024),
            ("attention.head_count", 4),
            ("attention.head_count_kv", 2),
            ("attention.key_length", 32),
            ("ssm.group_count", 2),
            ("ssm.time_step_rank", 4),
            ("ssm.state_size", 16),
            ("ssm.inner_size", 64),
            ("ssm.conv_kernel", 4),
            ("full_attention_interval", 4),
            ("rope.dimension_count", 8),
            ("vocab_size", 1280),
        ]
        .into_iter()
        .map(|(k, v)| (format!("qwen35.{k}"), uint(v)))
        .collect();
        metadata.insert("general.architecture".into(), MetaValue::Str("qwen35".into()));
        let recurrent = [true, true, true, false, false].map(MetaValue::Bool).to_vec();
        metadata.insert("qwen35.attention.recurrent_layers".into(), MetaValue::Array(recurrent));
        let tensor =
            |name: &str| GgufTensor { name: name.into(), dims: vec![64], ggml_type: GgmlType::F32, range: 0..256 };
        let names = ["blk.0.ssm_a", "blk.3.attn_q.weight", "blk.4.attn_q.weight", "blk.4.nextn.eh_proj.weight"];
        let file = GgufFile { path: "q.gguf".into(), metadata, tensors: names.map(tensor).to_vec() };
        let config = file.hf_config().unwrap();
        assert_eq!(config["num_hidden_layers"], 4);
        let types = ["linear_attention", "linear_attention", "linear_attention", "full_attention"];
        assert_eq!(config["layer_types"], json!(types));
        assert_eq!(
            (config["linear_value_head_dim"].clone(), config["partial_rotary_factor"].clone()),
            (json!(16), json!(0.25))
        );
        let hf: Vec<String> = file.hf_names().unwrap().into_iter().map(|(name, _)| name).collect();
        let want = [
            "model.layers.0.linear_attn.A_log",
            "model.layers.3.self_attn.q_proj.weight",
            "mtp.blk.4.attn_q.weight",
            "mtp.blk.4.nextn.eh_proj.weight",
        ];
        assert_eq!(hf, want);
        assert_eq!(file.config().unwrap().layers.len(), 4);
    }

    #[test]
    fn tiled_value_heads_are_grouped_again_as_transformers_has_them() {
        // 2 leading rows, then 2 key heads × 2 value heads each of 2 entries, stored tiled:
        // [K0v0, K1v0, K0v1, K1v1]; HF groups them [K0v0, K0v1, K1v0, K1v1].
        let stored = [9.0, 8.0, 0.0, 0.5, 2.0, 2.5, 1.0, 1.5, 3.0, 3.5];
        let order = Order::TiledValueHeads { first: 2, key_heads: 2, head_dim: 2 }.hf_order(10).unwrap();
        let rows = reorder(&stored, [10, 1], 0, &order).unwrap();
        assert_eq!(rows, [9.0, 8.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]);
        // The same order along the columns of a 2-row matrix.
        let matrix: Vec<f32> = stored.iter().chain(&stored).copied().collect();
        let columns = reorder(&matrix, [2, 10], 1, &order).unwrap();
        assert_eq!(columns[..10], rows[..]);
        assert_eq!(columns[10..], rows[..]);
        assert!(Order::TiledValueHeads { first: 2, key_heads: 3, head_dim: 2 }.hf_order(10).is_none());
    }
}
