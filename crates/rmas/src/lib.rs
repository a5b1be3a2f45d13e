//! RecursiveMAS runtime: RecursiveLinks, systems, hub access and deliberation tools.

pub mod demo;
pub mod engine;
pub mod error;
pub mod hub;
pub mod link;
pub mod system;
pub mod tools;

pub use error::{Result, RmasError};
