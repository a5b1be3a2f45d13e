//! `rmas eval`: a system over a benchmark, every answer scored as the reference scores it, one
//! result record per question appended as it finishes (docs/eval.md).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rmas::engine::{BatchPlan, LoadedSystem, RunResult, run_questions};
use rmas::eval::data::{self, Shuffle};
use rmas::eval::record::{ResultWriter, Tally, read_existing, sample_record};
use rmas::eval::{
    EvalItem, RecordHead, RmasFields, Rollout, RunLabel, Summary, score, settings_fingerprint, strict_check,
};
use rmas::hub::Hub;
use rmas::options::RunOptions;
use rmas::tools::{PythonConfig, ToolBox};
use rmas_models::RmasBackend;
use rmas_text::{Dataset, MasTask};

use crate::backend::{DeviceArgs, Job, Target, dispatch};
use crate::run::{RunFlags, SystemArgs, parse_dataset};
use crate::sandbox::{ToolArgs, toolbox};

/// Run a system over a benchmark and score it as the reference does
///
/// Questions run in batches (--batch-size): each question's answer is the one it gets alone.
///
/// Rows come from --data FILE (.jsonl, .json, .csv, .parquet) or from the dataset's Hugging Face
/// repo through the hub cache (MATH-500, GSM8K, GPQA-Diamond, MBPP+, LiveCodeBench; offline with
/// HF_HUB_OFFLINE=1). All rows in dataset order by default, as the reference's run.py; the
/// reference's recommended settings unless overridden. Prints the reference's closing line,
/// `accuracy=xx.xx% (n/N)` (or `pass@K=…`).
///
/// Examples:
///   rmas eval --style mixture --dataset math500 --result-jsonl mixture-math500.jsonl
///   rmas eval --style sequential-light --dataset gpqa --num-samples 50 --greedy
///   rmas eval --style mixture --dataset mbppplus --data mbppplus.parquet --shard 2/4 --result-jsonl s2.jsonl
///   rmas eval --style mixture --dataset math500 --latent-steps 16,32,48 --plot sweep.svg
///   rmas eval merge s1.jsonl s2.jsonl s3.jsonl s4.jsonl --output all.jsonl
#[derive(clap::Args, Clone, Debug)]
#[command(verbatim_doc_comment, args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<EvalCommand>,
    #[command(flatten)]
    system: SystemArgs,
    /// The benchmark: its prompts, answer rule and recommended settings (math500, gsm8k, gpqa,
    /// medqa, mbppplus, livecodebench, aime25, aime26, hotpotqa, bamboogle or a name the reference
    /// accepts, e.g. HuggingFaceH4/MATH-500).
    #[arg(long, required = true)]
    dataset: Option<String>,
    /// The rows, as a local file (.jsonl, .json list, .csv or .parquet) instead of the Hub.
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    /// The split (default: the reference's: train for GPQA and MedQA, else test).
    #[arg(long)]
    split: Option<String>,
    /// Score only the first N selected rows (default: all, as run.py).
    #[arg(long)]
    num_samples: Option<usize>,
    /// Shuffle the rows with --seed before selecting, in the reference's order (CPython's
    /// `random` for MBPP+ and MedQA, numpy's generator as `datasets.shuffle` for the others).
    #[arg(long)]
    shuffle: bool,
    /// Answers per question; more than one reports pass@K.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    num_rollouts: u64,
    /// Latent steps T; a comma list (16,32,48) sweeps and ends with a table (default: recommended).
    #[arg(long, value_delimiter = ',')]
    latent_steps: Vec<usize>,
    #[command(flatten)]
    flags: RunFlags,
    #[command(flatten)]
    tools: ToolArgs,
    /// Append one record per question to this JSONL file (the reference's fields plus `rmas_*`),
    /// then the summary; with a latent-steps sweep, one file per T (`name.tT.jsonl`).
    #[arg(long, value_name = "FILE")]
    result_jsonl: Option<PathBuf>,
    /// Continue the run in --result-jsonl: keep its finished questions, run the rest (refused when
    /// the file was written with other settings).
    #[arg(long, requires = "result_jsonl")]
    resume: bool,
    /// Run only slice K of N (every N-th row from the K-th): disjoint, deterministic; combine the
    /// shards' files with `rmas eval merge`.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    shard: Option<(usize, usize)>,
    /// Write the accuracy per latent-steps setting as an SVG chart.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// LiveCodeBench: also run each row's private tests (its compressed `private_test_cases`); the
    /// reference runs the public ones only.
    #[arg(long)]
    lcb_private_tests: bool,
    /// Code answers tested at once in the sandbox (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Questions (times rollouts) run together, their model calls packed into one forward; a
    /// finished question's place goes to the next. Default: the reference's batch for the style
    /// and dataset (16; 32 for sequential-light on MATH500), lowered to fit free memory. Answers do
    /// not depend on it (docs/batching.md).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: Option<u64>,
    /// `strict` adds rmas's value-aware math check beside the reference's accuracy
    /// (`rmas_strict_correct`), and lists the questions where they disagree.
    #[arg(long, value_enum, default_value = "reference")]
    scorer: ScorerKind,
    #[command(flatten)]
    device: DeviceArgs,
    /// Print the summary record(s) as JSON on standard output.
    #[arg(long)]
    json: bool,
}

/// Which scoring `rmas eval` / `rmas score` report.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScorerKind {
    /// The reference's rules only.
    Reference,
    /// The reference's rules and rmas's value-aware check beside them.
    Strict,
}

/// The strict check's line and the questions on which it and the reference disagree, each by its
/// index (`index_name` says which: `sample_idx`, an input line, …).
pub fn report_strict(official: &BTreeMap<usize, bool>, strict: &BTreeMap<usize, bool>, index_name: &str) -> String {
    let n = strict.len();
    let correct = strict.values().filter(|&&c| c).count();
    let disagree: Vec<String> = strict
        .iter()
        .filter_map(|(idx, s)| {
            let o = official.get(idx)?;
            (o != s).then(|| {
                format!(
                    "{idx} ({})",
                    if *o { "reference correct, strict wrong" } else { "strict correct, reference wrong" }
                )
            })
        })
        .collect();
    let percent = if n > 0 { 100.0 * correct as f64 / n as f64 } else { 0.0 };
    let mut out = format!(
        "strict accuracy={percent:.2}% ({correct}/{n}) [rmas value-aware check; the reference's accuracy above is official]"
    );
    if !disagree.is_empty() {
        out += &format!("\ndisagreements on {} questions ({index_name}): {}", disagree.len(), disagree.join(", "));
    }
    out
}

#[derive(clap::Subcommand, Clone, Debug)]
enum EvalCommand {
    /// Combine the result files of a run's shards into one file and summary (as one run writes).
    Merge {
        /// The shards' result files.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// The combined file.
        #[arg(long)]
        output: PathBuf,
    },
}

fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let err = || format!("`{s}`: expected K/N with 1 <= K <= N (e.g. 2/4)");
    let (k, n) = s.split_once('/').ok_or_else(err)?;
    let (k, n): (usize, usize) = (k.trim().parse().map_err(|_| err())?, n.trim().parse().map_err(|_| err())?);
    if k == 0 || k > n { Err(err()) } else { Ok((k, n)) }
}

pub fn main(args: Args) -> Result<()> {
    if let Some(EvalCommand::Merge { inputs, output }) = &args.command {
        let summary = rmas::eval::record::merge(inputs, output)?;
        eprintln!("merged {} files into {}", inputs.len(), output.display());
        println!("{}", summary.headline());
        return Ok(());
    }
    dispatch(&args.device.clone(), args)
}

/// One latent-steps setting's outcome, for the sweep table.
struct SettingResult {
    latent_steps: usize,
    summary: Summary,
}

impl Job for Args {
    fn run<B: RmasBackend>(self, target: Target<B>) -> Result<()> {
        let device = target.device;
        let dataset_arg = self.dataset.clone().expect("clap requires --dataset");
        let dataset = parse_dataset(&dataset_arg).map_err(anyhow::Error::msg)?;
        let split = self.split.clone().unwrap_or_else(|| data::default_split(dataset).to_owned());
        let seed = self.flags.sampling.seed;

        let data_file = self.data.as_deref().map(data::data_file).transpose()?;
        let rows = data::load_rows(dataset, data_file.as_deref(), Some(&split), &Hub::from_env())?;
        let shuffle = if self.shuffle { Shuffle::reference(dataset, seed) } else { Shuffle::None };
        let rows = data::select(rows, shuffle, self.num_samples.filter(|&n| n > 0));
        let items: Vec<EvalItem> = rows
            .iter()
            .enumerate()
            .map(|(i, (origin, row))| {
                let item = EvalItem::from_row(dataset, row, i, seed, origin)?;
                if self.lcb_private_tests { item.with_private_tests(row, origin) } else { Ok(item) }
            })
            .collect::<Result<_, _>>()?;
        let items = match self.shard {
            Some((k, n)) => data::shard(items, k, n),
            None => items,
        };
        let source = data_file.as_ref().map_or_else(|| format!("hub:{split}"), |p| p.display().to_string());

        // The sandbox is checked before any model loads: code answers and tool calls fail closed.
        let style = self.system.style();
        let sandbox = self.tools.python(dataset.mas_task() == MasTask::Code || style.spec().tool_loop)?;
        let tools = toolbox(style, &sandbox)?;
        let system = self.system.load::<B>(dataset, &device, target.dtype)?;
        let spec = style.spec();
        let (method, mas_shape) = (spec.record_method, spec.record_shape);
        let longest = items.iter().map(|i| i.question.len()).max().unwrap_or(0);
        let wanted = self.batch_size.map_or_else(
            || rmas_text::recommended_settings(style, dataset).batch_size,
            |b| usize::try_from(b).unwrap_or(usize::MAX),
        );
        let settings: Vec<Option<usize>> = if self.latent_steps.is_empty() {
            vec![None]
        } else {
            self.latent_steps.iter().copied().map(Some).collect()
        };
        let sweep = settings.len() > 1;
        let mut results = Vec::new();
        for latent_steps in settings {
            let opts = self.flags.options(&self.system, dataset, latent_steps, None);
            if sweep {
                eprintln!("[latent_steps={}]", opts.latent_steps);
            }
            let path = self
                .result_jsonl
                .as_deref()
                .map(|p| if sweep { sweep_path(p, opts.latent_steps) } else { p.to_path_buf() });
            let plan = BatchPlan::fit(&system, &opts, longest, wanted)?;
            if let Some(note) = &plan.note {
                eprintln!("rmas: {note}");
            }
            let run = EvalRun {
                system: &system,
                opts: &opts,
                tools: tools.as_ref(),
                num_rollouts: self.num_rollouts as usize,
                batch_size: plan.size,
                jobs: self.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).max(1),
                scorer: Scorer {
                    dataset,
                    run: RunLabel {
                        dataset: dataset_arg.clone(),
                        dataset_split: split.clone(),
                        method: method.to_owned(),
                        mas_shape: mas_shape.to_owned(),
                        latent_steps: opts.latent_steps,
                    },
                    settings: settings_fingerprint(
                        &self.system.label(),
                        &dataset_arg,
                        &split,
                        &opts,
                        self.num_rollouts as usize,
                        &source,
                        self.lcb_private_tests,
                    ),
                    sandbox: sandbox.clone(),
                    strict: self.scorer == ScorerKind::Strict,
                },
            };
            let summary = run.run(&items, path.as_deref(), self.resume)?;
            println!("{}", summary.headline());
            if self.json {
                println!("{}", summary.to_line());
            }
            results.push(SettingResult { latent_steps: opts.latent_steps, summary });
        }
        if sweep {
            print_sweep(&results);
        }
        if let Some(plot) = &self.plot {
            std::fs::write(plot, sweep_svg(&results, &dataset_arg))
                .with_context(|| format!("writing {}", plot.display()))?;
            eprintln!("wrote {}", plot.display());
        }
        Ok(())
    }
}

/// `name.jsonl` → `name.t32.jsonl`.
fn sweep_path(path: &Path, latent_steps: usize) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    path.with_file_name(format!("{stem}.t{latent_steps}{ext}"))
}

/// One evaluation pass: fixed settings over the selected items.
struct EvalRun<'a, B: RmasBackend> {
    system: &'a LoadedSystem<B>,
    opts: &'a RunOptions,
    tools: Option<&'a ToolBox>,
    num_rollouts: usize,
    /// Runs in flight together.
    batch_size: usize,
    jobs: usize,
    scorer: Scorer,
}

/// What scoring a question's answers and writing its record needs (shared by the worker threads).
struct Scorer {
    dataset: Dataset,
    /// The run's label; its `dataset` is the name as given, which picks the answer rule.
    run: RunLabel,
    settings: String,
    sandbox: PythonConfig,
    strict: bool,
}

/// A question's finished record.
struct Scored {
    position: usize,
    sample_idx: usize,
    line: String,
    tally: Tally,
    strict: Option<bool>,
}

/// A question whose answers are being scored.
struct Pending {
    position: usize,
    item: EvalItem,
    answers: Vec<(u64, rmas::engine::RunResult, f64)>,
}

impl Scorer {
    fn head(&self, item: &EvalItem) -> RecordHead {
        RecordHead {
            sample_idx: item.sample_idx,
            run: self.run.clone(),
            question: item.question.clone(),
            gold_answer_raw: item.gold_answer_raw.clone(),
        }
    }

    /// The record line, tally and strict check of a question's answers.
    fn record(&self, pending: &Pending) -> (String, Tally, Option<bool>) {
        let rollouts: Vec<Rollout> = pending
            .answers
            .iter()
            .map(|(seed, result, _)| Rollout {
                sample_seed: *seed,
                outcome: score(&pending.item, self.dataset, &self.run.dataset, &result.answer, &self.sandbox),
            })
            .collect();
        let rmas = RmasFields {
            rmas_answer: pending.answers.iter().map(|(_, r, _)| r.answer.clone()).collect(),
            rmas_token_ids: pending.answers.iter().map(|(_, r, _)| r.token_ids.clone()).collect(),
            rmas_ms: pending.answers.iter().map(|(_, _, ms)| *ms).collect(),
            rmas_settings: self.settings.clone(),
            rmas_strict_correct: self.strict.then(|| {
                rollouts
                    .iter()
                    .zip(&pending.answers)
                    .map(|(rollout, (_, result, _))| {
                        strict_check(&pending.item, &self.run.dataset, &result.answer, &rollout.outcome)
                    })
                    .collect()
            }),
        };
        let tally = rollouts.iter().map(|r| r.outcome.correct()).collect();
        let strict = rmas.rmas_strict_correct.as_ref().and_then(|s| s.first().copied());
        (sample_record(&self.head(&pending.item), &rollouts, &rmas), tally, strict)
    }
}

impl<B: RmasBackend> EvalRun<'_, B> {
    /// Runs every item not yet in `path`, appending its record; returns the summary of all.
    fn run(&self, items: &[EvalItem], path: Option<&Path>, resume: bool) -> Result<Summary> {
        let existing = match path {
            Some(p) if resume && p.exists() => read_existing(p, Some(&self.scorer.settings), true)?,
            _ => Default::default(),
        };
        let wanted: std::collections::BTreeSet<usize> = items.iter().map(|i| i.sample_idx).collect();
        if let Some(stray) = existing.records.keys().find(|i| !wanted.contains(i)) {
            bail!(
                "{}: holds sample {stray}, which this selection (shard, --num-samples) does not include",
                path.expect("records come from a file").display()
            );
        }
        let base_seed = self.opts.seed;
        if let Some(summary) = existing.summary.filter(|_| existing.records.len() == items.len()) {
            eprintln!("{}: already complete", path.map(|p| p.display().to_string()).unwrap_or_default());
            return Ok(summary);
        }
        let mut writer = path.map(|p| ResultWriter::open(p, !resume)).transpose()?;
        let mut tallies: BTreeMap<usize, Tally> = existing.tallies;
        let mut strict: BTreeMap<usize, bool> = existing.strict;
        let todo: Vec<(usize, &EvalItem)> =
            items.iter().enumerate().filter(|(_, i)| !existing.records.contains_key(&i.sample_idx)).collect();

        let bar = ProgressBar::new(items.len() as u64).with_position((items.len() - todo.len()) as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} questions · {elapsed} < {eta} · {msg}")
                .expect("constant template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        let show = |bar: &ProgressBar, tallies: &BTreeMap<usize, Tally>| {
            let correct = tallies.values().filter(|t| t.first().copied().unwrap_or(false)).count();
            let n = tallies.len();
            bar.set_message(format!(
                "accuracy {:.1}% ({correct}/{n})",
                if n > 0 { 100.0 * correct as f64 / n as f64 } else { 0.0 }
            ));
        };
        show(&bar, &tallies);

        // Answers are scored on a pool (code runs in the sandbox for up to its time limit) while
        // the next question runs; records are written in selection order.
        let (job_tx, job_rx) = mpsc::channel::<Pending>();
        let queue = Mutex::new(job_rx);
        let scorer = &self.scorer;
        let (done_tx, done_rx) = mpsc::channel::<Scored>();
        let outcome: Result<()> = std::thread::scope(|scope| {
            for _ in 0..self.jobs {
                let queue = &queue;
                let done_tx = done_tx.clone();
                scope.spawn(move || {
                    loop {
                        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(pending) = next else { break };
                        let (line, tally, strict) = scorer.record(&pending);
                        if done_tx
                            .send(Scored {
                                position: pending.position,
                                sample_idx: pending.item.sample_idx,
                                line,
                                tally,
                                strict,
                            })
                            .is_err()
                        {
                            break;
                        }
                    }
                });
            }
            drop(done_tx);
            let mut buffered: BTreeMap<usize, Scored> = BTreeMap::new();
            let mut order = todo.iter().map(|(p, _)| *p).collect::<std::collections::VecDeque<_>>();
            let mut write_ready = |received: Scored,
                                   tallies: &mut BTreeMap<usize, Tally>,
                                   strict: &mut BTreeMap<usize, bool>|
             -> Result<()> {
                buffered.insert(received.position, received);
                while let Some(&next) = order.front() {
                    let Some(done) = buffered.remove(&next) else { break };
                    order.pop_front();
                    if let Some(w) = writer.as_mut() {
                        w.append(&done.line)?;
                    }
                    tallies.insert(done.sample_idx, done.tally);
                    if let Some(s) = done.strict {
                        strict.insert(done.sample_idx, s);
                    }
                    bar.inc(1);
                    show(&bar, tallies);
                }
                Ok(())
            };
            // Every rollout of every question is a run; runs go through the system `batch_size`
            // at a time, and a question is scored once all its rollouts are in.
            let runs: Vec<(usize, &EvalItem, usize, u64)> = todo
                .iter()
                .flat_map(|&(position, item)| {
                    (0..self.num_rollouts).map(move |r| (position, item, r, base_seed + r as u64))
                })
                .collect();
            let questions = runs.iter().map(|&(_, item, _, seed)| {
                (item.question.clone(), RunOptions { seed, fn_name: item.fn_name.clone(), ..self.opts.clone() })
            });
            let mut answers: BTreeMap<usize, Vec<Option<(u64, RunResult, f64)>>> = BTreeMap::new();
            let flow = run_questions(self.system, self.tools, self.batch_size, questions, |i, (result, ms)| {
                let (position, item, r, seed) = runs[i];
                let step = || -> Result<()> {
                    let result = result
                        .with_context(|| format!("question {} (sample_idx {})", position + 1, item.sample_idx))?;
                    let slots =
                        answers.entry(position).or_insert_with(|| (0..self.num_rollouts).map(|_| None).collect());
                    slots[r] = Some((seed, result, ms));
                    if slots.iter().all(Option::is_some) {
                        let answers = answers.remove(&position).expect("present").into_iter().flatten().collect();
                        job_tx
                            .send(Pending { position, item: item.clone(), answers })
                            .expect("scoring workers live until the queue closes");
                    }
                    for received in done_rx.try_iter() {
                        write_ready(received, &mut tallies, &mut strict)?;
                    }
                    Ok(())
                };
                match step() {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(e) => ControlFlow::Break(e),
                }
            });
            if let ControlFlow::Break(e) = flow {
                return Err(e);
            }
            drop(job_tx);
            for received in done_rx.iter() {
                write_ready(received, &mut tallies, &mut strict)?;
            }
            Ok(())
        });
        bar.finish_and_clear();
        outcome?;

        if self.scorer.strict {
            let official = tallies.iter().map(|(i, t)| (*i, t.first().copied().unwrap_or(false))).collect();
            eprintln!("{}", report_strict(&official, &strict, "sample_idx"));
        }
        let all: Vec<Tally> = tallies.into_values().collect();
        let summary = Summary::new(&self.scorer.run, self.num_rollouts, base_seed, &all);
        if let Some(w) = writer.as_mut() {
            w.append(&summary.to_line())?;
        }
        Ok(summary)
    }
}

/// The sweep table, and the best setting as the reference's run.py reports it.
fn print_sweep(results: &[SettingResult]) {
    println!("{:>12}  {:>9}  {:>9}", "latent_steps", "accuracy", "correct");
    for r in results {
        println!(
            "{:>12}  {:>8.2}%  {:>4}/{:<4}",
            r.latent_steps, r.summary.accuracy, r.summary.num_correct, r.summary.num_samples
        );
    }
    if let Some(best) = results
        .iter()
        .max_by(|a, b| a.summary.accuracy.total_cmp(&b.summary.accuracy).then(b.latent_steps.cmp(&a.latent_steps)))
    {
        let joined: Vec<String> =
            results.iter().map(|r| format!("ls={}:accuracy={:.2}%", r.latent_steps, r.summary.accuracy)).collect();
        println!(
            "[result] accuracy={:.2}% (best at latent_length={}; sweep: {})",
            best.summary.accuracy,
            best.latent_steps,
            joined.join(", ")
        );
    }
}

/// Accuracy per latent-steps setting as a small SVG line chart.
fn sweep_svg(results: &[SettingResult], dataset: &str) -> String {
    let (w, h, left, right, top, bottom) = (640.0, 400.0, 60.0, 20.0, 40.0, 50.0);
    let (plot_w, plot_h) = (w - left - right, h - top - bottom);
    let n = results.len().max(1) as f64;
    let x = |i: usize| left + if n > 1.0 { plot_w * i as f64 / (n - 1.0) } else { plot_w / 2.0 };
    let y = |acc: f64| top + plot_h * (1.0 - acc / 100.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{} accuracy by latent steps</text>\n",
        w / 2.0,
        xml_escape(dataset)
    );
    for tick in (0..=100).step_by(20) {
        let ty = y(tick as f64);
        svg += &format!(
            "<line x1=\"{left}\" y1=\"{ty}\" x2=\"{}\" y2=\"{ty}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{tick}%</text>\n",
            w - right,
            left - 6.0,
            ty + 4.0
        );
    }
    let points: Vec<String> =
        results.iter().enumerate().map(|(i, r)| format!("{:.1},{:.1}", x(i), y(r.summary.accuracy))).collect();
    svg +=
        &format!("<polyline points=\"{}\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>\n", points.join(" "));
    for (i, r) in results.iter().enumerate() {
        let (px, py) = (x(i), y(r.summary.accuracy));
        svg += &format!(
            "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"4\" fill=\"#1f77b4\"/><text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.1}%</text>\
             <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">T={}</text>\n",
            py - 8.0,
            r.summary.accuracy,
            h - bottom + 18.0,
            r.latent_steps
        );
    }
    svg += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">latent steps</text>\n</svg>\n",
        left + plot_w / 2.0,
        h - 10.0
    );
    svg
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
