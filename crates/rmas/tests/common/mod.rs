//! Helpers shared by the golden-system tests.

use rmas_text::{Style, Task};

/// The golden system cases (HF cache layouts with the reference pipeline's outputs).
pub const SYSTEMS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/golden/systems");

/// Every golden system case with its style and task (from its `expected.json` settings), sorted.
pub fn golden_cases() -> Vec<(String, Style, Task)> {
    let mut cases: Vec<(String, Style, Task)> = std::fs::read_dir(SYSTEMS)
        .unwrap_or_else(|e| panic!("{SYSTEMS}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("expected.json").is_file())
        .map(|path| {
            let text = std::fs::read_to_string(path.join("expected.json")).unwrap();
            let settings = &serde_json::from_str::<serde_json::Value>(&text).unwrap()["settings"];
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (
                name,
                settings["style"].as_str().unwrap().parse().unwrap(),
                settings["task"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(cases.len() >= 2, "system goldens missing under {SYSTEMS}");
    cases
}
