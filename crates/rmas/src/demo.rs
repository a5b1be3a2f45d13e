//! The built-in demo: the mixture system (math, code, science experts → Qwen3.5 summarizer) at tiny
//! sizes with deterministic random weights and links, built in-process — no download, no files.
//!
//! Configs and tokenizers are the real families' (shrunk vocabularies), so prompts, chat templates,
//! slot splitting and every model family run exactly as for a released system.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rmas_models::generate::Sampling;
use rmas_models::{Model, Precision, RmasBackend, demo::random_weights, demo::uniform};
use rmas_text::{ChatOptions, Dataset, Role, Style, Tokenizer, TokenizerFiles};

use crate::engine::{Agent, LoadedSystem};
use crate::error::{Result, RmasError};
use crate::link::{InnerLink, OuterLink};
use crate::options::RunOptions;

/// A question for demo runs.
pub const QUESTION: &str = "A baker makes 24 muffins in the morning and 18 muffins in the afternoon. He sells 30 of them. How many muffins are left?";

/// Seed of the demo's weights and links in `rmas run --demo` and the web demo.
pub const SEED: u64 = 42;

/// Settings of a demo run (CLI and browser alike): 2 rounds of 4 latent steps, then 24 greedy tokens,
/// no answer retry; chat templates print `chat_date`.
pub fn run_options(chat_date: NaiveDate) -> RunOptions {
    RunOptions {
        dataset: Dataset::Math500,
        fn_name: None,
        latent_steps: 4,
        rounds: 2,
        max_new_tokens: 24,
        sampling: Sampling::Greedy,
        seed: SEED,
        chat: ChatOptions::recursivemas(chat_date),
        answer_retry: false,
        summarize_every_round: true,
    }
}

/// Embedded files of one demo agent.
struct Assets {
    role: Role,
    config: &'static str,
    tokenizer: &'static [u8],
    tokenizer_config: &'static [u8],
    chat_template: &'static str,
    generation_config: &'static [u8],
}

macro_rules! assets {
    ($role:expr, $dir:literal) => {
        Assets {
            role: $role,
            config: include_str!(concat!("../assets/demo/", $dir, "/config.json")),
            tokenizer: include_bytes!(concat!("../assets/demo/", $dir, "/tokenizer.json")),
            tokenizer_config: include_bytes!(concat!("../assets/demo/", $dir, "/tokenizer_config.json")),
            chat_template: include_str!(concat!("../assets/demo/", $dir, "/chat_template.jinja")),
            generation_config: include_bytes!(concat!("../assets/demo/", $dir, "/generation_config.json")),
        }
    };
}

/// The demo agents in mixture order.
fn agents() -> [Assets; 4] {
    [
        assets!(Role::Math, "math"),
        assets!(Role::Code, "code"),
        assets!(Role::Science, "science"),
        assets!(Role::Summarizer, "summarizer"),
    ]
}

/// Builds the demo mixture system on `device` at `precision` (f32, or quantized agents), every value
/// derived from `seed`.
pub fn mixture<B: RmasBackend>(
    device: &B::Device,
    seed: u64,
    precision: impl Into<Precision>,
) -> Result<LoadedSystem<B>> {
    mixture_at(device, seed, precision.into(), None)
}

/// Widths of a resized demo system (benchmarks: the demo's families and prompts at a realistic cost).
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Every agent's hidden size (a multiple of 64: heads of 64).
    pub hidden: usize,
    /// Every agent's number of layers (Qwen3.5 keeps three Gated DeltaNet layers per attention layer).
    pub layers: usize,
}

/// The demo mixture with every agent resized to `scale` (MLP 3× wide, 2 KV heads; random weights
/// from `seed`): e.g. hidden 512 × 8 layers gives agents of ~25 M parameters.
pub fn mixture_scaled<B: RmasBackend>(
    device: &B::Device,
    seed: u64,
    precision: impl Into<Precision>,
    scale: Scale,
) -> Result<LoadedSystem<B>> {
    mixture_at(device, seed, precision.into(), Some(scale))
}

fn mixture_at<B: RmasBackend>(
    device: &B::Device,
    seed: u64,
    precision: Precision,
    scale: Option<Scale>,
) -> Result<LoadedSystem<B>> {
    let built = agents()
        .iter()
        .enumerate()
        .map(|(i, a)| agent(a, i, seed, device, precision.clone(), scale))
        .collect::<Result<Vec<_>>>()?;
    let hidden: BTreeMap<Role, usize> = built.iter().map(|a| (a.role, a.model.config().hidden_size)).collect();
    let mut outer = BTreeMap::new();
    for (i, edge) in Style::Mixture.spec().edges.iter().enumerate() {
        let shapes = OuterLink::<B>::shapes(hidden[&edge.source], hidden[&edge.target]);
        let link = OuterLink::from_safetensors_bytes(&link_bytes(&shapes, seed.wrapping_add(77 + i as u64))?, device)?;
        outer.insert(edge.key.to_string(), link);
    }
    Ok(LoadedSystem::new(Style::Mixture, built, outer))
}

/// The demo's Qwen3.5 summarizer alone (what `rmas generate --demo` runs).
pub fn summarizer<B: RmasBackend>(device: &B::Device, seed: u64, precision: impl Into<Precision>) -> Result<Agent<B>> {
    agent(&agents()[3], 3, seed, device, precision.into(), None)
}

/// Demo agent `i` of the mixture order, built from its assets.
fn agent<B: RmasBackend>(
    a: &Assets,
    i: usize,
    seed: u64,
    device: &B::Device,
    precision: Precision,
    scale: Option<Scale>,
) -> Result<Agent<B>> {
    let origin = format!("demo/{}", a.role);
    let json = match scale {
        Some(scale) => resized(a.config, scale)?,
        None => a.config.to_owned(),
    };
    let config = rmas_models::config::parse(&json, std::path::Path::new(&format!("{origin}/config.json")))?;
    let model_seed = seed.wrapping_add(1000 * i as u64);
    let weights = random_weights(&config, model_seed);
    let model = Model::from_weights(config, &weights, device, precision)?;
    let tokenizer = Tokenizer::from_bytes(TokenizerFiles {
        origin: &origin,
        tokenizer_json: a.tokenizer,
        tokenizer_config: Some(a.tokenizer_config),
        chat_template: Some(a.chat_template),
        generation_config: Some(a.generation_config),
    })?;
    let h = model.config().hidden_size;
    let inner = InnerLink::from_safetensors_bytes(&link_bytes(&InnerLink::<B>::shapes(h), model_seed + 1)?, device)?;
    Ok(Agent { role: a.role, model, tokenizer, inner })
}

/// An agent's `config.json` resized to `scale` (its text config where it nests one).
fn resized(config: &str, scale: Scale) -> Result<String> {
    let mut json: serde_json::Value = serde_json::from_str(config)
        .map_err(|e| RmasError::InvalidSystem { system: "demo".into(), msg: format!("an embedded config: {e}") })?;
    let text = match json.get_mut("text_config") {
        Some(text) => text,
        None => &mut json,
    };
    let (h, heads) = (scale.hidden, (scale.hidden / 64).max(1));
    let qwen35 = text.get("linear_num_value_heads").is_some();
    for (key, value) in [
        ("hidden_size", h),
        ("intermediate_size", 3 * h),
        ("num_hidden_layers", scale.layers),
        ("num_attention_heads", heads),
        ("num_key_value_heads", 2),
        ("head_dim", 64),
        ("linear_key_head_dim", 64),
        ("linear_value_head_dim", 64),
        ("linear_num_key_heads", (heads / 2).max(1)),
        ("linear_num_value_heads", heads),
    ] {
        if !key.starts_with("linear_") || qwen35 {
            text[key] = value.into();
        }
    }
    if text.get("layer_types").is_some() {
        let kind = |i: usize| match qwen35 && !(i + 1).is_multiple_of(4) {
            true => "linear_attention",
            false => "full_attention",
        };
        text["layer_types"] = (0..scale.layers).map(kind).collect::<Vec<_>>().into();
    }
    Ok(json.to_string())
}

/// A safetensors file of random link tensors: LayerNorm weights ≈ 0.5 (the rms of the demo embeddings),
/// biases small, matrices scaled by `1/√fan_in`.
fn link_bytes(shapes: &[(&'static str, Vec<usize>)], seed: u64) -> Result<Vec<u8>> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = shapes
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n: usize = shape.iter().product();
            let u = uniform(seed.wrapping_mul(31).wrapping_add(i as u64), n);
            let values: Vec<f32> = match (shape.len(), name.contains("ln")) {
                (2, _) => u.into_iter().map(|x| x * (3.0 / shape[1] as f32).sqrt()).collect(),
                (_, true) if name.ends_with("weight") => u.into_iter().map(|x| 0.5 + 0.05 * x).collect(),
                _ => u.into_iter().map(|x| 0.02 * x).collect(),
            };
            (name.to_string(), shape.clone(), values.iter().flat_map(|v| v.to_le_bytes()).collect())
        })
        .collect();
    let views = data
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| RmasError::InvalidSystem { system: "demo".into(), msg: e.to_string() })
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None)
        .map_err(|e| RmasError::InvalidSystem { system: "demo".into(), msg: e.to_string() })
}
