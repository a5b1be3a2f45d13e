//! The conformance suite as one test binary: every backend, kernel, model and system check links the
//! models once, not once per file (CI builds it on 2 cores). Each file of `tests/` is a module, so
//! `cargo test --release --test suite batching::` runs one file's tests.

mod activations;
mod batching;
mod delta_rule;
mod errors;
mod gguf_archs;
mod latent_fusion;
mod models;
mod quant;
mod sampling;
mod strict_f32;
mod systems;
