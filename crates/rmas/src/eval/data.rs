//! Benchmark rows: read from a local file (`.jsonl`, `.json`, `.csv`, `.parquet`) or from the
//! dataset's Hugging Face repo through the hub cache, selected as the reference selects them, and
//! turned into questions with their gold answers and tests (docs/eval.md).

use std::path::{Path, PathBuf};

use rmas_text::Dataset;
use rmas_text::scoring::{CodeTests, lcb_code_tests, mbpp_code_tests};
use serde_json::{Map, Value};

use super::EvalError;
use crate::hub::Hub;
use crate::source::FileSource;

/// One benchmark question, ready to run and score.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalItem {
    /// Position in the selected dataset order (the reference's `sample_idx`).
    pub sample_idx: usize,
    /// The question as the prompts get it.
    pub question: String,
    /// The function code prompts ask for.
    pub fn_name: Option<String>,
    /// The gold the reference records (`gold_answer_raw`).
    pub gold_answer_raw: String,
    /// The tests of a code question.
    pub tests: Option<CodeTests>,
}

impl EvalItem {
    /// The item of `row` (one record of `dataset`) for a run seeded with `seed` (GPQA's option
    /// order); errors name `origin` (file and line).
    pub fn from_row(
        dataset: Dataset,
        row: &Value,
        sample_idx: usize,
        seed: u64,
        origin: &str,
    ) -> Result<Self, EvalError> {
        let bad = |e: rmas_text::TextError| EvalError::Row { origin: origin.to_owned(), msg: e.to_string() };
        let built = rmas_text::row_question(dataset, row, seed).map_err(bad)?;
        let gold_answer_raw = rmas_text::row_gold(dataset, row, seed).map_err(bad)?;
        let tests = match dataset {
            Dataset::MbppPlus => Some(mbpp_code_tests(row)),
            Dataset::LiveCodeBench => Some(lcb_code_tests(row).map_err(bad)?),
            _ => None,
        };
        Ok(Self { sample_idx, question: built.question, fn_name: built.fn_name, gold_answer_raw, tests })
    }
}

impl EvalItem {
    /// Adds a LiveCodeBench row's private tests (`private_test_cases`) after its public ones, as the
    /// reference's `build_eval_sample(row, use_private=True)` (off by default there and here).
    pub fn with_private_tests(mut self, row: &Value, origin: &str) -> Result<Self, EvalError> {
        let bad =
            |msg: String| EvalError::Row { origin: origin.to_owned(), msg: format!("`private_test_cases`: {msg}") };
        let Some(tests) = self.tests.as_mut().filter(|t| !matches!(t, CodeTests::Script { .. })) else {
            return Ok(self);
        };
        let blob = row.get("private_test_cases").and_then(Value::as_str).unwrap_or_default();
        tests.push_cases(&private_cases(blob).map_err(bad)?).map_err(bad)?;
        Ok(self)
    }
}

/// LiveCodeBench's private cases: a JSON list, or base64 of zlib of a pickled JSON string (the
/// reference's `decode_private_test_cases`). Decompressed sizes are capped.
fn private_cases(blob: &str) -> Result<Vec<Value>, String> {
    use std::io::Read;
    const MAX_BYTES: u64 = 1 << 30;
    if blob.is_empty() {
        return Ok(Vec::new());
    }
    if let Ok(Value::Array(cases)) = serde_json::from_str::<Value>(blob) {
        return Ok(cases);
    }
    use base64::Engine;
    let compressed =
        base64::engine::general_purpose::STANDARD.decode(blob.trim()).map_err(|e| format!("not base64: {e}"))?;
    let mut pickled = Vec::new();
    flate2::read::ZlibDecoder::new(compressed.as_slice())
        .take(MAX_BYTES + 1)
        .read_to_end(&mut pickled)
        .map_err(|e| format!("not zlib data: {e}"))?;
    if pickled.len() as u64 > MAX_BYTES {
        return Err(format!("decompresses past {MAX_BYTES} bytes"));
    }
    let text = crate::pt::unpickle_text(&pickled)?;
    match serde_json::from_str(&text).map_err(|e| format!("the pickled text is not JSON: {e}"))? {
        Value::Array(cases) => Ok(cases),
        _ => Err("the pickled JSON is not a list".into()),
    }
}

/// The dataset's rows from `file`, or else from its Hub repo (see [`hub_source`]), each with
/// where it came from (`file:line`).
pub fn load_rows(
    dataset: Dataset,
    file: Option<&Path>,
    split: Option<&str>,
    hub: &Hub,
) -> Result<Vec<(String, Value)>, EvalError> {
    if let Some(path) = file {
        return read_rows(path);
    }
    let source = hub_source(dataset).ok_or_else(|| EvalError::NoSource { dataset: dataset.key() })?;
    let split = split.unwrap_or(default_split(dataset));
    let repo = hub.dataset(source.repo);
    let files = source.files(&repo, split)?;
    let mut rows = Vec::new();
    for file in files {
        let path = repo.get(&file).map_err(|e| EvalError::Hub(Box::new(e)))?;
        rows.extend(read_rows(&path)?);
    }
    Ok(rows)
}

/// The split the reference evaluates when none is given (`DATASET_DEFAULT_SPLIT`): train for
/// GPQA and MedQA, test otherwise.
pub fn default_split(dataset: Dataset) -> &'static str {
    match dataset {
        Dataset::Gpqa | Dataset::MedQa => "train",
        _ => "test",
    }
}

/// Where the reference loads a dataset from on the Hub.
#[derive(Debug, Clone, Copy)]
pub struct HubSource {
    /// The dataset repo.
    pub repo: &'static str,
    /// The data files of a split: `{split}` is replaced; a `*` matches any text.
    pub patterns: &'static [&'static str],
}

impl HubSource {
    /// The repo files of `split`, in order.
    fn files(&self, repo: &crate::hub::RepoHandle, split: &str) -> Result<Vec<String>, EvalError> {
        let listing = if self.patterns.iter().any(|p| p.contains('*')) {
            repo.list_files().map_err(|e| EvalError::Hub(Box::new(e)))?
        } else {
            Vec::new()
        };
        let mut files = Vec::new();
        for pattern in self.patterns {
            let pattern = pattern.replace("{split}", split);
            match pattern.split_once('*') {
                None => files.push(pattern),
                Some((head, tail)) => {
                    let mut matched: Vec<String> = listing
                        .iter()
                        .filter(|f| f.len() >= head.len() + tail.len() && f.starts_with(head) && f.ends_with(tail))
                        .cloned()
                        .collect();
                    if matched.is_empty() {
                        return Err(EvalError::NoSplit { repo: self.repo, split: split.to_owned(), pattern });
                    }
                    matched.sort();
                    files.extend(matched);
                }
            }
        }
        Ok(files)
    }
}

/// The Hub repo and files the reference reads for `dataset`; `None` where it reads a local file
/// (MedQA ships as JSON with the release) or rmas knows no canonical repo (AIME, HotpotQA,
/// Bamboogle): pass `--data` for those.
pub fn hub_source(dataset: Dataset) -> Option<HubSource> {
    Some(match dataset {
        Dataset::Math500 => HubSource { repo: "HuggingFaceH4/MATH-500", patterns: &["{split}.jsonl"] },
        Dataset::Gsm8k => HubSource { repo: "openai/gsm8k", patterns: &["main/{split}-*.parquet"] },
        Dataset::Gpqa => HubSource { repo: "Idavidrein/gpqa", patterns: &["gpqa_diamond.csv"] },
        Dataset::MbppPlus => HubSource { repo: "evalplus/mbppplus", patterns: &["data/{split}-*.parquet"] },
        Dataset::LiveCodeBench => HubSource {
            repo: "livecodebench/code_generation_lite",
            patterns: &["test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl", "test6.jsonl"],
        },
        Dataset::MedQa | Dataset::Aime25 | Dataset::Aime26 | Dataset::HotpotQa | Dataset::Bamboogle => return None,
    })
}

/// The rows of a data file by its extension, each a JSON object with its `file:line` (`file#row`
/// for JSON and parquet).
pub fn read_rows(path: &Path) -> Result<Vec<(String, Value)>, EvalError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_ascii_lowercase();
    let ext = name.rsplit('.').next().unwrap_or_default();
    let io = |e: std::io::Error| EvalError::Io { path: path.to_path_buf(), source: e };
    let bad = |at: String, msg: String| EvalError::Row { origin: at, msg };
    let shown = path.display();
    match ext {
        "jsonl" => {
            let text = std::fs::read_to_string(path).map_err(io)?;
            let mut rows = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let at = format!("{shown}:{}", i + 1);
                let row: Value = serde_json::from_str(line).map_err(|e| bad(at.clone(), format!("not JSON: {e}")))?;
                if !row.is_object() {
                    return Err(bad(at, "expected a JSON object".into()));
                }
                rows.push((at, row));
            }
            Ok(rows)
        }
        "json" => {
            let text = std::fs::read_to_string(path).map_err(io)?;
            let value: Value =
                serde_json::from_str(&text).map_err(|e| bad(shown.to_string(), format!("not JSON: {e}")))?;
            let Value::Array(items) = value else {
                return Err(bad(shown.to_string(), "expected a JSON list of row objects".into()));
            };
            items
                .into_iter()
                .enumerate()
                .map(|(i, row)| {
                    let at = format!("{shown}#{i}");
                    if row.is_object() { Ok((at, row)) } else { Err(bad(at, "expected a JSON object".into())) }
                })
                .collect()
        }
        "csv" => {
            let text = std::fs::read_to_string(path).map_err(io)?;
            // A record's line is where it starts (quoted fields may span lines).
            // (csv reports a record at the line break that ended the previous one.)
            let line_at = |byte: u64| {
                let bytes = text.as_bytes();
                let mut at = (byte as usize).min(bytes.len());
                while at < bytes.len() && matches!(bytes[at], b'\r' | b'\n') {
                    at += 1;
                }
                1 + bytes[..at].iter().filter(|&&b| b == b'\n').count()
            };
            let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(text.as_bytes());
            let headers = reader.headers().map_err(|e| bad(format!("{shown}:1"), e.to_string()))?.clone();
            let mut rows = Vec::new();
            for record in reader.records() {
                let record = record.map_err(|e| {
                    let line = e.position().map_or(0, |p| line_at(p.byte()));
                    bad(format!("{shown}:{line}"), e.to_string())
                })?;
                let line = record.position().map_or(0, |p| line_at(p.byte()));
                let row: Map<String, Value> =
                    headers.iter().zip(record.iter()).map(|(k, v)| (k.to_owned(), Value::from(v))).collect();
                rows.push((format!("{shown}:{line}"), Value::Object(row)));
            }
            Ok(rows)
        }
        "parquet" => read_parquet(path),
        _ => Err(EvalError::Format { path: path.to_path_buf() }),
    }
}

/// The rows of a parquet file (snappy, gzip or uncompressed pages), as JSON objects.
fn read_parquet(path: &Path) -> Result<Vec<(String, Value)>, EvalError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let bad =
        |msg: String| EvalError::Row { origin: path.display().to_string(), msg: format!("unreadable parquet: {msg}") };
    let file = std::fs::File::open(path).map_err(|e| EvalError::Io { path: path.to_path_buf(), source: e })?;
    let reader = SerializedFileReader::new(file).map_err(|e| bad(e.to_string()))?;
    let rows = reader.get_row_iter(None).map_err(|e| bad(e.to_string()))?;
    rows.enumerate()
        .map(|(i, row)| {
            let row = row.map_err(|e| bad(format!("row {i}: {e}")))?;
            Ok((format!("{}#{i}", path.display()), row.to_json_value()))
        })
        .collect()
}

/// How a selection orders the rows before taking the first `--num-samples`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shuffle {
    /// Dataset order (the reference's default: `run.py` never shuffles).
    None,
    /// CPython's `random.Random(seed).shuffle(records)` (the reference's list datasets: MBPP+,
    /// MedQA).
    Python(u64),
    /// `datasets`' `Dataset.shuffle(seed)`: numpy's `default_rng(seed).permutation(n)` (the
    /// reference's Hub datasets).
    Numpy(u64),
}

impl Shuffle {
    /// How the reference shuffles `dataset` with `seed`.
    pub fn reference(dataset: Dataset, seed: u64) -> Self {
        match dataset {
            Dataset::MbppPlus | Dataset::MedQa => Shuffle::Python(seed),
            _ => Shuffle::Numpy(seed),
        }
    }
}

/// The reference's selection: shuffled when asked, then the first `num_samples` (all when
/// `None`).
pub fn select<T>(mut rows: Vec<T>, shuffle: Shuffle, num_samples: Option<usize>) -> Vec<T> {
    match shuffle {
        Shuffle::None => {}
        Shuffle::Python(seed) => rmas_text::pyrandom::PyRandom::new(seed.into()).shuffle(&mut rows),
        Shuffle::Numpy(seed) => {
            let order = rmas_text::nprandom::NumpyRng::new(seed).permutation(rows.len());
            let mut slots: Vec<Option<T>> = rows.into_iter().map(Some).collect();
            rows = order.into_iter().map(|i| slots[i].take().expect("a permutation takes each row once")).collect();
        }
    }
    if let Some(n) = num_samples {
        rows.truncate(n);
    }
    rows
}

/// The deterministic slice `k` of `n` (`k` in 1..=n): every n-th item from the k-th, so shards
/// are disjoint, cover everything, and balance long and short questions.
pub fn shard<T>(items: Vec<T>, k: usize, n: usize) -> Vec<T> {
    items.into_iter().enumerate().filter(|(i, _)| i % n == k - 1).map(|(_, item)| item).collect()
}

/// A `--data` path that must be a file.
pub fn data_file(path: &Path) -> Result<PathBuf, EvalError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(path.to_path_buf()),
        Ok(_) => Err(EvalError::Io { path: path.to_path_buf(), source: std::io::Error::other("not a regular file") }),
        Err(e) => Err(EvalError::Io { path: path.to_path_buf(), source: e }),
    }
}
