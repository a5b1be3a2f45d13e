//! The `rmas-text` integration tests as one test binary (one link, not one per file). Each file
//! here is a module: `cargo test --release -p rmas-text --test suite goldens::` runs one file's tests.

mod api;
mod common;
mod goldens;
mod scoring;
