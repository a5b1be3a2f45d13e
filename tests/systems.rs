//! Whole RecursiveMAS systems against the official pipeline's outputs (HF cache fixtures, offline):
//! every rollout input, hidden state, latent and message within f32 noise, greedy token ids exact.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use burn::tensor::{DType, Tensor};
use rmas::engine::{Event, Run, RunOptions, StageKind, System};
use rmas::hub::Hub;
use rmas::system::SystemSpec;
use rmas::system::downloads::{Downloads, Fetched, Want};
use rmas_models::weights::ByteSource;
use rmas_models::{RmasBackend, block_on};
use rmas_models::generate::Sampling;
use rmas_suite::{Golden, assert_close, golden};
use rmas_text::ChatOptions;
use rmas_text::prompts::{Dataset, Style};
use serde_json::Value;

/// Embeddings, hidden states and latents: the float64 re-run of the reference differs by ~1e-5.
const ATOL: f32 = 2e-4;
const RTOL: f32 = 1e-3;

/// How a golden case's system is loaded.
#[derive(Clone, Copy, PartialEq)]
enum Loading {
    /// From the hub cache, every agent resident.
    Resident,
    /// From the hub cache, each agent only for its stage (`--offload`).
    Offload,
    /// From bytes fetched file by file, as in the browser.
    Downloads,
}

fn case<B: RmasBackend>(device: &B::Device, name: &str) {
    run_case::<B>(device, name, Loading::Resident);
}

/// A fetched file that records its largest single read.
struct Recorded {
    bytes: Vec<u8>,
    largest_read: Rc<Cell<usize>>,
}

impl ByteSource for Recorded {
    fn len(&self) -> usize {
        self.bytes.len()
    }

    fn read(&self, range: std::ops::Range<usize>) -> Vec<u8> {
        self.largest_read.set(self.largest_read.get().max(range.len()));
        self.bytes[range].to_vec()
    }
}

/// Runs a golden case.
fn run_case<B: RmasBackend>(device: &B::Device, name: &str, loading: Loading) {
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(golden(&format!("systems/{name}/expected.json"))).unwrap()).unwrap();
    let g = Golden::open(&format!("systems/{name}/expected.safetensors"));
    let settings = &expected["settings"];
    let style: Style = settings["style"].as_str().unwrap().parse().unwrap();
    let hub = Hub::new(golden(&format!("systems/{name}/hub"))).with_offline(true);
    let task = settings["task"].as_str().unwrap().parse().unwrap();
    let system = if loading == Loading::Downloads {
        let downloads = Downloads::new();
        let (asked, weight_files) = (RefCell::new(Vec::new()), RefCell::new(Vec::new()));
        let fetch = |repo: String, file: String, want: Want| {
            asked.borrow_mut().push((format!("{repo}/{file}"), want));
            let bytes = hub.repo(&repo).cached(&file).map(|path| std::fs::read(path).unwrap());
            let file = bytes.map(|bytes| {
                let recorded = Recorded { bytes, largest_read: Rc::new(Cell::new(0)) };
                if file.ends_with(".safetensors") && want == Want::Bytes {
                    weight_files.borrow_mut().push((format!("{repo}/{file}"), recorded.bytes.clone(), recorded.largest_read.clone()));
                }
                Box::new(recorded) as Fetched
            });
            std::future::ready(Ok(file))
        };
        let spec = block_on(downloads.resolve(style, task, &fetch)).unwrap();
        let system = block_on(downloads.load::<B, _, _>(&spec, device, DType::F32, &fetch)).unwrap();
        // Weight files: only downloaded while resolving, their bytes asked for once when loading.
        let asked = asked.into_inner();
        let weights: Vec<_> = asked.iter().filter(|(f, _)| f.ends_with(".safetensors")).collect();
        assert!(!weights.is_empty());
        for (file, want) in &weights {
            let times: Vec<Want> = asked.iter().filter(|(f, _)| f == file).map(|(_, w)| *w).collect();
            assert_eq!(times, [Want::Presence, Want::Bytes], "{file}: asked as {times:?} ({want:?})");
        }
        // Weights are copied in one tensor at a time, never as a whole file.
        for (file, bytes, largest_read) in weight_files.into_inner() {
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            let largest_tensor = st.tensors().iter().map(|(_, t)| t.data().len()).max().unwrap();
            let limit = largest_tensor.max(header);
            assert!(largest_read.get() <= limit, "{file}: a read of {} bytes, largest tensor or header {limit}", largest_read.get());
            assert!(largest_read.get() > 0 && largest_read.get() < bytes.len(), "{file}: largest read {}", largest_read.get());
        }
        system
    } else {
        let spec = SystemSpec::resolve_style(&hub, style, task).unwrap();
        System::<B>::load(&spec, device, DType::F32, loading == Loading::Offload).unwrap()
    };
    let date = chrono::NaiveDate::parse_from_str(settings["chat_template_date"].as_str().unwrap(), "%d %b %Y").unwrap();
    let opts = RunOptions {
        dataset: settings["dataset_arg"].as_str().unwrap().parse::<Dataset>().unwrap(),
        fn_name: None,
        latent_steps: settings["latent_steps"].as_u64().unwrap() as usize,
        rounds: settings["num_recursive_rounds"].as_u64().unwrap() as usize,
        max_new_tokens: settings["max_new_tokens"].as_u64().unwrap() as usize,
        sampling: Sampling::Greedy,
        seed: 42,
        chat: ChatOptions::recursivemas(date),
        answer_retry: false,
        summarize_every_round: true,
    };
    for (q, question) in expected["questions"].as_array().unwrap().iter().enumerate() {
        let mut seen: Vec<(String, Tensor<B, 2>)> = Vec::new();
        let mut on_event = |e: Event<'_, B>| match e {
            Event::Rollout { round, role, input, hidden, latents } => {
                let key = format!("q{q}/r{round}/{}", role.key());
                seen.push((format!("{key}/rollout_input_embeds"), input.clone()));
                seen.push((format!("{key}/rollout_hidden"), hidden.clone()));
                seen.push((format!("{key}/inner_latents"), latents.clone()));
                // The fed rows are the latents themselves (R_in(h_t) appended at step t).
                seen.push((format!("{key}/rollout_fed_embeds"), latents.clone()));
            }
            Event::Message { round, from, key, message } => {
                seen.push((format!("q{q}/r{round}/{}/message.{key}", from.key()), message.clone()));
            }
            Event::GenerateInput { round, role, input } => {
                seen.push((format!("r{round}/{}/text/call{q}/gen_input_embeds", role.key()), input.clone()));
            }
            _ => {}
        };
        let result = block_on(Run::new(&system, &opts, question.as_str().unwrap(), None, &mut on_event).execute()).unwrap();

        // Every recorded tensor of this question was produced, and matches.
        let keys = expected["tensor_keys"].as_array().unwrap();
        let mine: Vec<&str> = keys.iter().filter_map(Value::as_str).filter(|k| k.starts_with(&format!("q{q}/")) || k.contains(&format!("/call{q}/"))).collect();
        assert_eq!(seen.len(), mine.len(), "{name} q{q}: produced {:?}, expected {mine:?}", seen.iter().map(|s| &s.0).collect::<Vec<_>>());
        for (key, tensor) in seen {
            assert_close(&format!("{name} {key}"), tensor, g.tensor(&key, device), ATOL, RTOL);
        }

        // Greedy ids of every generate call, in order, and the final text.
        let calls: Vec<Vec<u32>> = expected["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "generate" && e["call_index_in_stage"] == q)
            .map(|e| e["returned_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect())
            .collect();
        let ours: Vec<Vec<u32>> = result.stages.iter().filter_map(|s| match &s.kind { StageKind::Text { ids } => Some(ids.clone()), _ => None }).collect();
        assert_eq!(ours, calls, "{name} q{q}: generated ids per call");
        assert_eq!(result.token_ids, *calls.last().unwrap(), "{name} q{q}: final ids");
        assert_eq!(result.answer, expected["final_outputs"][q].as_str().unwrap(), "{name} q{q}: final text");
    }
}

fn mixture<B: RmasBackend>(device: &B::Device) {
    case::<B>(device, "mixture-r2");
}

fn sequential_light<B: RmasBackend>(device: &B::Device) {
    case::<B>(device, "sequential-light-r2");
}

/// Stage-by-stage loading (`--offload`) gives the same results.
#[test]
fn offloaded_agents_match_reference() {
    run_case::<burn::backend::NdArray>(&Default::default(), "mixture-r2", Loading::Offload);
}

/// Loading from bytes fetched file by file (the browser's path) gives the same results, fetching
/// weight bytes only when their agent loads and reading them tensor by tensor.
#[test]
fn downloaded_systems_match_reference() {
    for name in ["sequential-light-r2", "mixture-r2"] {
        run_case::<burn::backend::NdArray>(&Default::default(), name, Loading::Downloads);
    }
}

rmas_suite::backend_tests! {
    mixture_matches_reference => mixture,
    sequential_light_matches_reference => sequential_light,
}
