//! RecursiveMAS runtime: RecursiveLinks, systems (specs, resolution, loading), the recursion engine,
//! hub access, deliberation tools and benchmark evaluation.
//!
//! Layers, each using only those above it: `source` (file sources) ← `hub` ← `system` (specs) ←
//! `engine` types (`engine::LoadedSystem`, which `system::load` builds) ← `eval`.

pub mod demo;
pub mod engine;
pub mod error;
#[cfg(not(target_family = "wasm"))]
pub mod eval;
#[cfg(not(target_family = "wasm"))]
pub mod hub;
pub mod link;
pub mod options;
pub mod pt;
pub mod source;
pub mod system;
pub mod tools;

pub use error::{Result, RmasError};
