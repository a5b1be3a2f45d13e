//! A checkpoint's `tokenizer_config.json` and `chat_template.jinja` from untrusted bytes (split at
//! the first NUL), loaded with a fixed tokenizer and rendered as a RecursiveMAS prompt: the
//! template's work and output stay bounded.
#![no_main]

use rmas_text::chat::ChatOptions;
use rmas_text::tokenizer::{Tokenizer, TokenizerFiles};

/// A word-level tokenizer whose vocabulary is the special tokens the fixtures' configs name: it
/// parses in microseconds (a real `tokenizer.json` would take most of each run).
const TOKENIZER_JSON: &[u8] = br#"{"version":"1.0","added_tokens":[{"id":0,"content":"<unk>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":1,"content":"<s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":2,"content":"</s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":3,"content":"<pad>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":4,"content":"<bos>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":5,"content":"<eos>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":6,"content":"<|im_start|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":7,"content":"<|im_end|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":8,"content":"<|endoftext|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":9,"content":"<|begin_of_text|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":10,"content":"<|end_of_text|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":11,"content":"<|eot_id|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":12,"content":"<|start_header_id|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":13,"content":"<|end_header_id|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":14,"content":"<start_of_turn>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":15,"content":"<end_of_turn>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":16,"content":"[INST]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":17,"content":"[/INST]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,"model":{"type":"WordLevel","vocab":{"<unk>":0,"<s>":1,"</s>":2,"<pad>":3,"<bos>":4,"<eos>":5,"<|im_start|>":6,"<|im_end|>":7,"<|endoftext|>":8,"<|begin_of_text|>":9,"<|end_of_text|>":10,"<|eot_id|>":11,"<|start_header_id|>":12,"<|end_header_id|>":13,"<start_of_turn>":14,"<end_of_turn>":15,"[INST]":16,"[/INST]":17},"unk_token":"<unk>"}}"#;

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
