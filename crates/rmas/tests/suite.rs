//! The `rmas` crate's integration tests as one test binary (one link, not one per file). Each file
//! here is a module: `cargo test --release -p rmas --test suite links::` runs one file's tests.

mod common;
mod eval;
mod hostile_files;
mod links;
mod sandbox;
mod system;
mod tools;
