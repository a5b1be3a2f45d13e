//! Benchmark evaluation as the reference release runs it (`run.py` → `inference_mas*.py`): rows
//! selected in dataset order, one run per question, each answer scored by the reference's rules
//! (math/choice/free-form comparison, or the program run against the row's tests in the python
//! sandbox), one result record per question and a summary. See docs/eval.md.

pub mod code;
pub mod data;
pub mod record;

use std::path::PathBuf;

use rmas_text::scoring::{compare_answers, extract_python_code};
use rmas_text::{Dataset, MasTask};

use crate::options::RunOptions;
use crate::tools::PythonConfig;
pub use code::{CodeEval, LCB_TIMEOUT, MBPP_TIMEOUT, evaluate_code};
pub use data::{EvalItem, Shuffle};
pub use record::{CodeOutcome, Outcome, RecordHead, RmasFields, Rollout, RunLabel, Summary};

/// Everything that can go wrong reading data, resuming or merging.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file could not be read or written.
    #[error("cannot access `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A data row (or result line) is unusable.
    #[error("{origin}: {msg}")]
    Row {
        /// `file:line` or `file#row`.
        origin: String,
        /// What is wrong.
        msg: String,
    },
    /// A data file of an unknown kind.
    #[error("`{path}`: unknown data file type; expected .jsonl, .json (a list of rows), .csv or .parquet")]
    Format {
        /// The file.
        path: PathBuf,
    },
    /// The dataset has no Hub source the reference reads.
    #[error(
        "rmas knows no Hub dataset for `{dataset}` (the reference reads a local file for MedQA; AIME and the QA sets have no canonical repo): pass its rows with --data FILE"
    )]
    NoSource {
        /// The dataset key.
        dataset: &'static str,
    },
    /// No file of the dataset repo matches the split.
    #[error("dataset repo `{repo}` has no file for split `{split}` (looked for `{pattern}`)")]
    NoSplit {
        /// The repo.
        repo: &'static str,
        /// The split asked for.
        split: String,
        /// The file pattern.
        pattern: String,
    },
    /// The Hub or its cache failed.
    #[error(transparent)]
    Hub(Box<crate::RmasError>),
    /// A result file cannot be resumed or merged.
    #[error("`{path}`: {msg}")]
    Resume {
        /// The result file.
        path: PathBuf,
        /// Why.
        msg: String,
    },
    /// `merge` got no files.
    #[error("nothing to merge: give the result files of the shards")]
    NoInputs,
}

/// The per-test time limit the reference gives the code of `dataset`.
pub fn code_timeout(dataset: Dataset) -> std::time::Duration {
    if dataset == Dataset::MbppPlus { MBPP_TIMEOUT } else { LCB_TIMEOUT }
}

/// Scores `answer` (the final text) for `item` as the reference does for the dataset named
/// `dataset_name` (which picks the answer rule) of kind `dataset`; code runs in `sandbox`.
pub fn score(item: &EvalItem, dataset: Dataset, dataset_name: &str, answer: &str, sandbox: &PythonConfig) -> Outcome {
    match (&item.tests, dataset.mas_task()) {
        (Some(tests), MasTask::Code) => {
            let code = extract_python_code(answer);
            let eval = evaluate_code(sandbox, &code, tests, code_timeout(dataset));
            Outcome::Code(CodeOutcome {
                parse_ok: !code.is_empty(),
                correct: eval.all_passed,
                pred_code_parsed: code,
                eval,
            })
        }
        _ => Outcome::Answer(compare_answers(&item.gold_answer_raw, answer, dataset_name)),
    }
}

/// rmas's value-aware check of `answer` beside the reference's `outcome` (`--scorer strict`): a
/// program's tests are already exact, so code keeps its outcome.
pub fn strict_check(item: &EvalItem, dataset_name: &str, answer: &str, outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Code(code) => code.correct,
        Outcome::Answer(_) => rmas_text::scoring::strict::strict_correct(&item.gold_answer_raw, answer, dataset_name),
    }
}

/// The settings string records carry, so that `--resume` and `merge` refuse files written
/// differently (everything that changes an answer; not the shard or the output path).
pub fn settings_fingerprint(
    system: &str,
    dataset_name: &str,
    split: &str,
    opts: &RunOptions,
    num_rollouts: usize,
    data: &str,
    lcb_private_tests: bool,
) -> String {
    let private = if lcb_private_tests { " private_tests=true" } else { "" };
    format!(
        "system={system} dataset={dataset_name} split={split} data={data} T={} R={} max_new_tokens={} sampling={:?} seed={} rollouts={num_rollouts} answer_retry={} summarize_every_round={} chat_date={}{private}",
        opts.latent_steps,
        opts.rounds,
        opts.max_new_tokens,
        opts.sampling,
        opts.seed,
        opts.answer_retry,
        opts.summarize_every_round,
        opts.chat.date.format("%Y-%m-%d"),
    )
}
