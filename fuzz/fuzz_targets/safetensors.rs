//! A safetensors checkpoint (header and tensor data) and a shard index from untrusted bytes:
//! every tensor the header names is read back at its declared shape.
#![no_main]

use std::path::{Path, PathBuf};

use rmas_models::Weights;
use rmas_models::weights::{ByteSource, shard_files};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = shard_files(text, Path::new("model.safetensors.index.json"));
    }
    let source: Box<dyn ByteSource> = Box::new(data.to_vec());
    let Ok(weights) = Weights::from_sources([(PathBuf::from("model.safetensors"), source)]) else { return };
    let names: Vec<String> = weights.names().map(str::to_owned).collect();
    for name in names {
        if let Some(shape) = weights.shape(&name).map(<[usize]>::to_vec) {
            let _ = weights.data(&name, &shape);
        }
    }
});
