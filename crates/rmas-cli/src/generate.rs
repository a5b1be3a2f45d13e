//! `rmas generate`: one agent model, greedy or sampled, streamed or as JSON.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chrono::Local;
use rmas::hub::Hub;
use rmas_models::generate::{GenerateOptions, Generation, Sampler, generate};
use rmas_models::{Model, Precision, RmasBackend};
use rmas_text::{ChatMessage, ChatOptions, Tokenizer};

use crate::backend::{DeviceArgs, Job, Target, WeightArgs, dispatch};
use crate::run::SamplingArgs;

/// Generate text with one agent model.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// A Hugging Face repo id (resolved through the HF cache), a local checkpoint directory, or a
    /// GGUF file (`*.gguf`, llama architecture; Q8_0/Q4_0/Q4_1 tensors kept as blocks on the CPU).
    #[arg(long, required_unless_present = "demo", conflicts_with = "demo")]
    model: Option<String>,
    /// Use a built-in tiny random-weight Qwen3.5 (no download; its text is gibberish).
    #[arg(long)]
    demo: bool,
    /// Prompt text.
    #[arg(long, required_unless_present = "prompt_ids", conflicts_with = "prompt_ids")]
    prompt: Option<String>,
    /// Wrap the prompt as a user turn with the model's chat template.
    #[arg(long, requires = "prompt")]
    chat: bool,
    /// Let the chat template open a thinking block (Qwen3/3.5).
    #[arg(long, requires = "chat")]
    thinking: bool,
    /// Prompt as comma-separated token ids (no tokenization).
    #[arg(long, value_delimiter = ',')]
    prompt_ids: Option<Vec<u32>>,
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    weights: WeightArgs,
    /// Also report each generated token's log-probability.
    #[arg(long)]
    logprobs: bool,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
}

pub fn main(args: Args) -> Result<()> {
    dispatch(&args.device.clone(), args)
}

impl Job for Args {
    fn run<B: RmasBackend>(self, target: Target<B>) -> Result<()> {
        let device = target.device;
        let precision = self.weights.precision::<B>(target.dtype)?;
        let (model, tokenizer) = if self.demo {
            demo::<B>(&device, precision)?
        } else {
            load::<B>(self.model.as_deref().unwrap_or_default(), &device, precision)?
        };
        let prompt_ids = match (&self.prompt_ids, &self.prompt) {
            (Some(ids), _) => ids.clone(),
            (None, Some(text)) if self.chat => {
                let opts = ChatOptions {
                    enable_thinking: Some(self.thinking),
                    ..ChatOptions::recursivemas(Local::now().date_naive())
                };
                let rendered = tokenizer.render_chat(&[ChatMessage::new("user", text.as_str())], &opts)?;
                tokenizer.encode(&rendered, false)?
            }
            (None, Some(text)) => tokenizer.encode(text, true)?,
            (None, None) => bail!("give --prompt or --prompt-ids"),
        };
        if prompt_ids.is_empty() {
            bail!("the prompt encodes to no tokens");
        }
        let mut stop_ids = tokenizer.generation_eos_ids().to_vec();
        stop_ids.extend(tokenizer.eos_token_id());
        let opts = GenerateOptions { max_new_tokens: self.max_new_tokens, stop_ids, logprobs: self.logprobs };
        let mut cache = model.new_cache(prompt_ids.len(), self.max_new_tokens)?;
        let mut sampler = Sampler::new(self.sampling.sampling(), self.sampling.seed);
        let mut printed = 0;
        let json = self.json;
        let out = rmas_models::block_on(generate(
            &model,
            model.embed(&prompt_ids)?,
            &mut cache,
            &opts,
            &mut sampler,
            |ids| {
                if !json {
                    printed = stream(&tokenizer, ids, printed);
                }
                false
            },
        ))?;
        report(&tokenizer, &prompt_ids, &out, &weight_blocks(&model), json)
    }
}

/// The weight matrices `model` holds as quantized blocks: per format (`Q4_K`, or `Q4_K+Q6_K` for a
/// fused projection of mixed types), how many and their bytes.
fn weight_blocks<B: RmasBackend>(model: &Model<B>) -> BTreeMap<String, (usize, usize)> {
    let mut out = BTreeMap::new();
    for m in model.block_matrices() {
        let (count, bytes) = out.entry(m.formats()).or_insert((0, 0));
        *count += 1;
        *bytes += m.bytes();
    }
    out
}

/// Prints the newly decoded suffix; returns how many bytes of text are out.
fn stream(tokenizer: &Tokenizer, ids: &[u32], printed: usize) -> usize {
    let (new, printed) = tokenizer.decode_new_text(ids, printed);
    print!("{new}");
    let _ = std::io::stdout().flush();
    printed
}

fn report(
    tokenizer: &Tokenizer,
    prompt: &[u32],
    out: &Generation,
    blocks: &BTreeMap<String, (usize, usize)>,
    json: bool,
) -> Result<()> {
    let text = tokenizer.decode(&out.ids, true)?;
    if json {
        let mut obj = serde_json::json!({
            "token_ids": out.ids,
            "text": text,
            "prompt_tokens": prompt.len(),
            "prefill_ms": out.prefill_ms,
            "decode_ms": out.decode_ms,
            "decode_tokens_per_s": out.decode_tokens_per_s(),
            "peak_resident_bytes": peak_resident_bytes(),
            "weight_blocks": blocks.iter().map(|(f, (n, bytes))| (f.clone(), serde_json::json!({"matrices": n, "bytes": bytes}))).collect::<serde_json::Map<_, _>>(),
        });
        if !out.logprobs.is_empty() {
            obj["logprobs"] = serde_json::json!(out.logprobs);
        }
        println!("{obj}");
    } else {
        println!();
        eprintln!(
            "[{} prompt tokens, {} generated; prefill {:.1} ms, decode {:.1} tokens/s]",
            prompt.len(),
            out.ids.len(),
            out.prefill_ms,
            out.decode_tokens_per_s()
        );
        if !blocks.is_empty() {
            let held: Vec<String> = blocks.iter().map(|(f, (n, _))| format!("{n} {f}")).collect();
            let bytes: usize = blocks.values().map(|(_, b)| b).sum();
            eprintln!("[weights as blocks: {} matrices, {:.1} MB]", held.join(", "), bytes as f64 / 1e6);
        }
    }
    Ok(())
}

/// This process's peak resident memory (Linux `VmHWM`), `None` where it cannot be read.
fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().strip_suffix("kB")?.trim();
    kib.parse::<u64>().ok()?.checked_mul(1024)
}

/// Loads a checkpoint directory or a Hub repo (downloading with progress unless HF_HUB_OFFLINE=1).
fn load<B: RmasBackend>(model: &str, device: &B::Device, precision: Precision) -> Result<(Model<B>, Tokenizer)> {
    let local = PathBuf::from(model);
    if local.extension().is_some_and(|e| e == "gguf") {
        let spinner = crate::run::spinner(format!("loading {}", local.display()));
        let loaded = rmas::system::load::load_gguf(&local, device, precision)?;
        spinner.finish_and_clear();
        return Ok(loaded);
    }
    let dir = if local.is_dir() {
        local
    } else {
        let hub = Hub::from_env();
        rmas::system::fetch_model(&hub.repo(model))
            .with_context(|| format!("resolving `{model}` (not a local directory)"))?
    };
    let spinner = crate::run::spinner(format!("loading {}", dir.display()));
    let model = Model::load(&dir, device, precision)?;
    let tokenizer = Tokenizer::from_dir(&dir)?;
    spinner.finish_and_clear();
    Ok((model, tokenizer))
}

/// The demo mixture system's Qwen3.5 summarizer as a stand-alone model.
fn demo<B: RmasBackend>(device: &B::Device, precision: Precision) -> Result<(Model<B>, Tokenizer)> {
    let agent = rmas::demo::summarizer::<B>(device, rmas::demo::SEED, precision)?;
    Ok((agent.model, agent.tokenizer))
}
