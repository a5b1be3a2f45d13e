//! `rmas run`: a RecursiveMAS system on one question, with a live per-stage progress display.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use burn::tensor::DType;
use chrono::{Local, NaiveDate};
use indicatif::{ProgressBar, ProgressStyle};
use rmas::engine::{AnswerStream, Event, LoadedSystem, Run, StageKind};
use rmas::hub::Hub;
use rmas::options::{RunOptions, RunOverrides};
use rmas::system::SystemSpec;
use rmas_models::RmasBackend;
use rmas_models::generate::Sampling;
use rmas_text::RowQuestion;
use rmas_text::{Dataset, Style, Task};

use crate::backend::{DeviceArgs, Job, Target, WeightArgs, dispatch};
use crate::sandbox::{ToolArgs, toolbox};

/// Sampling flags (HF semantics: temperature → top-k → top-p → multinomial).
#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Greedy decoding (argmax).
    #[arg(long, conflicts_with_all = ["temperature", "top_p"])]
    greedy: bool,
    /// Sampling temperature (default: the dataset's recommended value for `run`, greedy for `generate`).
    #[arg(long)]
    temperature: Option<f32>,
    /// Nucleus sampling mass.
    #[arg(long)]
    top_p: Option<f32>,
    /// Keep the k most likely tokens (0 disables).
    #[arg(long, default_value_t = rmas::options::DEFAULT_TOP_K)]
    top_k: usize,
    /// RNG seed, set once before the first stage.
    #[arg(long, default_value_t = rmas::options::DEFAULT_SEED)]
    pub seed: u64,
}

impl SamplingArgs {
    /// Greedy unless a temperature is given.
    pub fn sampling(&self) -> Sampling {
        match self.temperature {
            Some(t) if !self.greedy && t > 0.0 => {
                Sampling::Sample { temperature: t, top_k: self.top_k, top_p: self.top_p.unwrap_or(1.0) }
            }
            _ => Sampling::Greedy,
        }
    }
}

/// Which system runs: a released style, a description file or the demo.
#[derive(clap::Args, Clone, Debug)]
pub struct SystemArgs {
    /// A released system (resolved through the Hugging Face cache).
    #[arg(long, value_parser = parse_style, required_unless_present_any = ["demo", "system"])]
    pub style: Option<Style>,
    /// A system description file (TOML/JSON) assembling local or Hub agents and links.
    #[arg(long, conflicts_with_all = ["style", "demo"])]
    pub system: Option<PathBuf>,
    /// The built-in tiny random-weight mixture system (offline; its text is gibberish).
    #[arg(long)]
    pub demo: bool,
    /// The demo with every agent resized to HIDDENxLAYERS (e.g. 512x8: ~25 M parameters per agent),
    /// for timings at a realistic cost.
    #[arg(long, requires = "demo", value_name = "HIDDENxLAYERS", value_parser = parse_scale)]
    pub demo_size: Option<rmas::demo::Scale>,
    /// Link set: math or code (default: from the dataset).
    #[arg(long, value_parser = parse_task)]
    pub task: Option<Task>,
    /// Load each agent only for its stage (fits systems larger than memory; slower).
    #[arg(long)]
    pub offload: bool,
    #[command(flatten)]
    pub weights: WeightArgs,
}

impl SystemArgs {
    /// The style whose prompts and settings apply (the demo is a mixture system).
    pub fn style(&self) -> Style {
        self.style.unwrap_or(Style::Mixture)
    }

    /// A short name of the system for records and messages.
    pub fn label(&self) -> String {
        match (&self.system, self.demo) {
            (Some(path), _) => path.display().to_string(),
            (None, true) => "demo".to_owned(),
            (None, false) => self.style().key().to_owned(),
        }
    }

    /// The run options of this system on `dataset`: the released system's recommended settings
    /// (the demo's for `--demo`) under `overrides`.
    pub fn options(&self, dataset: Dataset, chat_date: NaiveDate, overrides: &RunOverrides) -> RunOptions {
        if self.demo {
            RunOptions { dataset, ..rmas::demo::run_options(chat_date) }.overridden(overrides)
        } else {
            RunOptions::released(self.style(), dataset, chat_date, overrides)
        }
    }

    /// Loads the system at `dtype` and the `--quantize` weights, with a spinner.
    pub fn load<B: RmasBackend>(&self, dataset: Dataset, device: &B::Device, dtype: DType) -> Result<LoadedSystem<B>> {
        let precision = self.weights.precision::<B>(dtype)?;
        let spinner = spinner("building the demo system".into());
        if self.demo {
            let system = match self.demo_size {
                Some(scale) => rmas::demo::mixture_scaled::<B>(device, rmas::demo::SEED, precision, scale)?,
                None => rmas::demo::mixture::<B>(device, rmas::demo::SEED, precision)?,
            };
            spinner.finish_and_clear();
            return Ok(system);
        }
        let hub = Hub::from_env();
        let task = self.task.unwrap_or(dataset.task());
        let spec = match (&self.system, self.style) {
            (Some(path), _) => SystemSpec::from_file(path, &hub)
                .with_context(|| format!("reading system description {}", path.display()))?,
            (None, Some(style)) => SystemSpec::resolve_style(&hub, style, task)?,
            (None, None) => unreachable!("clap requires --style, --system or --demo"),
        };
        spinner.set_message(format!("loading {} agents", spec.agents.len()));
        let system = spec.load(device, precision, self.offload)?;
        spinner.finish_and_clear();
        Ok(system)
    }
}

/// Run settings over the recommended ones (shared by `run` and `eval`).
#[derive(clap::Args, Clone, Debug)]
pub struct RunFlags {
    /// Recursion rounds (default: recommended for style and dataset).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Maximum new tokens of the final answer (default: recommended).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Retry once when the answer lacks its expected form (default on, as the reference's run.py).
    #[arg(long, overrides_with = "no_answer_retry")]
    answer_retry: bool,
    /// Do not run the answer retry.
    #[arg(long)]
    no_answer_retry: bool,
    /// The date chat templates print, "DD Mon YYYY" (default: today).
    #[arg(long, value_parser = parse_date)]
    pub chat_date: Option<NaiveDate>,
    /// Mixture: skip the summarizer's discarded text in non-final rounds (the reference generates it).
    #[arg(long)]
    skip_intermediate_text: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Seed of the sampling alone (default: --seed), as the reference's --sample_seed; --seed still
    /// orders a GPQA row's options.
    #[arg(long)]
    pub sample_seed: Option<u64>,
}

impl RunFlags {
    /// The run options of `system` on `dataset` with `latent_steps` (default: recommended): the
    /// released system's recommended settings (the demo's for `--demo`) under these flags.
    pub fn options(
        &self,
        system: &SystemArgs,
        dataset: Dataset,
        latent_steps: Option<usize>,
        fn_name: Option<String>,
    ) -> RunOptions {
        let retry = if self.no_answer_retry { Some(false) } else { self.answer_retry.then_some(true) };
        let s = &self.sampling;
        let overrides = RunOverrides {
            rounds: self.rounds,
            latent_steps,
            max_new_tokens: self.max_new_tokens,
            greedy: s.greedy,
            temperature: s.temperature,
            top_p: s.top_p,
            top_k: Some(s.top_k),
            seed: Some(self.sample_seed.unwrap_or(s.seed)),
            answer_retry: retry,
            fn_name,
            summarize_every_round: self.skip_intermediate_text.then_some(false),
        };
        system.options(dataset, self.chat_date.unwrap_or_else(|| Local::now().date_naive()), &overrides)
    }
}

/// Run a RecursiveMAS system.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    system: SystemArgs,
    /// The question (for GPQA/MedQA closed by "Choose the correct option (A/B/C/D)." unless it
    /// asks so already, as the reference's loaders close every choice question).
    #[arg(long, required_unless_present_any = ["demo", "row", "questions_file"], conflicts_with_all = ["row", "questions_file"])]
    question: Option<String>,
    /// Many questions, one per line, or JSONL: `{"question": …, "fn_name": …}` objects or dataset
    /// rows (as --row takes them). They run together in batches (--batch-size), each answer the one
    /// it gets alone; answers print in file order (one JSON object per line with --json).
    #[arg(long, value_name = "FILE", conflicts_with = "row")]
    questions_file: Option<PathBuf>,
    /// Questions of --questions-file run together, their model calls packed into one forward
    /// (default: the reference's batch for the style and dataset, lowered to fit free memory).
    #[arg(long, requires = "questions_file", value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: Option<u64>,
    /// A JSON file with one row of the dataset as its Hub dataset stores it (MATH500/GSM8K/AIME
    /// `problem`; GPQA `Question` and its four answers, ordered by --seed as the reference orders
    /// them; MedQA `question`/`query` and `options`; MBPP+ `prompt`, `test_list`, `test`, `code`;
    /// LiveCodeBench `question_content`, `starter_code`, `metadata`): the question and function name
    /// are built from it as the reference's loaders build them.
    #[arg(long, value_name = "FILE")]
    row: Option<PathBuf>,
    /// Dataset whose prompt variant and recommended settings to use (math500, gsm8k, gpqa, medqa, mbppplus, aime25, aime26, livecodebench, …).
    #[arg(long, default_value = "math500", value_parser = parse_dataset)]
    dataset: Dataset,
    /// The function name that code prompts ask for (default: the row's, with --row).
    #[arg(long)]
    fn_name: Option<String>,
    /// Latent steps per rollout (default: recommended).
    #[arg(long)]
    latent_steps: Option<usize>,
    #[command(flatten)]
    flags: RunFlags,
    #[command(flatten)]
    tools: ToolArgs,
    #[command(flatten)]
    device: DeviceArgs,
    /// Print one JSON object (answer, token_ids, stages) instead of the answer text.
    #[arg(long)]
    json: bool,
}

/// The questions of a `--questions-file`: plain lines, or JSON objects with `question` (and
/// `fn_name`), or dataset rows; blank lines are skipped. Errors name the file and line.
fn read_questions(path: &std::path::Path, dataset: Dataset, seed: u64) -> Result<Vec<RowQuestion>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the questions {}", path.display()))?;
    let mut questions = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = || format!("{} line {}", path.display(), n + 1);
        if !line.trim_start().starts_with('{') {
            questions.push(RowQuestion { question: rmas::options::dataset_question(dataset, line), fn_name: None });
            continue;
        }
        let row: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
        let question = match row.get("question").and_then(|q| q.as_str()) {
            Some(q) => RowQuestion {
                question: rmas::options::dataset_question(dataset, q),
                fn_name: row.get("fn_name").and_then(|f| f.as_str()).map(str::to_owned),
            },
            None => rmas_text::row_question(dataset, &row, seed)
                .with_context(|| format!("{}: neither a \"question\" nor a {dataset:?} row", at()))?,
        };
        questions.push(question);
    }
    if questions.is_empty() {
        anyhow::bail!("{}: no questions (one per line, or JSONL rows)", path.display());
    }
    Ok(questions)
}

/// The question of the dataset row in the JSON file at `path`, for a run seeded with `seed`.
fn read_row(path: &std::path::Path, dataset: Dataset, seed: u64) -> Result<RowQuestion> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the dataset row {}", path.display()))?;
    let row: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    rmas_text::row_question(dataset, &row, seed).with_context(|| format!("building the question of {}", path.display()))
}

fn parse_scale(s: &str) -> Result<rmas::demo::Scale, String> {
    let err = || format!("`{s}`: expected HIDDENxLAYERS with HIDDEN a multiple of 64, e.g. 512x8");
    let (h, l) = s.split_once('x').ok_or_else(err)?;
    let (hidden, layers): (usize, usize) = (h.parse().map_err(|_| err())?, l.parse().map_err(|_| err())?);
    match hidden > 0 && hidden.is_multiple_of(64) && hidden <= 8192 && (1..=64).contains(&layers) {
        true => Ok(rmas::demo::Scale { hidden, layers }),
        false => Err(err()),
    }
}

pub fn parse_style(s: &str) -> Result<Style, String> {
    s.parse().map_err(|e| format!("{e}"))
}
pub fn parse_task(s: &str) -> Result<Task, String> {
    s.parse().map_err(|e| format!("{e}"))
}
pub fn parse_dataset(s: &str) -> Result<Dataset, String> {
    s.parse().map_err(|e| format!("{e}"))
}
fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%d %b %Y")
        .map_err(|e| format!("expected \"DD Mon YYYY\" (e.g. \"26 Jul 2024\"): {e}"))
}

pub fn main(args: Args) -> Result<()> {
    dispatch(&args.device.clone(), args)
}

impl Job for Args {
    fn run<B: RmasBackend>(self, target: Target<B>) -> Result<()> {
        let device = target.device;
        let row = self.row.as_deref().map(|path| read_row(path, self.dataset, self.flags.sampling.seed)).transpose()?;
        let fn_name = self.fn_name.clone().or_else(|| row.as_ref().and_then(|r| r.fn_name.clone()));
        let opts = self.flags.options(&self.system, self.dataset, self.latent_steps, fn_name);
        let style = self.system.style();
        let tools = toolbox(style, &self.tools.python(style.spec().tool_loop)?)?;
        let system = self.system.load::<B>(self.dataset, &device, target.dtype)?;
        if let Some(path) = &self.questions_file {
            let questions = read_questions(path, self.dataset, self.flags.sampling.seed)?;
            return run_many(&system, tools.as_ref(), &opts, questions, self.batch_size, self.json);
        }
        let question = match (row, &self.question) {
            (Some(row), _) => row.question,
            (None, Some(q)) => rmas::options::dataset_question(self.dataset, q),
            (None, None) => rmas::demo::QUESTION.to_owned(),
        };
        let progress = Progress::new(self.json);
        // The answer is printed as it is generated (all at the end with --json).
        let mut stream = (!self.json).then(|| AnswerStream::new(system.style, opts.rounds));
        let mut on_event = |e: Event<'_, B>| {
            if let Some(delta) = stream.as_mut().and_then(|s| s.push(&e)) {
                progress.print_answer(&delta);
            }
            progress.event(e)
        };
        let result =
            rmas_models::block_on(Run::new(&system, &opts, &question, tools.as_ref(), &mut on_event).execute())?;
        progress.bar.finish_and_clear();
        match stream {
            Some(mut stream) => {
                if let Some(rest) = stream.finish(&result.answer) {
                    progress.print_answer(&rest);
                }
                println!();
            }
            None => println!("{}", result.to_json()),
        }
        Ok(())
    }
}

/// `--questions-file`: every question through the system in batches; answers in file order as
/// they are ready. A failed question is reported in its place and fails the command at the end,
/// after the others ran.
fn run_many<B: RmasBackend>(
    system: &LoadedSystem<B>,
    tools: Option<&rmas::tools::ToolBox>,
    opts: &RunOptions,
    questions: Vec<RowQuestion>,
    batch_size: Option<u64>,
    json: bool,
) -> Result<()> {
    let wanted = batch_size.map_or_else(
        || rmas_text::recommended_settings(system.style, opts.dataset).batch_size,
        |b| usize::try_from(b).unwrap_or(usize::MAX),
    );
    let longest = questions.iter().map(|q| q.question.len()).max().unwrap_or(0);
    let plan = rmas::engine::BatchPlan::fit(system, opts, longest, wanted)?;
    if let Some(note) = &plan.note {
        eprintln!("rmas: {note}");
    }
    let bar = if json { ProgressBar::hidden() } else { ProgressBar::new(questions.len() as u64) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} questions · {elapsed} < {eta} · batch {msg}")
            .expect("constant template")
            .progress_chars("=> "),
    );
    bar.set_message(plan.size.to_string());
    let started = std::time::Instant::now();
    let runs =
        questions.iter().map(|q| (q.question.clone(), RunOptions { fn_name: q.fn_name.clone(), ..opts.clone() }));
    let (mut ready, mut next, mut failed) = (std::collections::BTreeMap::new(), 0usize, 0usize);
    let _ = rmas::engine::run_questions(system, tools, plan.size, runs, |i, (result, ms)| {
        ready.insert(i, (result, ms));
        bar.inc(1);
        while let Some((result, ms)) = ready.remove(&next) {
            let line = match (&result, json) {
                (Ok(r), true) => {
                    let mut o = r.to_json();
                    o["index"] = next.into();
                    o["question"] = questions[next].question.clone().into();
                    o["ms"] = ms.into();
                    o.to_string()
                }
                (Ok(r), false) => format!("[{}] {}\n", next + 1, r.answer),
                (Err(e), true) => serde_json::json!({ "index": next, "error": e.to_string() }).to_string(),
                (Err(e), false) => format!("[{}] error: {e}\n", next + 1),
            };
            failed += usize::from(result.is_err());
            bar.suspend(|| println!("{line}"));
            next += 1;
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "rmas: {} questions in {secs:.2} s ({:.2} questions/s, batch {})",
        questions.len(),
        questions.len() as f64 / secs.max(1e-9),
        plan.size
    );
    if failed > 0 {
        anyhow::bail!("{failed} of {} questions failed (see their lines)", questions.len());
    }
    Ok(())
}

/// A spinner on stderr (hidden when stderr is not a terminal).
pub fn spinner(msg: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(msg);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// The live stage display, and the answer as it is generated.
struct Progress {
    bar: ProgressBar,
    /// Whether the answer started printing (the stage display is gone then).
    answering: std::cell::Cell<bool>,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
        bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("constant template"));
        bar.enable_steady_tick(Duration::from_millis(120));
        Self { bar, answering: std::cell::Cell::new(false) }
    }

    /// Prints answer text to stdout as it comes; the stage display ends at the first piece.
    fn print_answer(&self, delta: &str) {
        use std::io::Write;
        if !self.answering.replace(true) {
            self.bar.finish_and_clear();
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(delta.as_bytes()).and_then(|()| out.flush());
    }

    fn event<B: RmasBackend>(&self, e: Event<'_, B>) {
        match e {
            Event::StageStart { round, role, text } => {
                self.bar.set_message(format!(
                    "round {round} · {role} · {}",
                    if text { "generating" } else { "latent rollout" }
                ));
            }
            Event::LatentStep { round, role, step } => {
                self.bar.set_message(format!("round {round} · {role} · latent step {step}"))
            }
            Event::StageEnd(record) if !self.answering.get() => {
                let what = match &record.kind {
                    StageKind::Latent { steps } => format!("{steps} latent steps"),
                    StageKind::Text { ids } | StageKind::Retry { ids } => {
                        format!("{} tokens, {:.1} tokens/s", ids.len(), ids.len() as f64 * 1e3 / record.ms.max(1e-9))
                    }
                    StageKind::Tool { call } => format!("tool call ({} bytes)", call.len()),
                };
                self.bar.println(format!(
                    "  round {} · {:<10} {what} in {:.0} ms",
                    record.round,
                    record.role.to_string(),
                    record.ms
                ));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn options(argv: &[&str]) -> RunOptions {
        let cli = Cli::try_parse_from(std::iter::once("rmas").chain(argv.iter().copied())).expect("valid flags");
        let a = cli.args;
        a.flags.options(&a.system, a.dataset, a.latent_steps, a.fn_name.clone())
    }

    #[test]
    fn a_released_run_takes_the_core_run_policy() {
        // The same options the web build gives a released system (crates/rmas-web/src/options.rs).
        let date = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        for style in Style::ALL {
            for dataset in [Dataset::Math500, Dataset::Gpqa, Dataset::MbppPlus] {
                let opts = options(&[
                    "--style",
                    style.cli_name(),
                    "--dataset",
                    dataset.key(),
                    "--question",
                    "q",
                    "--chat-date",
                    "01 Mar 2026",
                ]);
                assert_eq!(
                    opts,
                    RunOptions::released(style, dataset, date, &RunOverrides::default()),
                    "{style:?} {dataset:?}"
                );
            }
        }
        let opts = options(&[
            "--style",
            "mixture",
            "--question",
            "q",
            "--greedy",
            "--no-answer-retry",
            "--rounds",
            "2",
            "--sample-seed",
            "7",
        ]);
        assert_eq!((opts.sampling, opts.answer_retry, opts.rounds, opts.seed), (Sampling::Greedy, false, 2, 7));
        let demo = options(&["--demo", "--chat-date", "01 Mar 2026"]);
        assert_eq!(demo, rmas::demo::run_options(date), "the demo's settings, as the web demo");
    }
}
