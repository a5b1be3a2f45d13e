//! `rmas`: run RecursiveMAS systems (agents that talk through latent states) and single agent models.
#![recursion_limit = "256"]

mod backend;
mod bench;
mod eval;
mod generate;
mod run;
mod sandbox;
mod score;
mod serve;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// RecursiveMAS runtime: multi-agent LLM systems whose agents exchange latent states, on CPU, CUDA or wgpu.
///
/// Examples:
///   rmas run --demo                                   built-in tiny mixture system, offline
///   rmas run --style mixture --question "What is 2+3?"
///   rmas run --style sequential-light --dataset gpqa --question "..." --backend cuda --dtype bf16
///   rmas eval --style mixture --dataset math500 --result-jsonl out.jsonl
///   rmas score --input outputs.jsonl --output scored.jsonl --dataset gsm8k
///   rmas generate --model Qwen/Qwen3.5-2B --prompt "Hello" --chat
///   rmas generate --demo --prompt "Hello" --json
///   rmas serve --demo --port 8080                     OpenAI-compatible API at http://127.0.0.1:8080/v1
///   rmas doctor                                       can model-written code run isolated here?
///
/// Models and systems resolve through the Hugging Face cache (HF_HOME, HF_HUB_CACHE); set
/// HF_HUB_OFFLINE=1 to never touch the network.
#[derive(Parser)]
#[command(name = "rmas", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a RecursiveMAS system on a question.
    Run(run::Args),
    // `eval` and `score` take their help (summary and examples) from their argument structs.
    Eval(eval::Args),
    Score(score::Args),
    /// Serve a system over an OpenAI-compatible HTTP API (POST /v1/chat/completions, streaming too).
    Serve(serve::Args),
    /// Generate text with one agent model (any supported family).
    Generate(generate::Args),
    /// Measure prefill/decode speed of a real-size Qwen3.5 with random weights.
    Bench(bench::Args),
    /// Report which isolation features this machine offers for model-written code.
    Doctor(sandbox::DoctorArgs),
}

fn main() -> anyhow::Result<()> {
    backend::give_headless_vulkan_a_runtime_dir();
    match Cli::parse().command {
        Command::Run(args) => run::main(args),
        Command::Eval(args) => eval::main(args),
        Command::Score(args) => score::main(args),
        Command::Serve(args) => serve::main(args),
        Command::Generate(args) => generate::main(args),
        Command::Bench(args) => bench::main(args),
        Command::Doctor(args) => sandbox::doctor(args),
    }
}
