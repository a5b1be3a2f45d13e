//! The conformance suite in one test binary (bar tests/strict.rs): every backend, kernel, model and system check links the
//! models once, not once per file (CI builds it on 2 cores). Each file of `tests/` is a module, so
//! `cargo test --release --test suite models::` runs one file's tests. The files that turn strict f32
//! on for the whole process are the `strict` binary (tests/strict.rs).

mod activations;
mod delta_rule;
mod errors;
mod gguf_archs;
mod latent_fusion;
mod models;
mod quant;
mod sampling;
mod systems;
