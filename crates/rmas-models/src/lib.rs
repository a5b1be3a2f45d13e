//! Backend-generic agent language models for rmas: Qwen3.5 (hybrid Gated DeltaNet + gated attention)
//! and the dense Qwen2, Qwen3, Llama 3.2, Mistral and Gemma 3 families, as one decoder configured per family.
#![recursion_limit = "256"]

pub mod attention;
pub mod batch;
pub mod config;
pub mod demo;
pub mod error;
pub mod gated_deltanet;
pub mod generate;
pub mod gguf;
pub mod model;
pub mod nn;
pub mod quant_cache;
pub mod traffic;
pub mod weights;

pub use config::{Config, Family};
pub use error::{ModelError, Result};
pub use model::{Cache, Model};
pub use nn::{Blocks, Precision};
pub use rmas_kernels::linear::cube::set_strict_f32;
pub use rmas_kernels::quant::{self, BlockFormat};
pub use rmas_kernels::{RmasBackend, on_cpu_pool};
pub use weights::Weights;

/// Runs a future (a generation, a RecursiveMAS run) to completion on the current thread (native only).
#[cfg(not(target_family = "wasm"))]
pub use futures_lite::future::block_on;
