//! A GGUF file from untrusted bytes: the header parsed, every tensor it declares decoded, and the
//! config, HF names and tokenizer files derived from its metadata.
#![no_main]

use rmas_models::gguf::GgufFile;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::parse(data, std::path::Path::new("fuzz.gguf")) else { return };
    for tensor in &file.tensors {
        let _ = tensor.ggml_type.dequantize(&data[tensor.range.clone()]);
    }
    let _ = file.hf_config();
    let _ = file.hf_names();
    let _ = file.tokenizer_files();
});
