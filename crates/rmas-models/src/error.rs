//! Errors of model loading and execution.

use std::path::PathBuf;

/// Everything that can go wrong loading or running an agent model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// `config.json` (or another JSON file) is not what was expected.
    #[error("invalid {path}: {msg}")]
    Config { path: PathBuf, msg: String },
    /// The checkpoint names an architecture rmas does not implement.
    #[error("unsupported model_type `{found}` in {path}; supported: {supported}")]
    UnknownArchitecture { path: PathBuf, found: String, supported: String },
    /// A safetensors file is corrupt or truncated.
    #[error("corrupt safetensors file {path}: {msg}")]
    CorruptWeights { path: PathBuf, msg: String },
    /// A tensor the model needs is absent from every weight file.
    #[error("tensor `{name}` not found in {files}")]
    MissingTensor { name: String, files: String },
    /// A tensor has the wrong shape.
    #[error("tensor `{name}` in {path}: expected shape {expected:?}, found {found:?}")]
    Shape { name: String, path: PathBuf, expected: Vec<usize>, found: Vec<usize> },
    /// A tensor is stored in a dtype rmas cannot convert.
    #[error("tensor `{name}` in {path}: unsupported dtype {dtype} (expected BF16, F16 or F32)")]
    WeightDtype { name: String, path: PathBuf, dtype: String },
    /// The compute dtype is not available on the selected backend/device.
    #[error("dtype {dtype:?} is not supported by the {backend} backend on this device; try --dtype f32")]
    UnsupportedDtype { dtype: burn::tensor::DType, backend: String },
    /// A sequence would not fit the cache or the model's context window.
    #[error("sequence of {needed} positions exceeds the {limit} available ({what})")]
    ContextOverflow { needed: usize, limit: usize, what: &'static str },
    /// A cache would not fit the device (estimated before allocating it).
    #[error(
        "a cache of {capacity} positions needs {needed} bytes ({what}), more than the {limit} bytes available; lower --max-new-tokens or --latent-steps"
    )]
    CacheTooLarge { capacity: usize, needed: u64, limit: u64, what: &'static str },
    /// The device failed to execute or read back a tensor.
    #[error("device error: {0}")]
    Device(String),
    /// The model computed NaN or infinite values (bad weights or config values, e.g. NaN tensors or
    /// a negative `rms_norm_eps`, or non-finite inputs); `what` names them (logits, latents).
    #[error(
        "the model computed non-finite {what} (NaN or infinity): its weights or config values (e.g. rms_norm_eps) or its inputs hold non-finite numbers"
    )]
    NonFinite { what: &'static str },
    /// An input row has the wrong width or a token id is outside the vocabulary.
    #[error("invalid input: {0}")]
    Input(String),
}

/// Result alias for model operations.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
