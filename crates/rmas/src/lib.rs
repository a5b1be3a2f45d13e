//! RecursiveMAS runtime: RecursiveLinks, systems, hub access and deliberation tools.

pub mod demo;
pub mod engine;
pub mod error;
#[cfg(not(target_family = "wasm"))]
pub mod eval;
#[cfg(not(target_family = "wasm"))]
pub mod hub;
pub mod link;
pub mod options;
mod pt;
pub mod system;
pub mod tools;
pub mod topology;

pub use error::{Result, RmasError};
