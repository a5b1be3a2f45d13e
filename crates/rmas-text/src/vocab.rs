//! The RecursiveMAS vocabulary: agent roles, datasets and the task kinds they select
//! (docs/algorithm.md, "Datasets and question text").

use std::fmt;
use std::str::FromStr;

use crate::error::{Result, TextError};

/// Parses `name` (trimmed, case-insensitive) against each item's accepted names.
pub(crate) fn parse_name<T: Copy>(
    what: &'static str,
    name: &str,
    all: &[T],
    names: fn(T) -> &'static [&'static str],
) -> Result<T> {
    let key = name.trim().to_lowercase();
    all.iter().copied().find(|item| names(*item).contains(&key.as_str())).ok_or_else(|| TextError::UnknownName {
        what,
        value: name.to_owned(),
        expected: all.iter().map(|item| names(*item)[0]).collect::<Vec<_>>().join(", "),
    })
}

/// An agent role (lower-case code keys of the reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Sequential planner.
    Planner,
    /// Sequential critic (its prompt calls it "refiner").
    Critic,
    /// Sequential solver (final).
    Solver,
    /// Mixture math expert.
    Math,
    /// Mixture code expert.
    Code,
    /// Mixture science expert.
    Science,
    /// Mixture summarizer (final).
    Summarizer,
    /// Distillation expert.
    Expert,
    /// Distillation learner (final).
    Learner,
    /// Deliberation reflector.
    Reflector,
    /// Deliberation toolcaller (final).
    Toolcaller,
}

impl Role {
    /// All roles.
    pub const ALL: [Role; 11] = [
        Role::Planner,
        Role::Critic,
        Role::Solver,
        Role::Math,
        Role::Code,
        Role::Science,
        Role::Summarizer,
        Role::Expert,
        Role::Learner,
        Role::Reflector,
        Role::Toolcaller,
    ];

    /// The role key (`planner`, `math`, ...).
    pub fn key(self) -> &'static str {
        self.names()[0]
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            Role::Planner => &["planner"],
            Role::Critic => &["critic", "refiner"],
            Role::Solver => &["solver"],
            Role::Math => &["math"],
            Role::Code => &["code"],
            Role::Science => &["science"],
            Role::Summarizer => &["summarizer"],
            Role::Expert => &["expert"],
            Role::Learner => &["learner"],
            Role::Reflector => &["reflector"],
            Role::Toolcaller => &["toolcaller"],
        }
    }
}

impl FromStr for Role {
    type Err = TextError;
    fn from_str(name: &str) -> Result<Self> {
        parse_name("role", name, &Role::ALL, Role::names)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// An evaluation dataset (release: MATH500, GPQA, MedQA, MBPP+; the rest from the newer release).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dataset {
    /// HuggingFaceH4/MATH-500.
    Math500,
    /// openai/gsm8k (`main`; gold after `####`).
    Gsm8k,
    /// GPQA-Diamond (multiple choice).
    Gpqa,
    /// MedQA (multiple choice).
    MedQa,
    /// evalplus/mbppplus (code, function task).
    MbppPlus,
    /// AIME 2025 (newer release).
    Aime25,
    /// AIME 2026 (newer release).
    Aime26,
    /// LiveCodeBench v6 (newer release; code).
    LiveCodeBench,
    /// HotpotQA (newer release).
    HotpotQa,
    /// Bamboogle (newer release).
    Bamboogle,
}

impl Dataset {
    /// All datasets.
    pub const ALL: [Dataset; 10] = [
        Dataset::Math500,
        Dataset::Gsm8k,
        Dataset::Gpqa,
        Dataset::MedQa,
        Dataset::MbppPlus,
        Dataset::Aime25,
        Dataset::Aime26,
        Dataset::LiveCodeBench,
        Dataset::HotpotQa,
        Dataset::Bamboogle,
    ];

    /// The dataset key (`math500`, `gpqa`, `medqa`, `mbppplus`, ...).
    pub fn key(self) -> &'static str {
        self.names()[0]
    }

    /// Accepted names (lower-case), as the reference's dataset key sets.
    fn names(self) -> &'static [&'static str] {
        match self {
            Dataset::Math500 => &["math500", "math-500", "huggingfaceh4/math-500"],
            Dataset::Gsm8k => &["gsm8k", "openai/gsm8k"],
            Dataset::Gpqa => {
                &["gpqa", "gpqa_diamond", "idavidrein/gpqa", "idavidrein/gpqa:gpqa_diamond", "idavidrein/gpqa_diamond"]
            }
            Dataset::MedQa => &["medqa", "local/medqa", "dataset/medqa.json", "./dataset/medqa.json"],
            Dataset::MbppPlus => &["mbppplus", "mbpp+", "evalplus/mbppplus"],
            Dataset::Aime25 => &["aime25", "aime2025"],
            Dataset::Aime26 => &["aime26", "aime2026"],
            Dataset::LiveCodeBench => &[
                "lcb",
                "livecodebench",
                "livecodebench_v6",
                "livecodebench/code_generation_lite",
                "livecodebench/code_generation_lite:release_v6",
            ],
            Dataset::HotpotQa => &["hotpotqa"],
            Dataset::Bamboogle => &["bamboogle"],
        }
    }

    /// Link task (`adapter({task}).pt`, manifest `tasks[task]`): code for code datasets, else math.
    pub fn task(self) -> Task {
        match self {
            Dataset::MbppPlus | Dataset::LiveCodeBench => Task::Code,
            _ => Task::Math,
        }
    }

    /// Prompt/answer kind: code, choice (GPQA, MedQA) or math.
    pub fn mas_task(self) -> MasTask {
        match self {
            Dataset::MbppPlus | Dataset::LiveCodeBench => MasTask::Code,
            Dataset::Gpqa | Dataset::MedQa => MasTask::Choice,
            _ => MasTask::Math,
        }
    }

    /// The sequential solver's `choice_old_prompt` mode: 2 for GPQA, 0 otherwise.
    pub fn choice_old_prompt(self) -> u8 {
        if self == Dataset::Gpqa { 2 } else { 0 }
    }

    /// The code task type of the dataset's rows (MBPP+: function; LiveCodeBench rows vary).
    pub fn default_code_task(self) -> CodeTask {
        if self == Dataset::MbppPlus { CodeTask::Function } else { CodeTask::Complete }
    }
}

impl FromStr for Dataset {
    type Err = TextError;
    fn from_str(name: &str) -> Result<Self> {
        parse_name("dataset", name, &Dataset::ALL, Dataset::names)
    }
}

/// Which link set a task-scoped style loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    /// `adapter(math).pt` (also used by choice datasets).
    Math,
    /// `adapter(code).pt`.
    Code,
}

impl Task {
    /// All tasks.
    pub const ALL: [Task; 2] = [Task::Math, Task::Code];

    /// `math` or `code`.
    pub fn key(self) -> &'static str {
        self.names()[0]
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            Task::Math => &["math"],
            Task::Code => &["code"],
        }
    }

    /// The task of a dataset name ([`Dataset::task`]); math for unknown names.
    pub fn from_dataset(name: &str) -> Task {
        name.parse::<Dataset>().map_or(Task::Math, Dataset::task)
    }
}

impl FromStr for Task {
    type Err = TextError;
    fn from_str(name: &str) -> Result<Self> {
        parse_name("task", name, &Task::ALL, Task::names)
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// The reference's `mas_task`: selects CTX/FINAL blocks and the answer-retry rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MasTask {
    /// Free-form answer in `\boxed{}`.
    Math,
    /// A/B/C/D choice in `\boxed{}`.
    Choice,
    /// A Python code block.
    Code,
}

/// A code problem's interface (`task_type` "function"/"functional" vs anything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeTask {
    /// Implement a named function.
    Function,
    /// A complete stdin/stdout program.
    Complete,
}
