//! Bad input gets a clear error that names what and where — never a panic or a wrong answer.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::DType;
use rmas_models::{Model, ModelError};
use rmas_suite::golden;
use serde_json::{Value, json};

type B = NdArray;

/// A scratch copy of a golden model directory that a test may damage; removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

fn scratch(arch: &str, tag: &str) -> Scratch {
    let src = golden(&format!("models/{arch}/model"));
    let dst = std::env::temp_dir().join(format!("rmas-errors-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    Scratch(dst)
}

/// A scratch copy of a golden model whose `config.json` has `from` replaced by `to`.
fn edited(arch: &str, tag: &str, from: &str, to: &str) -> Scratch {
    let dir = scratch(arch, tag);
    let path = dir.join("config.json");
    let cfg = std::fs::read_to_string(&path).unwrap();
    assert!(cfg.contains(from), "{arch} config has no `{from}`");
    std::fs::write(&path, cfg.replace(from, to)).unwrap();
    dir
}

/// A scratch copy of a golden model whose text-model config has `edits` set (null removes the key).
fn edited_json(arch: &str, tag: &str, edits: &[(&str, Value)]) -> Scratch {
    let dir = scratch(arch, tag);
    let path = dir.join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let text = if cfg.get("text_config").is_some() { &mut cfg["text_config"] } else { &mut cfg };
    let text = text.as_object_mut().unwrap();
    for (key, value) in edits {
        match value {
            Value::Null => text.remove(*key),
            v => text.insert((*key).to_owned(), v.clone()),
        };
    }
    std::fs::write(&path, cfg.to_string()).unwrap();
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
    let dir = edited("llama", "rope", "\"rope_type\": \"llama3\"", "\"rope_type\": \"longrope\"");
    let msg = message(load(&dir));
    assert!(msg.contains("unsupported rope type `longrope`"), "{msg}");
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
fn logit_softcap_must_be_positive() {
    let dir = edited("gemma3", "softcap", "\"final_logit_softcapping\": null", "\"final_logit_softcapping\": -1.0");
    // Gemma3ForConditionalGeneration never reads the cap; Gemma3ForCausalLM (`gemma3_text`) does.
    assert!(load(&dir).is_ok(), "a `gemma3` config's logit cap is unused");
    let path = dir.join("config.json");
    let cfg = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"model_type\": \"gemma3\",", "\"model_type\": \"gemma3_text\",");
    std::fs::write(&path, cfg).unwrap();
    let msg = message(load(&dir));
    assert!(
        msg.contains("`final_logit_softcapping` is -1; expected a positive number") && msg.contains("config.json"),
        "{msg}"
    );
}

#[test]
fn degenerate_sizes_are_errors_not_panics() {
    let rope = json!({"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.3});
    let cases = [
        ("qwen2", vec![("num_key_value_heads", json!(0))], "positive multiple of num_key_value_heads 0"),
        ("llama", vec![("num_attention_heads", json!(0))], "num_attention_heads 0 must be"),
        ("qwen3", vec![("head_dim", json!(0))], "head_dim is 0"),
        ("llama", vec![("partial_rotary_factor", json!(2.0))], "rotary width 32"),
        ("qwen3_5", vec![("rope_parameters", rope)], "rotary width 9"),
        ("qwen3", vec![("partial_rotary_factor", json!(0.0))], "rotary width 0"),
        ("qwen3", vec![("rope_parameters", json!({"rope_type": "default", "rope_theta": 0.0}))], "`rope_theta` is 0"),
        ("qwen2", vec![("num_hidden_layers", json!(1u64 << 40))], "num_hidden_layers 1099511627776 is implausible"),
        (
            "qwen3_5",
            vec![("layer_types", Value::Null), ("full_attention_interval", json!(0))],
            "`full_attention_interval` is 0",
        ),
        (
            "gemma3",
            vec![("layer_types", Value::Null), ("sliding_window_pattern", json!(0))],
            "`sliding_window_pattern` is 0",
        ),
        ("gemma3", vec![("head_dim", json!(15))], "rotary width 15"),
        (
            "gemma3",
            vec![("rope_parameters", Value::Null), ("rope_local_base_freq", json!(0.0))],
            "`rope_local_base_freq` is 0",
        ),
    ];
    for (i, (arch, edits, expected)) in cases.iter().enumerate() {
        let msg = message(load(&edited_json(arch, &format!("degenerate{i}"), edits)));
        assert!(msg.contains(expected) && msg.contains("config.json"), "{arch}: {msg}");
    }
}

/// Every number in every golden config (RoPE parameters included) set to awkward values: loading
/// and a short forward pass give a result or a clear error, never a panic.
#[test]
fn number_config_edits_never_panic() {
    let values = |v: &Value| -> Vec<Value> {
        match v {
            Value::Number(n) if n.is_u64() => vec![json!(0), json!(1), json!(3), json!(1u64 << 40)],
            Value::Number(_) => vec![json!(0.0), json!(-1.0), json!(1e30)],
            _ => vec![],
        }
    };
    let mut panics = Vec::new();
    for arch in ["qwen2", "qwen3", "qwen3_5", "llama", "mistral", "gemma3"] {
        let base: Value = serde_json::from_str(
            &std::fs::read_to_string(golden(&format!("models/{arch}/model/config.json"))).unwrap(),
        )
        .unwrap();
        let text = base.get("text_config").unwrap_or(&base).as_object().unwrap();
        // (top-level key, edited value) pairs: numbers directly, numbers inside objects one at a time.
        let mut edits: Vec<(String, Value)> = Vec::new();
        for (key, v) in text {
            edits.extend(values(v).into_iter().map(|x| (key.clone(), x)));
            for (inner, iv) in v.as_object().into_iter().flatten() {
                for x in values(iv) {
                    let mut obj = v.clone();
                    obj[inner] = x;
                    edits.push((key.clone(), obj));
                }
            }
        }
        for (i, (key, value)) in edits.iter().enumerate() {
            let dir = edited_json(arch, &format!("number-{arch}-{i}"), &[(key, value.clone())]);
            let run = std::panic::catch_unwind(|| {
                let Ok(model) = load(&dir) else { return };
                let Ok(mut cache) = model.new_cache(4, 0) else { return };
                if let Ok(h) = model.embed(&[1, 2, 3, 4]).and_then(|x| model.forward(x, &mut cache)) {
                    let _ = model.logits(h);
                }
            });
            if run.is_err() {
                panics.push(format!("{arch}: {key} = {value}"));
            }
        }
    }
    assert!(panics.is_empty(), "panicked for {panics:?}");
}

#[test]
fn prompt_past_the_context_is_an_error() {
    let model = load(&golden("models/qwen3_5/model")).unwrap();
    let mut cache = model.new_cache(8, 0).unwrap();
    let err = model.forward(model.embed(&[1; 9]).unwrap(), &mut cache).unwrap_err().to_string();
    assert!(err.contains("9 positions exceeds the 8"), "{err}");
    let err = model.new_cache(usize::MAX, 0).unwrap_err().to_string();
    assert!(err.contains("max_position_embeddings"), "{err}");
    // A sum that would wrap is past the context too, not a small cache.
    let err = model.new_cache(usize::MAX, 2).unwrap_err().to_string();
    assert!(err.contains("max_position_embeddings"), "{err}");
}

#[test]
fn a_cache_larger_than_memory_is_refused_before_allocating() {
    // A hostile config's context window (2^62) with a huge budget: estimated, not allocated.
    let dir = edited_json("qwen3", "huge-context", &[("max_position_embeddings", serde_json::json!(1u64 << 62))]);
    let model = load(&dir).unwrap();
    let err = model.new_cache(16, 1 << 40).unwrap_err().to_string();
    assert!(err.contains("bytes available") && err.contains("--max-new-tokens"), "{err}");
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
        let err = Model::<B>::load(&golden("models/qwen2/model"), &Default::default(), dtype)
            .err()
            .expect("ndarray has no half precision");
        assert!(err.to_string().contains("not supported by the ndarray backend"), "{err}");
    }
}

#[test]
fn an_empty_prompt_is_an_error_not_a_panic() {
    use rmas_models::batch::Calls;
    use rmas_models::generate::{GenerateOptions, Sampler, Sampling, generate_with, prefill};
    let model = load(&golden("models/qwen3/model")).unwrap();
    let mut cache = model.new_cache(0, 4).unwrap();
    let empty = model.embed(&[]).unwrap();
    let err = rmas_models::block_on(prefill(Calls::Alone, &model, empty.clone(), &mut cache)).unwrap_err();
    assert!(matches!(&err, ModelError::Input(m) if m.contains("at least one row")), "{err}");
    let opts = GenerateOptions { max_new_tokens: 2, stop_ids: vec![], logprobs: false };
    let mut sampler = Sampler::new(Sampling::Greedy, 0);
    let generated = generate_with(Calls::Alone, &model, empty, &mut cache, &opts, &mut sampler, |_| false);
    let err = rmas_models::block_on(generated).unwrap_err();
    assert!(err.to_string().contains("at least one row"), "{err}");
    assert_eq!(cache.len(), 0, "nothing was written to the cache");
}
