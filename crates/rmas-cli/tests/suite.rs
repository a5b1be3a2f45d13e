//! The command line's end-to-end tests as one test binary (one link, not one per file). Each file
//! here is a module: `cargo test --release -p rmas-cli --test suite serve::` runs one file's tests.

mod bench;
mod cli;
mod common;
mod eval;
mod gguf;
mod serve;
