//! Whole RecursiveMAS systems against the official pipeline's outputs (HF cache fixtures, offline):
//! every rollout input, hidden state, latent and message within f32 noise, greedy token ids exact.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use burn::tensor::{DType, Tensor};
use rmas::engine::{AnswerStream, Event, Run, StageKind};
use rmas::hub::Hub;
use rmas::options::RunOptions;
use rmas::system::downloads::{Downloads, Fetched, Want};
use rmas::system::{Checkpoint, SystemSpec};
use rmas_models::weights::ByteSource;
use rmas_models::{RmasBackend, block_on};
use rmas_suite::{Golden, assert_close, golden, golden_options};
use rmas_text::Style;
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
    /// From a system description whose agents are GGUF files (`tests/gguf_models.py`), the outer
    /// links from the hub cache.
    GgufDescription,
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
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(golden(&format!("systems/{name}/expected.json"))).unwrap())
            .unwrap();
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
                    weight_files.borrow_mut().push((
                        format!("{repo}/{file}"),
                        recorded.bytes.clone(),
                        recorded.largest_read.clone(),
                    ));
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
            assert!(
                largest_read.get() <= limit,
                "{file}: a read of {} bytes, largest tensor or header {limit}",
                largest_read.get()
            );
            assert!(
                largest_read.get() > 0 && largest_read.get() < bytes.len(),
                "{file}: largest read {}",
                largest_read.get()
            );
        }
        system
    } else if loading == Loading::GgufDescription {
        let released = SystemSpec::resolve_style(&hub, style, task).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut description = format!("style = {:?}\ntask = {:?}\n", style.key(), settings["task"].as_str().unwrap());
        for agent in &released.agents {
            let gguf = golden(&format!("../gguf/{name}/{}.gguf", agent.role.key()));
            let (source, inner) = (gguf.display().to_string(), agent.inner_link.display().to_string());
            description +=
                &format!("[[agents]]\nrole = {:?}\nsource = {source:?}\ninner_link = {inner:?}\n", agent.role.key());
        }
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, description).unwrap();
        let spec = SystemSpec::from_file(&path, &hub).unwrap();
        assert_eq!(spec.outer_links, released.outer_links, "{name}: outer links from the released style");
        for agent in &spec.agents {
            assert!(matches!(agent.checkpoint, Checkpoint::Gguf(_)), "{name}/{}: {:?}", agent.role, agent.checkpoint);
        }
        spec.load::<B>(device, DType::F32, false).unwrap()
    } else {
        let spec = SystemSpec::resolve_style(&hub, style, task).unwrap();
        spec.load::<B>(device, DType::F32, loading == Loading::Offload).unwrap()
    };
    let opts = golden_options(name, settings);
    // The reference runs stage by stage over the questions; a stage's generate calls are numbered in
    // that order (one per question, or several in a tool loop): `r{round}/{role}/text/call{i}`.
    let mut calls_so_far: HashMap<(usize, &'static str), usize> = HashMap::new();
    let mut ours: HashMap<(usize, String), Vec<Vec<u32>>> = HashMap::new();
    let mut seen_keys = Vec::new();
    for (q, question) in expected["questions"].as_array().unwrap().iter().enumerate() {
        let fn_name = expected["mbpp_fn_names"].get(q).and_then(Value::as_str);
        let opts = RunOptions { fn_name: fn_name.map(str::to_owned), ..opts.clone() };
        let mut seen: Vec<(String, Tensor<B, 2>)> = Vec::new();
        // What `rmas run` prints and `rmas serve` streams while the answer is generated.
        let mut stream = AnswerStream::new(system.style, opts.rounds);
        let mut streamed = String::new();
        let mut record = |e: Event<'_, B>| match e {
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
                let call = calls_so_far.entry((round, role.key())).or_default();
                seen.push((format!("r{round}/{}/text/call{call}/gen_input_embeds", role.key()), input.clone()));
                *call += 1;
            }
            _ => {}
        };
        let mut on_event = |e: Event<'_, B>| {
            streamed.extend(stream.push(&e));
            record(e)
        };
        let result =
            block_on(Run::new(&system, &opts, question.as_str().unwrap(), None, &mut on_event).execute()).unwrap();
        let during_run = streamed.len();
        streamed.extend(stream.finish(&result.answer));
        assert_eq!(streamed, result.answer, "{name} q{q}: the streamed answer is the answer");
        if !system.style.spec().tool_loop && !result.answer.is_empty() {
            assert!(during_run > 0, "{name} q{q}: the answer streamed while it was generated");
        }
        for (key, tensor) in seen {
            assert_close(&format!("{name} {key}"), tensor, g.tensor(&key, device), ATOL, RTOL);
            seen_keys.push(key);
        }
        let mut finals = Vec::new();
        for stage in &result.stages {
            if let StageKind::Text { ids } = &stage.kind {
                ours.entry((stage.round, stage.role.key().to_owned())).or_default().push(ids.clone());
                if stage.round == opts.rounds && stage.role == system.style.final_role() {
                    finals.extend_from_slice(ids);
                }
            }
        }
        assert_eq!(result.token_ids, finals, "{name} q{q}: the answer's ids are the final agent's generated ids");
        assert_eq!(result.answer, expected["final_outputs"][q].as_str().unwrap(), "{name} q{q}: final text");
    }

    // Every recorded tensor was produced (and matched above).
    let mut keys: Vec<&str> = expected["tensor_keys"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    keys.sort_unstable();
    seen_keys.sort_unstable();
    assert_eq!(seen_keys, keys, "{name}: tensors produced vs recorded");

    // Greedy ids of every generate call, stage by stage in the reference's order.
    let mut calls: HashMap<(usize, String), Vec<Vec<u32>>> = HashMap::new();
    for e in expected["events"].as_array().unwrap().iter().filter(|e| e["event"] == "generate") {
        let ids = e["returned_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        calls
            .entry((e["round"].as_u64().unwrap() as usize, e["role"].as_str().unwrap().to_owned()))
            .or_default()
            .push(ids);
    }
    assert!(!calls.is_empty(), "{name}: no generate calls recorded");
    assert_eq!(ours, calls, "{name}: generated ids per stage and call");
}

/// Every system case under `tests/fixtures/golden/systems`.
/// int8 and int4 agents (`--quantize`; RecursiveLinks stay f32) against f32 on every golden system,
/// CPU: how many of each question's greedy ids agree with the f32 run's, printed as the table in
/// docs/quantization.md. The systems' agents have random weights (flat logits), so agreement is a
/// measurement here, held only to "the run completes with the same budget"; correctness of the
/// quantized products is `tests/models.rs`'s and `tests/quant.rs`'s.
#[test]
fn quantized_systems_track_f32() {
    use rmas_models::{BlockFormat, Blocks, Precision};
    type B = burn::backend::NdArray;
    let device = Default::default();
    println!("| system | weights | greedy ids equal to f32's (per question) | first difference |");
    for name in system_cases() {
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(golden(&format!("systems/{name}/expected.json"))).unwrap())
                .unwrap();
        let settings = &expected["settings"];
        let hub = Hub::new(golden(&format!("systems/{name}/hub"))).with_offline(true);
        let style: Style = settings["style"].as_str().unwrap().parse().unwrap();
        let spec = SystemSpec::resolve_style(&hub, style, settings["task"].as_str().unwrap().parse().unwrap()).unwrap();
        let opts = golden_options(&name, settings);
        let ids = |blocks: Blocks| -> Vec<Vec<u32>> {
            let system = spec.load::<B>(&device, Precision::new(DType::F32, blocks), false).unwrap();
            let questions = expected["questions"].as_array().unwrap().iter().enumerate();
            questions
                .map(|(q, question)| {
                    let fn_name = expected["mbpp_fn_names"].get(q).and_then(Value::as_str).map(str::to_owned);
                    let opts = RunOptions { fn_name, ..opts.clone() };
                    let mut ignore = |_: Event<'_, B>| {};
                    let run = Run::new(&system, &opts, question.as_str().unwrap(), None, &mut ignore);
                    block_on(run.execute()).unwrap().token_ids
                })
                .collect()
        };
        let reference = ids(Blocks::Dense);
        for format in [BlockFormat::Q8_0, BlockFormat::Q4_1] {
            let got = ids(Blocks::Quantize(format));
            let equal: Vec<String> = got
                .iter()
                .zip(&reference)
                .map(|(a, b)| format!("{}/{}", a.iter().zip(b).filter(|(x, y)| x == y).count(), b.len()))
                .collect();
            let first: Vec<String> = got
                .iter()
                .zip(&reference)
                .map(|(a, b)| a.iter().zip(b).position(|(x, y)| x != y).map_or("none".into(), |p| p.to_string()))
                .collect();
            println!("| {name} | {format} | {} | {} |", equal.join(", "), first.join(", "));
            for (a, b) in got.iter().zip(&reference) {
                assert!(!a.is_empty() && a.len() <= opts.max_new_tokens.max(b.len()), "{name} {format}: {a:?}");
            }
        }
    }
}

fn system_cases() -> Vec<String> {
    rmas_suite::cases("systems", "expected.json")
}

fn all_systems<B: RmasBackend>(device: &B::Device) {
    for name in system_cases() {
        case::<B>(device, &name);
    }
}

/// Stage-by-stage loading (`--offload`) gives the same results.
#[test]
fn offloaded_agents_match_reference() {
    run_case::<burn::backend::NdArray>(&Default::default(), "mixture-r2", Loading::Offload);
}

/// The golden sequential-light system with its agents as GGUF files (llama.cpp's tensor names, q/k
/// permutation and `rope_freqs`; tokenizers and chat templates in the metadata, `qwen2` and
/// `llama-bpe` pre-tokenizers) named in a system description gives the same results.
#[test]
fn gguf_agents_in_a_description_match_reference() {
    run_case::<burn::backend::NdArray>(&Default::default(), "sequential-light-r2", Loading::GgufDescription);
}

/// Loading from bytes fetched file by file (the browser's path) gives the same results, fetching
/// weight bytes only when their agent loads and reading them tensor by tensor.
#[test]
fn downloaded_systems_match_reference() {
    for name in system_cases() {
        run_case::<burn::backend::NdArray>(&Default::default(), &name, Loading::Downloads);
    }
}

rmas_suite::backend_tests! {
    systems_match_reference => all_systems,
}
