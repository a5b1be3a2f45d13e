//! Conformance against the reference goldens: every prompt of both system runs (user text,
//! rendered chat, token ids), generated-text decoding, and the per-architecture tokenizers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use rmas_text::{ChatOptions, Dataset, PromptContext, Role, Style, Tokenizer, system_prompt, user_prompt};
use serde_json::Value;

use crate::common::{fixture, model_tokenizer};

fn load_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("`{key}` is not a string in {v}"))
}

fn ids_of(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not a list of ids: {e}: {v}"))
}

/// `hub/models--Org--Name/snapshots/<refs/main>` of a repo id.
fn snapshot_dir(hub: &Path, repo_id: &str) -> PathBuf {
    let repo = hub.join(format!("models--{}", repo_id.replace('/', "--")));
    let commit = std::fs::read_to_string(repo.join("refs/main")).expect("refs/main");
    repo.join("snapshots").join(commit.trim())
}

/// One system case: its expected.json and the tokenizers of its agents.
struct Case {
    name: String,
    expected: Value,
    tokenizers: HashMap<String, Tokenizer>,
}

impl Case {
    fn load(name: &str) -> Self {
        let dir = fixture(&format!("systems/{name}"));
        let expected = load_json(&dir.join("expected.json"));
        let hub = dir.join("hub");
        let tokenizers = expected["repos"]
            .as_object()
            .expect("repos")
            .iter()
            .filter(|(role, _)| role.as_str() != "outer")
            .map(|(role, repo)| {
                let snapshot = snapshot_dir(&hub, str_of(repo, "repo_id"));
                let tok = Tokenizer::from_dir(&snapshot).unwrap_or_else(|e| panic!("{name}/{role}: {e}"));
                (role.clone(), tok)
            })
            .collect();
        Self { name: name.to_owned(), expected, tokenizers }
    }

    fn settings(&self) -> &Value {
        &self.expected["settings"]
    }

    fn style(&self) -> Style {
        str_of(self.settings(), "style").parse().expect("style")
    }

    fn dataset(&self) -> Dataset {
        str_of(self.settings(), "dataset_arg").parse().expect("dataset")
    }

    fn chat_options(&self) -> ChatOptions {
        let date = NaiveDate::parse_from_str(str_of(self.settings(), "chat_template_date"), "%d %b %Y")
            .expect("chat_template_date");
        let mut opts = ChatOptions::recursivemas(date);
        opts.enable_thinking = Some(self.settings()["enable_thinking"].as_bool().unwrap_or(false));
        opts
    }

    /// The prompt context of question `q` (with its MBPP+ function name, when the case has one).
    fn context(&self, q: &Value) -> PromptContext<'_> {
        let index = q.as_u64().expect("q") as usize;
        let question = self.expected["questions"][index].as_str().expect("question");
        let ctx = PromptContext::new(question, self.dataset());
        match self.expected["mbpp_fn_names"].get(index).and_then(Value::as_str) {
            Some(name) => ctx.with_fn_name(name),
            None => ctx,
        }
    }

    fn tokenizer(&self, role: &str) -> &Tokenizer {
        &self.tokenizers[role]
    }

    fn events(&self, kind: &str) -> impl Iterator<Item = &Value> {
        let events = self.expected["events"].as_array().expect("events");
        events.iter().filter(move |e| e["event"] == kind)
    }

    /// Rebuilds, renders and tokenizes every recorded prompt.
    fn check_prompts(&self) {
        let mut count = 0;
        for event in self.events("prompt") {
            let role_key = str_of(event, "role");
            let at = format!("{} round {} {role_key} q{}", self.name, event["round"], event["q"]);
            let role: Role = role_key.parse().expect("role");
            let round = event["round"].as_u64().expect("round") as usize;
            let ctx = self.context(&event["q"]);
            let prompt = user_prompt(self.style(), role, round, &ctx).unwrap_or_else(|e| panic!("{at}: {e}"));
            assert_eq!(prompt.text, str_of(event, "user_prompt"), "{at}: user prompt");
            let slots: Vec<String> = serde_json::from_value(event["slots"].clone()).expect("slots");
            assert_eq!(prompt.slots, slots, "{at}: slots");
            let system = system_prompt(self.style());
            assert_eq!(system, str_of(event, "system_prompt"), "{at}: system prompt");

            let tok = self.tokenizer(role_key);
            let rendered = tok.render_prompt(system, &prompt.text, &self.chat_options()).expect("render");
            assert_eq!(rendered, str_of(event, "rendered_text"), "{at}: rendered text");
            let ids = match str_of(event, "kind") {
                "ids" => vec![tok.encode(&rendered, false).expect("encode")],
                "segments" => tok.encode_segments(&rendered, &prompt.slots).expect("segments"),
                other => panic!("{at}: unknown prompt kind {other}"),
            };
            let expected: Vec<Vec<u32>> = serde_json::from_value(event["segments_ids"].clone()).expect("ids");
            assert_eq!(ids, expected, "{at}: token ids");
            count += 1;
        }
        assert!(count > 0, "{}: no prompt events", self.name);
    }

    /// Stop token of every generate call, and its decoded text where a stage made one call per
    /// question (a tool loop's continuations add up to one text).
    fn check_generations(&self) {
        let outputs = self.events("stage_text_outputs").collect::<Vec<_>>();
        let mut last_texts = Vec::new();
        for output in &outputs {
            let calls: Vec<&Value> = self
                .events("generate")
                .filter(|e| e["round"] == output["round"] && e["role"] == output["role"])
                .collect();
            let texts = output["texts"].as_array().expect("texts");
            assert!(!calls.is_empty(), "{}: no generate call for {output}", self.name);
            for (i, event) in calls.iter().enumerate() {
                let role = str_of(event, "role");
                let tok = self.tokenizer(role);
                assert_eq!(Some(event["kwargs"]["eos_token_id"].as_u64().expect("eos") as u32), tok.eos_token_id());
                if calls.len() == texts.len() {
                    let text = tok.decode_generated(&ids_of(&event["returned_ids"])).expect("decode");
                    assert_eq!(text, texts[i].as_str().expect("text"), "{} {role} call {i}", self.name);
                }
            }
            last_texts = texts.clone();
        }
        if self.settings()["ans_retry"] != true {
            assert_eq!(Value::Array(last_texts), self.expected["final_outputs"], "{}: final outputs", self.name);
        }
    }

    fn check_vocab_sizes(&self) {
        for (role, tok) in &self.tokenizers {
            let expected = self.expected["repos"][role]["tokenizer_len"].as_u64().expect("tokenizer_len");
            assert_eq!(tok.vocab_size() as u64, expected, "{}/{role}", self.name);
        }
    }
}

#[test]
fn system_prompts_render_and_tokenize_like_the_reference() {
    for name in system_cases() {
        let case = Case::load(&name);
        case.check_vocab_sizes();
        case.check_prompts();
        case.check_generations();
    }
}

/// The case directories under `tests/fixtures/golden/<kind>` that hold `file`, sorted.
fn cases(kind: &str, file: &str) -> Vec<String> {
    let dir = fixture(kind);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.join(file).is_file())
        .map(|path| path.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 2, "goldens missing under {}", dir.display());
    names
}

/// Every system case.
fn system_cases() -> Vec<String> {
    cases("systems", "expected.json")
}

#[test]
fn model_goldens_decode_and_round_trip() {
    for arch in cases("models", "golden.json") {
        let arch = arch.as_str();
        let tok = model_tokenizer(arch);
        let golden = load_json(&fixture(&format!("models/{arch}/golden.json")));
        assert_eq!(tok.vocab_size() as u64, golden["tokenizer_len"].as_u64().expect("tokenizer_len"), "{arch}");
        let input_ids = ids_of(&golden["input_ids"]);
        let text = tok.decode(&input_ids, false).expect("decode");
        assert_eq!(tok.encode(&text, false).expect("encode"), input_ids, "{arch}: decode/encode round trip");
        let generated = tok.decode(&ids_of(&golden["gen_new_ids"]), false).expect("decode");
        assert_eq!(generated, str_of(&golden, "gen_new_text"), "{arch}: gen_new_text");
    }
}

/// docs/algorithm.md, "Prompt rendering", with SYSTEM = "You are a helpful assistant.".
#[test]
fn observed_renderings_of_each_family() {
    let user = "What is 2+3?\n";
    let trimmed = user.trim();
    let qwen = format!(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    );
    let qwen35 = format!(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{trimmed}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    );
    let cases = [
        ("qwen3", format!("{qwen}<think>\n\n</think>\n\n")),
        ("qwen3_5", qwen35.clone()),
        ("qwen3_5_text", qwen35),
        (
            "qwen2",
            format!("<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>{user}<｜Assistant｜><think>\n"),
        ),
        (
            "llama",
            format!(
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{trimmed}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
            ),
        ),
        ("mistral", format!("<s>[INST] You are a helpful assistant.\n\n{user} [/INST]")),
        (
            "gemma3",
            format!(
                "<bos><start_of_turn>user\nYou are a helpful assistant.\n\n{trimmed}<end_of_turn>\n<start_of_turn>model\n"
            ),
        ),
    ];
    let opts = ChatOptions::recursivemas(NaiveDate::from_ymd_opt(2024, 7, 26).expect("date"));
    for (arch, expected) in cases {
        let rendered = model_tokenizer(arch).render_prompt("You are a helpful assistant.", user, &opts);
        assert_eq!(rendered.expect("render"), expected, "{arch}");
    }
    // Qwen2.5-Coder and Qwen2.5-Math templates come with the system repos.
    let coder = Case::load("mixture-r2");
    let math = Case::load("sequential-light-r2");
    for tok in [coder.tokenizer("code"), math.tokenizer("solver")] {
        let rendered = tok.render_prompt("You are a helpful assistant.", user, &opts).expect("render");
        assert_eq!(rendered, qwen, "{tok:?}");
    }
}
