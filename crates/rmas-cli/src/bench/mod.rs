//! `rmas bench`: prefill and decode throughput of a Qwen3.5 text model with random weights, and what
//! a warm decode step costs the device, measured by the runtime (counters.rs; docs/performance.md).

mod counters;

use std::time::Instant;

use anyhow::Result;
use rmas_models::batch::{Batch, Calls, Sequence};
use rmas_models::generate::{GenerateOptions, Generation, Sampler, generate_with};
use rmas_models::{BlockFormat, Blocks, Model, RmasBackend, demo::random_weights};

use crate::backend::{DeviceArgs, Job, Target, WeightArgs, dispatch};
use crate::run::SamplingArgs;
use counters::Snapshot;

/// Measure prefill and decode speed of a Qwen3.5 size (random weights; no download), with kernel
/// launches, host reads/uploads, memory growth and autotune runs per decoded token.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Model size: the public Qwen3.5 widths, or `tiny` (the same layer pattern at small widths: seconds on
    /// wgpu/lavapipe, for the per-token budgets CI holds).
    #[arg(long, value_parser = SIZES.iter().map(|s| s.name).collect::<Vec<_>>(), default_value = "2b")]
    size: String,
    /// Prompt length of the prefill measurement.
    #[arg(long, default_value_t = 512)]
    prompt_len: usize,
    /// Number of warm decode steps to time and count.
    #[arg(long, default_value_t = 64)]
    decode_steps: usize,
    /// Sequences decoded together, their calls packed into one forward per step (docs/batching.md);
    /// tokens/s then counts every sequence's tokens.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    batch: u64,
    /// Peak memory bandwidth of the device in GB/s, to report the fraction reached.
    #[arg(long)]
    bandwidth_gbs: Option<f64>,
    /// Do not count kernel launches (cubecl then logs nothing per launch; for the cleanest timings).
    #[arg(long)]
    no_counters: bool,
    /// Time every kernel on the device as well (cubecl's profiler): `kernels` then gives each
    /// kernel's µs per token beside its launches. Each launch waits for the timer, so the step
    /// times of this run are longer than an untimed run's; compare `kernel_us_per_token` with an
    /// untimed `decode_ms_per_token` for the time outside the kernels.
    #[arg(long, conflicts_with = "no_counters")]
    kernel_times: bool,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
    /// How each step's token is chosen (greedy unless `--temperature` is given; sequence `i` seeds
    /// with `--seed` + i).
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    weights: WeightArgs,
}

/// The widths of one Qwen3.5 text size.
struct Size {
    name: &'static str,
    hidden: usize,
    layers: usize,
    intermediate: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    linear_key_heads: usize,
    linear_value_heads: usize,
    linear_head_dim: usize,
    vocab: usize,
}

/// The sizes `--size` offers (the public configs' widths; `tiny` keeps their layer pattern). Columns:
/// hidden, layers, intermediate, heads, KV heads, head dim, linear key heads, linear value heads,
/// linear head dim, vocabulary.
#[rustfmt::skip]
const SIZES: &[Size] = &[
    Size::new("tiny", [256, 8, 512, 4, 2, 64, 4, 8, 32, 4096]),
    Size::new("0.8b", [1024, 24, 3584, 8, 2, 256, 16, 16, 128, 248_320]),
    Size::new("2b", [2048, 24, 6144, 8, 2, 256, 16, 16, 128, 248_320]),
    Size::new("4b", [2560, 32, 9216, 16, 4, 256, 16, 32, 128, 248_320]),
];

/// Decode steps run before the counted window (kernels compiled, autotune done).
const WARM_STEPS: usize = 2;

pub fn main(args: Args) -> Result<()> {
    if !args.no_counters {
        counters::install(args.kernel_times)?;
    }
    dispatch(&args.device.clone(), args)
}

impl Size {
    /// A row of [`SIZES`].
    #[rustfmt::skip]
    const fn new(name: &'static str, w: [usize; 10]) -> Self {
        let [hidden, layers, intermediate, heads, kv_heads, head_dim, lk, lv, ld, vocab] = w;
        Self { name, hidden, layers, intermediate, heads, kv_heads, head_dim, linear_key_heads: lk, linear_value_heads: lv, linear_head_dim: ld, vocab }
    }

    /// `config.json` of this size (every layer's pattern: three Gated DeltaNet layers, then attention).
    fn config(&self) -> serde_json::Value {
        let types: Vec<&str> =
            (0..self.layers).map(|i| if (i + 1) % 4 == 0 { "full_attention" } else { "linear_attention" }).collect();
        serde_json::json!({
            "model_type": "qwen3_5_text", "hidden_size": self.hidden, "num_hidden_layers": self.layers,
            "intermediate_size": self.intermediate, "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads, "head_dim": self.head_dim, "layer_types": types,
            "linear_num_key_heads": self.linear_key_heads, "linear_num_value_heads": self.linear_value_heads,
            "linear_key_head_dim": self.linear_head_dim, "linear_value_head_dim": self.linear_head_dim,
            "linear_conv_kernel_dim": 4, "vocab_size": self.vocab, "tie_word_embeddings": true, "rms_norm_eps": 1e-6,
            "attn_output_gate": true, "max_position_embeddings": 262144,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25}
        })
    }
}

impl Job for Args {
    fn run<B: RmasBackend>(self, target: Target<B>) -> Result<()> {
        let size = SIZES.iter().find(|s| s.name == self.size).expect("clap checked the size");
        let cfg = rmas_models::config::parse(&size.config().to_string(), std::path::Path::new("bench/config.json"))?;
        let (device, dtype) = (target.device, target.dtype);
        let started = Instant::now();
        let precision = self.weights.precision::<B>(dtype)?;
        let model = Model::<B>::from_weights(cfg.clone(), &random_weights(&cfg, 7), &device, precision.clone())?;
        B::sync(&device).map_err(|e| anyhow::anyhow!("device sync: {e:?}"))?;
        let held = match precision.blocks {
            Blocks::Quantize(format) => format.name().to_string(),
            _ => format!("{dtype:?}").to_lowercase(),
        };
        eprintln!("built Qwen3.5-{} ({held}) in {:.1} s", size.name, started.elapsed().as_secs_f64());
        let prompt: Vec<u32> = (0..self.prompt_len as u32).map(|i| (i * 7919) % cfg.vocab_size as u32).collect();
        let batch = self.batch as usize;
        let (sampling, seed) = (self.sampling.sampling(), self.sampling.seed);
        // `batch` generations packed together; `on_token` sees the first sequence's ids (the
        // sequences step together, one token each per step).
        let run = |new_tokens: usize, on_token: &mut dyn FnMut(&[u32]) -> bool| {
            let packer = Batch::new();
            let calls = if batch > 1 { Calls::Packed(&packer) } else { Calls::Alone };
            let opts = GenerateOptions { max_new_tokens: new_tokens, stop_ids: Vec::new(), logprobs: false };
            let on_token = std::cell::RefCell::new(on_token);
            let (model, prompt, opts, on_token) = (&model, &prompt, &opts, &on_token);
            let sequences = (0..batch).map(|i| {
                Box::pin(async move {
                    let mut cache = model.new_cache(prompt.len(), new_tokens)?;
                    let mut sampler = Sampler::new(sampling, seed.wrapping_add(i as u64));
                    let watch = |ids: &[u32]| i == 0 && (on_token.borrow_mut())(ids);
                    let embedded = model.embed(prompt)?;
                    anyhow::Ok(generate_with(calls, model, embedded, &mut cache, opts, &mut sampler, watch).await?)
                }) as Sequence<'_, Result<Generation>>
            });
            packer.run_all(sequences.collect()).into_iter().next().expect("one sequence or more")
        };

        // Warm-up: compiles every kernel (JIT backends) and runs autotune for both phases.
        run(WARM_STEPS + 1, &mut |_| false)?;
        // Measured: prefill, then `decode_steps` steps between two snapshots, after the
        // first tokens (the same path `rmas generate` and the agents' decoding take).
        let steps = self.decode_steps.max(1);
        let mut marks: Vec<(Instant, Result<Snapshot>)> = Vec::new();
        // The clock starts after the first snapshot and stops before the second: a snapshot waits for
        // cubecl's log to settle, which is no part of a step.
        let generation = run(WARM_STEPS + 1 + steps, &mut |ids| {
            if ids.len() == WARM_STEPS + 1 {
                let snapshot = Snapshot::take::<B>(&device);
                marks.push((Instant::now(), snapshot));
            } else if ids.len() == WARM_STEPS + 1 + steps {
                let now = Instant::now();
                marks.push((now, Snapshot::take::<B>(&device)));
            }
            false
        })?;
        let [(t0, before), (t1, after)]: [_; 2] =
            marks.try_into().map_err(|_| anyhow::anyhow!("the measured run stopped before its last step"))?;
        let (before, after) = (before?, after?);
        let decode_s = (t1 - t0).as_secs_f64() / steps as f64 / batch as f64; // per token
        let prefill_s = generation.prefill_ms / 1e3;

        let params = param_count(&cfg);
        let weight_bytes = weight_bytes(&cfg, precision, B::BLOCKS_ON_DEVICE);
        let gbs = weight_bytes / 1e9 / (decode_s * batch as f64); // weights are read once per step
        let mut out = serde_json::json!({
            "model": format!("Qwen3.5-{}", size.name), "backend": target.choice, "params": params, "weights": held,
            "layers": cfg.layers.len(), "prompt_len": self.prompt_len, "decode_steps": steps,
            "batch": batch, "sampling": format!("{sampling:?}"),
            "prefill_ms": prefill_s * 1e3, "prefill_tokens_per_s": (batch * self.prompt_len) as f64 / prefill_s,
            "decode_ms_per_token": decode_s * 1e3, "decode_tokens_per_s": 1.0 / decode_s,
            "weight_bytes_per_token": weight_bytes, "effective_gb_per_s": gbs,
            "fraction_of_bandwidth": self.bandwidth_gbs.map(|b| gbs / b),
            "counters": !self.no_counters, "kernel_times": self.kernel_times,
        });
        let per_step = before.per_step(&after, steps * batch);
        if let (Some(o), serde_json::Value::Object(p)) = (out.as_object_mut(), per_step) {
            o.extend(p);
        }
        if self.json {
            println!("{out}");
        } else {
            print_summary(&out);
        }
        Ok(())
    }
}

/// The human-readable form of the measurement.
fn print_summary(m: &serde_json::Value) {
    let f = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "{} on {} ({} layers, {:.2} GB of weights per token)",
        m["model"].as_str().unwrap_or(""),
        m["backend"]["device"],
        m["layers"],
        f("weight_bytes_per_token") / 1e9
    );
    println!(
        "  prefill  {:>10.1} tokens/s ({} tokens in {:.1} ms)",
        f("prefill_tokens_per_s"),
        m["prompt_len"],
        f("prefill_ms")
    );
    println!(
        "  decode   {:>10.1} tokens/s ({:.2} ms/token, {:.1} GB/s of weights)",
        f("decode_tokens_per_s"),
        f("decode_ms_per_token"),
        f("effective_gb_per_s")
    );
    if let Some(fraction) = m["fraction_of_bandwidth"].as_f64() {
        println!("           {:>10.1} % of the memory-bandwidth limit", fraction * 100.0);
    }
    for k in [
        "launches_per_token",
        "host_reads_per_token",
        "host_read_bytes_per_token",
        "host_uploads_per_token",
        "device_bytes_growth_per_token",
        "autotune_runs_after_warmup",
    ] {
        if !m[k].is_null() {
            println!("  {k:<30} {}", m[k]);
        }
    }
    print_kernels(m);
}

/// The costliest kernels of a step (`kernels`, sorted by `counters.rs`), one line each.
fn print_kernels(m: &serde_json::Value) {
    const SHOWN: usize = 12;
    let Some(kernels) = m["kernels"].as_array().filter(|k| !k.is_empty()) else {
        if m["kernel_times"] == true {
            println!("  (--kernel-times: {} launches no cubecl kernels to time)", m["backend"]["backend"]);
        }
        return;
    };
    let timed = m["kernel_us_per_token"].as_f64();
    match timed {
        Some(total) => println!(
            "  kernels per token, by device time ({total:.1} µs in all; every launch timed, so the step times above are not the untimed ones):"
        ),
        None => println!("  kernels per token, by launches (--kernel-times adds their device time):"),
    }
    for k in kernels.iter().take(SHOWN) {
        let launches = k["launches_per_token"].as_f64().unwrap_or(f64::NAN);
        let name = short_name(k["name"].as_str().unwrap_or(""));
        match k["us_per_token"].as_f64() {
            Some(us) => println!("    {launches:>7.2} × {us:>10.1} µs  {name}"),
            None => println!("    {launches:>7.2} ×  {name}"),
        }
    }
    if kernels.len() > SHOWN {
        println!("    … {} more (--json lists them all)", kernels.len() - SHOWN);
    }
}

/// A kernel's name as cubecl writes it (`MatmulEntry | TensorArgs | DynamicScalar | __Lhs | … |
/// UnitMatmulFamily | … | WgpuRuntime`) without the argument plumbing: the kernel, then the
/// families and layouts that tell its variants apart.
fn short_name(name: &str) -> String {
    const PLUMBING: [&str; 5] = ["TensorArgs", "DynamicScalar", "DynamicSize", "Option", "()"];
    let mut kept: Vec<&str> = Vec::new();
    for part in name.split(" | ").filter(|p| !p.starts_with("__") && !PLUMBING.contains(p)) {
        if kept.last() != Some(&part) {
            kept.push(part);
        }
    }
    kept.join(" | ")
}

/// Bytes of weights read per decoded token at `precision` (quantized: layer weights in their block
/// format, the embedding/LM head in Q8_0, as stored or in the device layout where `on_device`; the
/// small GDN convolution stays dense either way).
fn weight_bytes(c: &rmas_models::Config, precision: rmas_models::Precision, on_device: bool) -> f64 {
    let vocab = (c.vocab_size * c.hidden_size) as f64;
    let layers = param_count(c) as f64 - vocab;
    let per_weight = |f: BlockFormat| match on_device {
        true => f.device_bits_per_weight() as f64 / 8.0,
        false => f.block_bytes() as f64 / f.block_weights() as f64,
    };
    match precision.blocks {
        Blocks::Quantize(format) => layers * per_weight(format) + vocab * per_weight(BlockFormat::Q8_0),
        _ => (layers + vocab) * precision.dtype.size() as f64,
    }
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
