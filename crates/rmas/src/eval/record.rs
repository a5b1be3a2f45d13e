//! Result JSONL: the reference's per-sample and summary records (same fields, same order, Python's
//! `json.dumps` layout), rmas's own fields under `rmas_*` names, crash-safe appends, resume and
//! merge (docs/eval.md).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use rmas_text::scoring::AnswerScore;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::EvalError;
use super::code::CodeEval;

/// What names a run in its records and its summary: the fields both carry, in the reference's order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunLabel {
    /// The dataset name as given.
    pub dataset: String,
    /// The split.
    pub dataset_split: String,
    /// The reference's method string for the style.
    pub method: String,
    /// The reference's `--mas_shape` for the style.
    pub mas_shape: String,
    /// Latent steps T.
    pub latent_steps: usize,
}

/// The fields every per-sample record opens with, as the reference writes them.
#[derive(Debug, Clone, Serialize)]
pub struct RecordHead {
    /// Position in the selected dataset order.
    pub sample_idx: usize,
    /// The run.
    #[serde(flatten)]
    pub run: RunLabel,
    /// The question text.
    pub question: String,
    /// The gold as recorded.
    pub gold_answer_raw: String,
}

/// A code answer's outcome, as the reference records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CodeOutcome {
    /// The program extracted from the answer (empty when none).
    pub pred_code_parsed: String,
    /// Whether a program was found.
    pub parse_ok: bool,
    /// Whether all its tests passed.
    pub correct: bool,
    /// The test run.
    pub eval: CodeEval,
}

/// How one rollout's answer scored (serialized as the reference's score fields).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Outcome {
    /// A math, choice or free-form answer.
    Answer(AnswerScore),
    /// A program.
    Code(CodeOutcome),
}

impl Outcome {
    /// Whether the answer is correct.
    pub fn correct(&self) -> bool {
        match self {
            Outcome::Answer(s) => s.correct,
            Outcome::Code(c) => c.correct,
        }
    }
}

/// What rmas adds to each record (never a reference field name).
#[derive(Debug, Clone, Serialize)]
pub struct RmasFields {
    /// The final agent's answer text per rollout.
    pub rmas_answer: Vec<String>,
    /// Its generated token ids per rollout.
    pub rmas_token_ids: Vec<Vec<u32>>,
    /// Wall time of each rollout's whole run, ms.
    pub rmas_ms: Vec<f64>,
    /// The run settings the record was made with (checked by `--resume` and `merge`).
    pub rmas_settings: String,
    /// rmas's value-aware check per rollout (`--scorer strict`), beside the reference's `correct`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmas_strict_correct: Option<Vec<bool>>,
}

/// One rollout of one question.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// The rollout's sampling seed.
    pub sample_seed: u64,
    /// Its score.
    pub outcome: Outcome,
}

/// Writes the per-sample record of `head` with its rollouts (one: the reference's single-rollout
/// layout; more: its `pass_at_k_correct` + `rollouts` layout).
pub fn sample_record(head: &RecordHead, rollouts: &[Rollout], rmas: &RmasFields) -> String {
    let mut out = PyJsonObject::default();
    out.fields(head);
    match rollouts {
        [single] => {
            out.fields(&single.outcome);
            out.field("rollout_idx", &0);
            out.field("sample_seed", &single.sample_seed);
        }
        _ => {
            out.field("pass_at_k_correct", &rollouts.iter().any(|r| r.outcome.correct()));
            let entries: Vec<String> = rollouts
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let mut entry = PyJsonObject::default();
                    entry.field("rollout_idx", &i);
                    entry.field("sample_seed", &r.sample_seed);
                    match &r.outcome {
                        Outcome::Answer(s) => {
                            entry.field("pred_answer_parsed", &s.pred_answer_parsed);
                            entry.field("correct", &s.correct);
                            entry.field("gold_norm", &s.gold_norm);
                            entry.field("pred_norm", &s.pred_norm);
                        }
                        Outcome::Code(c) => entry.fields(c),
                    }
                    entry.finish()
                })
                .collect();
            out.raw("rollouts", &format!("[{}]", entries.join(", ")));
            match rollouts.first().map(|r| &r.outcome) {
                Some(Outcome::Code(c)) => out.field("pred_code_parsed", &c.pred_code_parsed),
                Some(Outcome::Answer(s)) => out.field("gold_answer_parsed", &s.gold_answer_parsed),
                None => {}
            }
        }
    }
    out.fields(rmas);
    out.finish()
}

/// The reference's summary record (percentages, unrounded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Always `summary`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The run.
    #[serde(flatten)]
    pub run: RunLabel,
    /// Questions scored.
    pub num_samples: usize,
    /// Rollouts per question.
    pub num_rollouts: usize,
    /// The first rollout's seed.
    pub sample_seed_base: u64,
    /// Correct answers per rollout.
    pub per_rollout_num_correct: Vec<usize>,
    /// Their accuracies, %.
    pub per_rollout_accuracy: Vec<f64>,
    /// Correct questions (any rollout, for several).
    pub num_correct: usize,
    /// The headline accuracy, % (pass@K for several rollouts).
    pub accuracy: f64,
    /// Questions with any rollout correct, %.
    pub pass_at_k: f64,
}

/// A finished question as counted for the summary: correct per rollout.
pub type Tally = Vec<bool>;

impl Summary {
    /// The summary of `tallies` (one per question) of the run `run`.
    pub fn new(run: &RunLabel, num_rollouts: usize, sample_seed_base: u64, tallies: &[Tally]) -> Self {
        let total = tallies.len();
        let percent = |n: usize| if total > 0 { 100.0 * n as f64 / total as f64 } else { 0.0 };
        let per_rollout: Vec<usize> =
            (0..num_rollouts).map(|r| tallies.iter().filter(|t| t.get(r).copied().unwrap_or(false)).count()).collect();
        let any = tallies.iter().filter(|t| t.iter().any(|&c| c)).count();
        let pass_at_k = percent(any);
        Self {
            kind: "summary".to_owned(),
            run: run.clone(),
            num_samples: total,
            num_rollouts,
            sample_seed_base,
            per_rollout_accuracy: per_rollout.iter().map(|&n| percent(n)).collect(),
            num_correct: if num_rollouts > 1 { any } else { per_rollout.first().copied().unwrap_or(0) },
            accuracy: if num_rollouts > 1 { pass_at_k } else { percent(per_rollout.first().copied().unwrap_or(0)) },
            per_rollout_num_correct: per_rollout,
            pass_at_k,
        }
    }

    /// The reference's closing line: `accuracy=xx.xx% (n/N)` or `pass@K=xx.xx% (n/N)`.
    pub fn headline(&self) -> String {
        if self.num_rollouts > 1 {
            format!("pass@{}={:.2}% ({}/{})", self.num_rollouts, self.pass_at_k, self.num_correct, self.num_samples)
        } else {
            format!("accuracy={:.2}% ({}/{})", self.accuracy, self.num_correct, self.num_samples)
        }
    }

    /// The record line.
    pub fn to_line(&self) -> String {
        let mut out = PyJsonObject::default();
        out.fields(self);
        out.finish()
    }
}

/// A JSON object written field by field in Python's `json.dumps(..., ensure_ascii=False)` layout
/// (`", "` and `": "` separators, floats as Python prints them).
#[derive(Default)]
pub struct PyJsonObject {
    parts: Vec<String>,
}

impl PyJsonObject {
    /// Adds `key: value`.
    pub fn field(&mut self, key: &str, value: &impl Serialize) {
        self.raw(key, &py_json(value));
    }

    /// Adds `key: json` with `json` already written.
    pub fn raw(&mut self, key: &str, json: &str) {
        self.parts.push(format!("{}: {json}", py_json(&key)));
    }

    /// Adds every field of a struct (or map), in its order.
    pub fn fields(&mut self, value: &impl Serialize) {
        let text = py_json(value);
        let inner = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or_default();
        if !inner.is_empty() {
            self.parts.push(inner.to_owned());
        }
    }

    /// The object's text.
    pub fn finish(self) -> String {
        format!("{{{}}}", self.parts.join(", "))
    }
}

/// `value` as Python's `json.dumps(value, ensure_ascii=False)` writes it.
pub fn py_json(value: &impl Serialize) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter);
    value.serialize(&mut ser).expect("records serialize to memory");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// serde_json's formatter with Python's separators and float spelling.
struct PyFormatter;

impl serde_json::ser::Formatter for PyFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_f64<W: ?Sized + Write>(&mut self, writer: &mut W, value: f64) -> std::io::Result<()> {
        writer.write_all(rmas_text::pystr::py_float_repr(value).as_bytes())
    }
}

/// What an existing result file holds: the finished records by sample index (their lines as
/// written) and whether it already ends with a summary.
#[derive(Debug, Default)]
pub struct Existing {
    /// Record lines by `sample_idx`.
    pub records: BTreeMap<usize, String>,
    /// Per-question correctness of each record.
    pub tallies: BTreeMap<usize, Tally>,
    /// The first rollout's strict check, where the record has one.
    pub strict: BTreeMap<usize, bool>,
    /// The settings its records were written with (`rmas_settings`).
    pub settings: Option<String>,
    /// The summary record, when the run had finished.
    pub summary: Option<Summary>,
}

/// Reads a result file written by `rmas eval` for resuming or merging. A last line cut off by a
/// crash is dropped (`repair` truncates the file to its last whole line); records written with
/// other `settings` (when given) are refused.
pub fn read_existing(path: &Path, settings: Option<&str>, repair: bool) -> Result<Existing, EvalError> {
    let io = |e: std::io::Error| EvalError::Io { path: path.to_path_buf(), source: e };
    let bytes = std::fs::read(path).map_err(io)?;
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if whole < bytes.len() && repair {
        OpenOptions::new().write(true).open(path).and_then(|f| f.set_len(whole as u64)).map_err(io)?;
    }
    let text = String::from_utf8_lossy(&bytes[..whole]);
    let mut existing = Existing::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let value: Value = serde_json::from_str(line).map_err(|e| EvalError::Resume {
            path: path.to_path_buf(),
            msg: format!("line {}: not JSON ({e})", i + 1),
        })?;
        if value.get("type").and_then(Value::as_str) == Some("summary") {
            let summary = serde_json::from_value(value)
                .map_err(|e| EvalError::Row { origin: at(), msg: format!("not a summary record: {e}") })?;
            existing.summary = Some(summary);
            continue;
        }
        let found = value.get("rmas_settings").and_then(Value::as_str);
        if existing.settings.is_none() {
            existing.settings = found.map(str::to_owned);
        }
        if let Some(wanted) = settings
            && found != Some(wanted)
        {
            return Err(EvalError::Resume {
                path: path.to_path_buf(),
                msg: format!(
                    "line {} was written with other settings:\n  file: {}\n  now:  {wanted}\nuse another --result-jsonl, or the same settings",
                    i + 1,
                    found.unwrap_or("<none: not written by rmas eval>")
                ),
            });
        }
        let idx = value
            .get("sample_idx")
            .and_then(Value::as_u64)
            .ok_or_else(|| EvalError::Row { origin: at(), msg: "no `sample_idx`".into() })? as usize;
        let tally = match value.get("rollouts").and_then(Value::as_array) {
            Some(rollouts) => {
                rollouts.iter().map(|r| r.get("correct").and_then(Value::as_bool).unwrap_or(false)).collect()
            }
            None => vec![
                value
                    .get("correct")
                    .and_then(Value::as_bool)
                    .ok_or_else(|| EvalError::Row { origin: at(), msg: "no `correct`".into() })?,
            ],
        };
        if existing.records.insert(idx, line.to_owned()).is_some() {
            return Err(EvalError::Resume { path: path.to_path_buf(), msg: format!("sample_idx {idx} appears twice") });
        }
        existing.tallies.insert(idx, tally);
        if let Some(strict) = value.get("rmas_strict_correct").and_then(|v| v.get(0)).and_then(Value::as_bool) {
            existing.strict.insert(idx, strict);
        }
    }
    Ok(existing)
}

/// An append-only result file: each line is flushed and synced when written, so a killed run
/// loses at most the questions in flight.
pub struct ResultWriter {
    file: File,
    path: PathBuf,
}

impl ResultWriter {
    /// Opens `path` for appending (created when absent, emptied when `truncate`).
    pub fn open(path: &Path, truncate: bool) -> Result<Self, EvalError> {
        let io = |e: std::io::Error| EvalError::Io { path: path.to_path_buf(), source: e };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = if truncate { File::create(path) } else { OpenOptions::new().create(true).append(true).open(path) }
            .map_err(io)?;
        Ok(Self { file, path: path.to_path_buf() })
    }

    /// Appends one line and makes it durable.
    pub fn append(&mut self, line: &str) -> Result<(), EvalError> {
        let io = |e: std::io::Error| EvalError::Io { path: self.path.clone(), source: e };
        self.file.write_all(format!("{line}\n").as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}

/// Merges result files of the shards of one run into `output`: records ordered by `sample_idx`
/// (each exactly once), then the summary of them all. Returns that summary.
pub fn merge(inputs: &[PathBuf], output: &Path) -> Result<Summary, EvalError> {
    let mut records = BTreeMap::new();
    let mut tallies = BTreeMap::new();
    // The settings of the first file's records anchor the check of every file.
    let mut settings: Option<String> = None;
    let mut summary_of_first = None;
    for path in inputs {
        let existing = read_existing(path, settings.as_deref(), false)?;
        settings = settings.or(existing.settings);
        let Some(summary) = existing.summary else {
            return Err(EvalError::Resume {
                path: path.clone(),
                msg: "has no summary record: the run did not finish (finish it with --resume first)".into(),
            });
        };
        summary_of_first.get_or_insert(summary);
        for (idx, line) in existing.records {
            if records.insert(idx, line).is_some() {
                return Err(EvalError::Resume {
                    path: path.clone(),
                    msg: format!("sample_idx {idx} is in more than one input"),
                });
            }
        }
        tallies.extend(existing.tallies);
    }
    let first = summary_of_first.ok_or(EvalError::NoInputs)?;
    let tallies: Vec<Tally> = tallies.into_values().collect();
    let summary = Summary::new(&first.run, first.num_rollouts, first.sample_seed_base, &tallies);
    let mut writer = ResultWriter::open(output, true)?;
    for line in records.values() {
        writer.append(line)?;
    }
    writer.append(&summary.to_line())?;
    Ok(summary)
}
