//! `rmas score`: re-score saved outputs with the reference's rules, no model needed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use rmas::eval::record::{PyJsonObject, py_json};
use rmas::eval::{EvalItem, Outcome, RunLabel, Summary, strict_check};
use rmas::tools::PythonConfig;
use rmas_text::Dataset;
use serde_json::Value;

use crate::eval::{ScorerKind, report_strict};
use crate::sandbox::ToolArgs;

/// Re-score saved outputs (JSONL) with the reference's rules
///
/// Each input line is a JSON object with `prediction` (the final answer text), `dataset` (unless
/// --dataset is given: math500, gsm8k, gpqa, medqa, mbppplus, livecodebench, aime25, …, or any
/// name the reference accepts) and either `gold_answer_raw` or the dataset `row` (MedQA's gold
/// letter, GPQA's after the --seed option shuffle, MBPP+/LiveCodeBench tests come from the row).
/// Each output line, in input order, has `gold_answer_raw` and the reference's score fields
/// (`gold_answer_parsed`, `pred_answer_parsed`, `correct`, `gold_norm`, `pred_norm`; code:
/// `pred_code_parsed`, `parse_ok`, `correct`, `eval`), then a summary line. Code runs in the python
/// sandbox, several answers at once.
#[derive(clap::Args, Clone, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The outputs to score (JSONL).
    #[arg(long)]
    input: PathBuf,
    /// Where to write the scored lines (JSONL; `-` for standard output).
    #[arg(long)]
    output: PathBuf,
    /// The dataset of every line (overrides each line's `dataset`).
    #[arg(long)]
    dataset: Option<String>,
    /// The run's seed (orders a GPQA row's options, and so its gold letter).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Code answers tested at once (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// `strict` adds rmas's value-aware math check (`strict_correct`) beside the reference's
    /// `correct`, and lists the lines where they disagree.
    #[arg(long, value_enum, default_value = "reference")]
    scorer: ScorerKind,
    #[command(flatten)]
    tools: ToolArgs,
}

/// One line's scoring job.
struct Job {
    id: Option<Value>,
    dataset_name: String,
    prediction: String,
    item: EvalItem,
    dataset: Option<Dataset>,
}

pub fn main(args: Args) -> Result<()> {
    let text = std::fs::read_to_string(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let mut jobs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", args.input.display(), i + 1);
        let value: Value = serde_json::from_str(line).with_context(|| format!("{at}: not JSON"))?;
        jobs.push(job(&value, args.dataset.as_deref(), args.seed, jobs.len()).with_context(|| at.clone())?);
    }
    let has_code = jobs.iter().any(|j| j.dataset.is_some_and(|d| d.mas_task() == rmas_text::MasTask::Code));
    let sandbox = args.tools.python(has_code)?;
    let workers = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).max(1);
    let next = AtomicUsize::new(0);
    let mut outcomes: Vec<Option<Outcome>> = vec![None; jobs.len()];
    let slots: Vec<std::sync::Mutex<&mut Option<Outcome>>> = outcomes.iter_mut().map(std::sync::Mutex::new).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers.min(jobs.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let outcome = score_job(job, &sandbox);
                    **slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
                }
            });
        }
    });
    drop(slots);

    let mut out: Box<dyn Write> = if args.output.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(&args.output).with_context(|| format!("creating {}", args.output.display()))?,
        ))
    };
    let strict = args.scorer == ScorerKind::Strict;
    let mut tallies = Vec::with_capacity(jobs.len());
    let (mut official, mut strict_checks) = (BTreeMap::new(), BTreeMap::new());
    for (i, (job, outcome)) in jobs.iter().zip(outcomes).enumerate() {
        let outcome = outcome.expect("every job was scored");
        tallies.push(vec![outcome.correct()]);
        let strict_check = strict.then(|| strict_check(&job.item, &job.dataset_name, &job.prediction, &outcome));
        if let Some(check) = strict_check {
            official.insert(i, outcome.correct());
            strict_checks.insert(i, check);
        }
        writeln!(out, "{}", scored_line(job, &outcome, strict_check))?;
    }
    // Saved outputs belong to no run: the summary line keeps only its counts.
    let summary = Summary::new(&RunLabel::default(), 1, args.seed, &tallies);
    let line = serde_json::json!({"type": "summary", "num_samples": summary.num_samples, "num_correct": summary.num_correct, "accuracy": summary.accuracy});
    writeln!(out, "{}", py_json(&line))?;
    out.flush()?;
    eprintln!("{}", summary.headline());
    if strict {
        eprintln!("{}", report_strict(&official, &strict_checks, "input line index"));
    }
    Ok(())
}

/// The job of one input line.
fn job(value: &Value, dataset: Option<&str>, seed: u64, index: usize) -> Result<Job> {
    let dataset_name = match (dataset, value.get("dataset").and_then(Value::as_str)) {
        (Some(name), _) | (None, Some(name)) => name.to_owned(),
        (None, None) => bail!("no `dataset` field and no --dataset"),
    };
    let Some(prediction) = value.get("prediction").and_then(Value::as_str) else {
        bail!("no string field `prediction`")
    };
    let known: Option<Dataset> = dataset_name.parse().ok();
    let item = match (value.get("row"), value.get("gold_answer_raw")) {
        (Some(row), _) => {
            let Some(dataset) = known else {
                bail!(
                    "dataset `{dataset_name}` is not one rmas builds rows of; give `gold_answer_raw` instead of `row`"
                )
            };
            EvalItem::from_row(dataset, row, index, seed, "row")?
        }
        (None, Some(gold)) => {
            if known.is_some_and(|d| d.mas_task() == rmas_text::MasTask::Code) {
                bail!("code answers of `{dataset_name}` need the dataset `row` (its tests), not `gold_answer_raw`");
            }
            let gold = match gold {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            EvalItem { sample_idx: index, question: String::new(), fn_name: None, gold_answer_raw: gold, tests: None }
        }
        (None, None) => bail!("neither `gold_answer_raw` nor `row`"),
    };
    Ok(Job { id: value.get("id").cloned(), dataset_name, prediction: prediction.to_owned(), item, dataset: known })
}

fn score_job(job: &Job, sandbox: &PythonConfig) -> Outcome {
    rmas::eval::score(&job.item, job.dataset.unwrap_or(Dataset::Math500), &job.dataset_name, &job.prediction, sandbox)
}

/// `{id?, dataset, gold_answer_raw, <score fields>, strict_correct?}` in the reference's layout.
fn scored_line(job: &Job, outcome: &Outcome, strict: Option<bool>) -> String {
    let mut line = PyJsonObject::default();
    if let Some(id) = &job.id {
        line.field("id", id);
    }
    line.field("dataset", &job.dataset_name);
    line.field("gold_answer_raw", &job.item.gold_answer_raw);
    line.fields(outcome);
    if let Some(strict) = strict {
        line.field("strict_correct", &strict);
    }
    line.finish()
}
