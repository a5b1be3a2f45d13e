//! A model's `config.json` from untrusted bytes: parsed and checked, or refused with an error.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = rmas_models::config::parse(text, std::path::Path::new("config.json"));
    }
});
