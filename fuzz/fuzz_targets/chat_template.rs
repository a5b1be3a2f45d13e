//! A checkpoint's `tokenizer_config.json` and `chat_template.jinja` from untrusted bytes (split at
//! the first NUL), loaded with a fixed tokenizer and rendered as a RecursiveMAS prompt: the
//! template's work and output stay bounded.
#![no_main]

use rmas_text::chat::ChatOptions;
use rmas_text::tokenizer::{Tokenizer, TokenizerFiles};

const TOKENIZER_JSON: &[u8] = include_bytes!("../../tests/fixtures/golden/models/qwen2/model/tokenizer.json");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (config, template) = match data.iter().position(|&b| b == 0) {
        Some(at) => match std::str::from_utf8(&data[at + 1..]) {
            Ok(template) => (&data[..at], Some(template)),
            Err(_) => return,
        },
        None => (data, None),
    };
    let files = TokenizerFiles {
        origin: "fuzz",
        tokenizer_json: TOKENIZER_JSON,
        tokenizer_config: Some(config),
        chat_template: template,
        generation_config: None,
    };
    if let Ok(tokenizer) = Tokenizer::from_bytes(files) {
        let date = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).expect("a valid date");
        let _ = tokenizer.render_prompt("You are a solver.", "What is 1 + 1?", &ChatOptions::recursivemas(date));
    }
});
