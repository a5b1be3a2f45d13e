//! `rmas bench`: prefill and decode throughput of a real-size Qwen3.5 config with random weights.

use std::time::Instant;

use anyhow::Result;
use burn::tensor::backend::Backend;
use rmas_models::generate::last_row;
use rmas_models::{Model, RmasBackend, demo::random_weights};

use crate::backend::{DeviceArgs, Job, dispatch};

/// Measure prefill and decode speed of a Qwen3.5 size (random weights; no download).
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Model size.
    #[arg(long, value_parser = ["0.8b", "2b", "4b"], default_value = "2b")]
    size: String,
    /// Prompt length of the prefill measurement.
    #[arg(long, default_value_t = 512)]
    prompt_len: usize,
    /// Number of decode steps to time.
    #[arg(long, default_value_t = 64)]
    decode_steps: usize,
    /// Peak memory bandwidth of the device in GB/s, to report the fraction reached.
    #[arg(long)]
    bandwidth_gbs: Option<f64>,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn main(args: Args) -> Result<()> {
    dispatch(&args.device.clone(), args)
}

/// `config.json` of a Qwen3.5 text model (sizes from the public configs).
fn config(size: &str) -> serde_json::Value {
    let (hidden, layers, inter, heads, kv, nv) = match size {
        "0.8b" => (1024, 24, 3584, 8, 2, 16),
        "4b" => (2560, 32, 9216, 16, 4, 32),
        _ => (2048, 24, 6144, 8, 2, 16),
    };
    let types: Vec<&str> =
        (0..layers).map(|i| if (i + 1) % 4 == 0 { "full_attention" } else { "linear_attention" }).collect();
    serde_json::json!({
        "model_type": "qwen3_5_text", "hidden_size": hidden, "num_hidden_layers": layers, "intermediate_size": inter,
        "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": 256, "layer_types": types,
        "linear_num_key_heads": 16, "linear_num_value_heads": nv, "linear_key_head_dim": 128, "linear_value_head_dim": 128,
        "linear_conv_kernel_dim": 4, "vocab_size": 248320, "tie_word_embeddings": true, "rms_norm_eps": 1e-6,
        "attn_output_gate": true, "max_position_embeddings": 262144,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25}
    })
}

impl Job for Args {
    fn run<B: RmasBackend>(self, device: B::Device) -> Result<()> {
        let cfg =
            rmas_models::config::parse(&config(&self.size).to_string(), std::path::Path::new("bench/config.json"))?;
        let dtype = self.device.dtype.dtype();
        let bytes_per = dtype.size() as f64;
        let c = &cfg;
        let weights = random_weights(c, 7);
        let started = Instant::now();
        let model = Model::<B>::from_weights(cfg.clone(), &weights, &device, dtype)?;
        B::sync(&device)?;
        eprintln!("built Qwen3.5-{} ({:?}) in {:.1} s", self.size, dtype, started.elapsed().as_secs_f64());
        let params = param_count(c);
        let ids: Vec<u32> = (0..self.prompt_len as u32).map(|i| (i * 7919) % 200_000).collect();

        // Warm-up: compiles kernels (JIT backends) for both shapes.
        let mut cache = model.new_cache(self.prompt_len, self.decode_steps + 8)?;
        let h = model.forward(model.embed(&ids)?, &mut cache)?;
        let _ = model.logits(last_row(h)).argmax(1).into_data();
        let _ = model.logits(model.forward(model.embed(&[1])?, &mut cache)?).argmax(1).into_data();

        let mut cache = model.new_cache(self.prompt_len, self.decode_steps + 8)?;
        let t = Instant::now();
        let h = model.forward(model.embed(&ids)?, &mut cache)?;
        let mut id = read_id::<B>(model.logits(last_row(h)));
        let prefill = t.elapsed().as_secs_f64();

        let t = Instant::now();
        for _ in 0..self.decode_steps {
            id = read_id::<B>(model.logits(model.forward(model.embed(&[id])?, &mut cache)?));
        }
        let decode = t.elapsed().as_secs_f64() / self.decode_steps as f64;
        let gb_per_token = params as f64 * bytes_per / 1e9;
        let gbs = gb_per_token / decode;
        println!(
            "{}",
            serde_json::json!({
                "model": format!("Qwen3.5-{}", self.size), "backend": B::name(&device), "dtype": format!("{dtype:?}"),
                "params": params, "prompt_len": self.prompt_len,
                "prefill_ms": prefill * 1e3, "prefill_tokens_per_s": self.prompt_len as f64 / prefill,
                "decode_ms_per_token": decode * 1e3, "decode_tokens_per_s": 1.0 / decode,
                "weights_gb_read_per_token": gb_per_token, "effective_gb_per_s": gbs,
                "fraction_of_bandwidth": self.bandwidth_gbs.map(|b| gbs / b),
            })
        );
        Ok(())
    }
}

/// One host read-back of the greedy token.
fn read_id<B: Backend>(logits: burn::tensor::Tensor<B, 2>) -> u32 {
    logits.argmax(1).into_data().convert::<i64>().to_vec::<i64>().map(|v| v[0] as u32).unwrap_or(0)
}

/// Parameters read per decoded token (embedding counted once: it is also the tied LM head).
fn param_count(c: &rmas_models::Config) -> usize {
    let h = c.hidden_size;
    let attn = h * c.num_heads * c.head_dim * 2 + 2 * h * c.num_kv_heads * c.head_dim + c.num_heads * c.head_dim * h;
    let g = c.gdn.expect("qwen3.5 config");
    let gdn = h * g.conv_dim()
        + h * g.value_dim()
        + 2 * h * g.num_value_heads
        + g.value_dim() * h
        + g.conv_dim() * g.conv_kernel;
    let mlp = 3 * h * c.intermediate_size;
    let layers: usize =
        c.layers.iter().map(|l| mlp + if l.mixer == rmas_models::config::Mixer::Attention { attn } else { gdn }).sum();
    layers + c.vocab_size * h
}
