//! Bad input gets a clear error that names what and where — never a panic or a wrong answer.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::DType;
use rmas_models::{Model, ModelError};
use rmas_suite::golden;

type B = NdArray;

/// A scratch copy of a golden model directory that a test may damage.
fn scratch(arch: &str, tag: &str) -> PathBuf {
    let src = golden(&format!("models/{arch}/model"));
    let dst = std::env::temp_dir().join(format!("rmas-errors-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    dst
}

/// A scratch copy of a golden model whose `config.json` has `from` replaced by `to`.
fn edited(arch: &str, tag: &str, from: &str, to: &str) -> PathBuf {
    let dir = scratch(arch, tag);
    let path = dir.join("config.json");
    let cfg = std::fs::read_to_string(&path).unwrap();
    assert!(cfg.contains(from), "{arch} config has no `{from}`");
    std::fs::write(&path, cfg.replace(from, to)).unwrap();
    dir
}

fn load(dir: &Path) -> Result<Model<B>, ModelError> {
    Model::<B>::load(dir, &Default::default(), DType::F32)
}

fn message(r: Result<Model<B>, ModelError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_weights_file_names_the_file() {
    let dir = scratch("qwen2", "missing");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let msg = message(load(&dir));
    assert!(msg.contains("model.safetensors") && msg.contains("cannot read"), "{msg}");
}

#[test]
fn corrupt_weights_file_is_reported() {
    let dir = scratch("qwen2", "corrupt");
    std::fs::write(dir.join("model.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}").unwrap();
    let msg = message(load(&dir));
    assert!(msg.contains("corrupt safetensors file") && msg.contains("model.safetensors"), "{msg}");
}

#[test]
fn truncated_weights_file_is_reported() {
    let dir = scratch("qwen3", "truncated");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let msg = message(load(&dir));
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn wrong_shape_names_tensor_and_shapes() {
    let dir = edited("llama", "shape", "\"intermediate_size\": 256", "\"intermediate_size\": 300");
    let msg = message(load(&dir));
    assert!(msg.contains("mlp.gate_proj.weight") && msg.contains("[300, 64]") && msg.contains("[256, 64]"), "{msg}");
}

#[test]
fn missing_tensor_is_named() {
    // Claim a tied model is untied: its LM head tensor is then missing.
    let dir = edited("qwen3", "untied", "\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false");
    let msg = message(load(&dir));
    assert!(msg.contains("lm_head.weight") && msg.contains("not found"), "{msg}");
}

#[test]
fn unknown_architecture_lists_supported() {
    let dir = edited("qwen2", "arch", "\"model_type\": \"qwen2\"", "\"model_type\": \"falcon\"");
    let msg = message(load(&dir));
    assert!(msg.contains("falcon") && msg.contains("qwen3_5") && msg.contains("gemma3"), "{msg}");
}

#[test]
fn unknown_rope_type_is_reported() {
    let dir = edited("llama", "rope", "\"rope_type\": \"llama3\"", "\"rope_type\": \"yarn\"");
    let msg = message(load(&dir));
    assert!(msg.contains("unsupported rope type `yarn`"), "{msg}");
}

#[test]
fn value_heads_not_a_multiple_of_key_heads_is_reported() {
    let dir = edited("qwen3_5", "gdn-heads", "\"linear_num_value_heads\": 4", "\"linear_num_value_heads\": 3");
    let msg = message(load(&dir));
    assert!(msg.contains("num_value_heads: 3") && msg.contains("multiple of linear_num_key_heads"), "{msg}");
}

#[test]
fn zero_sliding_window_is_an_error_only_where_layers_slide() {
    let msg = message(load(&edited("mistral", "window0", "\"sliding_window\": 4096", "\"sliding_window\": 0")));
    assert!(msg.contains("`sliding_window` is 0 but layers slide") && msg.contains("config.json"), "{msg}");
    // Without sliding layers a 0 means "no window" (as several exporters write it).
    assert!(load(&edited("qwen2", "window0", "\"sliding_window\": null", "\"sliding_window\": 0")).is_ok());
}

#[test]
fn logit_softcapping_is_reported() {
    let dir = edited("gemma3", "softcap", "\"final_logit_softcapping\": null", "\"final_logit_softcapping\": 30.0");
    let msg = message(load(&dir));
    assert!(msg.contains("`final_logit_softcapping` = 30 is not supported") && msg.contains("config.json"), "{msg}");
}

#[test]
fn prompt_past_the_context_is_an_error() {
    let model = load(&golden("models/qwen3_5/model")).unwrap();
    let mut cache = model.new_cache(8).unwrap();
    let err = model.forward(model.embed(&[1; 9]).unwrap(), &mut cache).unwrap_err().to_string();
    assert!(err.contains("9 positions exceeds the 8"), "{err}");
    let err = model.new_cache(usize::MAX).unwrap_err().to_string();
    assert!(err.contains("max_position_embeddings"), "{err}");
}

#[test]
fn token_outside_vocabulary_is_an_error() {
    let model = load(&golden("models/gemma3/model")).unwrap();
    let err = model.embed(&[5, 999_999]).unwrap_err().to_string();
    assert!(err.contains("999999") && err.contains("vocabulary"), "{err}");
}

#[test]
fn unsupported_dtype_on_backend_is_an_error() {
    for dtype in [DType::BF16, DType::F16] {
        let err = Model::<B>::load(&golden("models/qwen2/model"), &Default::default(), dtype).err().expect("ndarray has no half precision");
        assert!(err.to_string().contains("not supported by the ndarray backend"), "{err}");
    }
}
