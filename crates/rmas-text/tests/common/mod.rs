//! Fixture access shared by the integration tests.

use std::path::PathBuf;

use rmas_text::Tokenizer;

/// Path under `tests/fixtures/golden/` of the workspace.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/golden")).join(rel)
}

/// The tokenizer of a tiny per-architecture model (`models/<arch>/model`).
pub fn model_tokenizer(arch: &str) -> Tokenizer {
    let dir = fixture(&format!("models/{arch}/model"));
    Tokenizer::from_dir(&dir).unwrap_or_else(|e| panic!("{arch}: {e}"))
}
