//! Batched execution (docs/batching.md): sequences packed into one forward, and whole systems run
//! as batches of questions, give every sequence exactly what it gets alone.
//!
//! Every test here runs cubecl backends in strict f32 (set once for this binary): their default
//! tiled products pick tiles by row count, so a row's sums may round differently at another
//! batch size; strict products sum each output over `k` in order (docs/batching.md, "Batch
//! invariance"). The CPU needs no such mode.

use burn::tensor::DType;
use rmas::engine::{Event, Run, RunResult, StageKind};
use rmas::hub::Hub;
use rmas::options::RunOptions;
use rmas::system::SystemSpec;
use rmas_models::batch::BatchStats;
use rmas_models::generate::Sampling;
use rmas_models::{BlockFormat, Blocks, Model, Precision, RmasBackend, block_on};
use rmas_suite::{Golden, assert_close, golden, golden_options};
use rmas_text::Style;
use serde_json::Value;

fn strict() {
    rmas_models::set_strict_f32(true);
}

/// Golden model `case` in f32 (its weights quantized at load to `blocks`) with its reference tensors.
fn open<B: RmasBackend>(case: &str, blocks: Blocks, device: &B::Device) -> (Golden, Model<B>) {
    let path = golden(&format!("{case}/model"));
    let model =
        Model::load(&path, device, Precision::new(DType::F32, blocks)).unwrap_or_else(|e| panic!("{case}: {e}"));
    (Golden::open(&format!("{case}/golden.safetensors")), model)
}

/// Sequences packed into one forward (`Model::forward_packed`: ragged rows of 1, an odd count, past
/// 64 for the chunked delta rule, the whole prompt — past the sliding windows of the variants that
/// have one), then a second packed step continuing each cache: every sequence's hidden states equal
/// its forward alone, dense and with int4 weights (whose products switch algorithm by row count on
/// every backend). Cubecl backends run strict f32, whose per-row sums do not depend on the row count.
fn packed_rows_match_alone<B: RmasBackend>(device: &B::Device) {
    strict();
    let models = rmas_suite::cases("models", "golden.safetensors");
    let cases = models.iter().map(|a| (format!("models/{a}"), "input_ids", Blocks::Dense));
    let int4 = models.iter().map(|a| (format!("models/{a}"), "input_ids", Blocks::Quantize(BlockFormat::Q4_1)));
    let variants = rmas_suite::cases("variants", "golden.safetensors")
        .into_iter()
        .map(|v| (format!("variants/{v}"), "prompt_ids", Blocks::Dense));
    for (case, key, blocks) in cases.chain(int4).chain(variants) {
        let (g, model) = open::<B>(&case, blocks, device);
        let case = format!("{case} {blocks:?}");
        let ids = g.ids(key);
        let n = ids.len();
        let lens = [1, 7, 70.min(n), n];
        let seqs: Vec<Vec<u32>> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| ids[i..].iter().chain(&ids[..i]).take(len).copied().collect())
            .collect();
        let more: Vec<Vec<u32>> = [1usize, 2, 1, 3].iter().enumerate().map(|(i, &m)| ids[i..i + m].to_vec()).collect();
        let mut alone = Vec::new();
        for (seq, next) in seqs.iter().zip(&more) {
            let mut cache = model.new_cache(seq.len(), next.len()).unwrap();
            let first = model.forward(model.embed(seq).unwrap(), &mut cache).unwrap();
            let second = model.forward(model.embed(next).unwrap(), &mut cache).unwrap();
            alone.push((first, second));
        }
        let mut caches: Vec<_> =
            seqs.iter().zip(&more).map(|(s, m)| model.new_cache(s.len(), m.len()).unwrap()).collect();
        let mut refs: Vec<_> = caches.iter_mut().collect();
        let packed = |steps: &[Vec<u32>], refs: &mut [&mut rmas_models::model::Cache<B>]| {
            let all: Vec<u32> = steps.concat();
            let step_lens: Vec<usize> = steps.iter().map(Vec::len).collect();
            let h = model.forward_packed(model.embed(&all).unwrap(), &step_lens, refs).unwrap();
            rmas_models::nn::split_rows(h, &step_lens)
        };
        let firsts = packed(&seqs, &mut refs);
        let seconds = packed(&more, &mut refs);
        for (i, ((first, second), (a1, a2))) in firsts.into_iter().zip(seconds).zip(alone).enumerate() {
            assert_close(&format!("{case} sequence {i} ({} rows) packed", lens[i]), first, a1, 0.0, 0.0);
            assert_close(&format!("{case} sequence {i} second step packed"), second, a2, 0.0, 0.0);
        }
        assert!(
            model.forward_packed(model.embed(&ids[..3]).unwrap(), &[1, 1], &mut refs[..2]).is_err(),
            "{case}: rows and lengths disagree"
        );
    }
}

/// Generation steps (`Calls::step`) packed: each sequence gets its greedy ids alone, and a sequence
/// whose cache runs out fails its own step with its own error, while the others' steps (then run
/// alone, the pack refused) go on to the same ids (docs/batching.md, "Packed read-backs").
#[test]
fn a_failing_step_fails_alone() {
    use rmas_models::batch::{Batch, Calls, Sequence};
    use rmas_models::generate::Sampler;
    let device = Default::default();
    let case = format!("models/{}", rmas_suite::cases("models", "golden.safetensors")[0]);
    let (g, model) = open::<burn::backend::NdArray>(&case, Blocks::Dense, &device);
    let ids = g.ids("input_ids");
    /// Greedy steps after `prompt` (its last id the first step's), at most 4, with `room` for them.
    async fn steps<B: RmasBackend>(
        calls: Calls<'_, B>,
        model: &Model<B>,
        prompt: &[u32],
        room: usize,
    ) -> (Vec<u32>, Option<String>) {
        let (head, &last) = (&prompt[..prompt.len() - 1], prompt.last().unwrap());
        let mut cache = model.new_cache(head.len(), room).unwrap();
        let mut sampler = Sampler::new(Sampling::Greedy, 0);
        calls.forward_tokens(model, head, &mut cache).await.unwrap();
        let (mut out, mut id) = (Vec::new(), last);
        for _ in 0..4 {
            match calls.step(model, id, &mut cache, &mut sampler).await {
                Ok(next) => (id, _) = (next, out.push(next)),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
        (out, None)
    }
    // Prompts of 5, 6 and 7 ids; the second has room for 2 steps, the others for 4.
    let rooms = [4, 2, 4];
    let prompts: Vec<&[u32]> = (0..3).map(|i| &ids[i..2 * i + 5]).collect();
    let run = |calls, i: usize| steps(calls, &model, prompts[i], rooms[i]);
    let alone: Vec<_> = (0..3).map(|i| block_on(run(Calls::Alone, i))).collect();
    let batch = Batch::new();
    let packed = batch.run_all((0..3).map(|i| Box::pin(run(Calls::Packed(&batch), i)) as Sequence<'_, _>).collect());
    assert_eq!(packed, alone, "{case}: packed steps vs alone");
    for (i, (out, err)) in packed.iter().enumerate() {
        assert_eq!(out.len(), rooms[i], "{case} sequence {i}: {out:?} {err:?}");
        assert_eq!(err.is_some(), rooms[i] < 4, "{case} sequence {i}: {err:?}");
    }
    assert!(packed[1].1.as_ref().unwrap().contains("cache"), "the overflow names the cache: {:?}", packed[1].1);
    assert!(batch.stats().sequences >= 2 * batch.stats().calls, "the steps were packed: {:?}", batch.stats());
}

/// Golden system `name` loaded in f32, its expected outputs and settings.
fn open_system<B: RmasBackend>(device: &B::Device, name: &str) -> (rmas::engine::LoadedSystem<B>, Value) {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(golden(&format!("systems/{name}/expected.json"))).unwrap())
            .unwrap();
    let settings = &expected["settings"];
    let style: Style = settings["style"].as_str().unwrap().parse().unwrap();
    let hub = Hub::new(golden(&format!("systems/{name}/hub"))).with_offline(true);
    let task = settings["task"].as_str().unwrap().parse().unwrap();
    let system = SystemSpec::resolve_style(&hub, style, task).unwrap().load::<B>(device, DType::F32, false).unwrap();
    (system, expected)
}

/// Each question run alone, then all of them as one batch: both results, and the batch's counts.
fn alone_and_batched<B: RmasBackend>(
    system: &rmas::engine::LoadedSystem<B>,
    questions: &[String],
    opts: &[RunOptions],
) -> (Vec<RunResult>, Vec<RunResult>, BatchStats) {
    let alone: Vec<_> = questions
        .iter()
        .zip(opts)
        .map(|(q, o)| block_on(Run::new(system, o, q, None, &mut |_| {}).execute()).unwrap())
        .collect();
    let batch = rmas_models::batch::Batch::new();
    let mut quiet: Vec<_> = questions.iter().map(|_| |_: Event<'_, B>| {}).collect();
    let runs: Vec<
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<RunResult, rmas::error::RmasError>> + '_>>,
    > = questions
        .iter()
        .zip(opts)
        .zip(quiet.iter_mut())
        .map(|((q, o), on_event)| Box::pin(Run::new(system, o, q, None, on_event).in_batch(&batch).execute()) as _)
        .collect();
    let batched = batch.run_all(runs).into_iter().map(Result::unwrap).collect();
    (alone, batched, batch.stats())
}

/// The ids of every text stage of a run.
fn stage_ids(r: &RunResult) -> Vec<Vec<u32>> {
    r.stages
        .iter()
        .filter_map(|s| if let StageKind::Text { ids } = &s.kind { Some(ids.clone()) } else { None })
        .collect()
}

/// A golden system's questions run as one batch (`Batch::run_all`), with long/short mixes: each
/// question, then the first again, and the first with the second appended (a longer prompt). Every
/// question's stages and ids equal its run alone, which for the golden questions are the reference's.
fn batched_case<B: RmasBackend>(device: &B::Device, name: &str) {
    strict();
    let (system, expected) = open_system::<B>(device, name);
    let settings = &expected["settings"];
    let golden_qs: Vec<&str> = expected["questions"].as_array().unwrap().iter().map(|q| q.as_str().unwrap()).collect();
    let fn_names: Vec<Option<String>> = (0..golden_qs.len())
        .map(|q| expected["mbpp_fn_names"].get(q).and_then(Value::as_str).map(str::to_owned))
        .collect();
    let mut questions: Vec<(String, Option<String>)> =
        golden_qs.iter().zip(&fn_names).map(|(q, f)| (q.to_string(), f.clone())).collect();
    questions.push(questions[0].clone());
    let longer = format!("{} {}", golden_qs[0], golden_qs.last().unwrap());
    questions.push((longer, fn_names[0].clone()));
    let base = golden_options(name, settings);
    let opts: Vec<RunOptions> =
        questions.iter().map(|(_, f)| RunOptions { fn_name: f.clone(), ..base.clone() }).collect();
    let texts: Vec<String> = questions.into_iter().map(|(q, _)| q).collect();
    let (alone, batched, stats) = alone_and_batched(&system, &texts, &opts);
    for (i, (b, a)) in batched.iter().zip(&alone).enumerate() {
        assert_eq!(b.token_ids, a.token_ids, "{name} question {i}: ids in the batch vs alone");
        assert_eq!(stage_ids(b), stage_ids(a), "{name} question {i}: every stage's ids");
        assert_eq!(b.answer, a.answer, "{name} question {i}: answer");
        if let Some(reference) = expected["final_outputs"].get(i) {
            assert_eq!(b.answer, reference.as_str().unwrap(), "{name} question {i}: the reference's answer");
        }
    }
    assert!(
        stats.sequences >= 2 * stats.calls,
        "{name}: {stats:?}: the runs' calls were packed (at least two sequences a call on average)"
    );
}

/// Sampled runs in a batch draw what they draw alone: each question its own seeded stream, from
/// its own row of the pack's one logits read-back (docs/batching.md, "Packed read-backs"). Two
/// questions share a seed and a text, so they must draw alike; the others differ in seed.
fn sampled_batch_matches_alone<B: RmasBackend>(device: &B::Device) {
    strict();
    let name = rmas_suite::cases("systems", "expected.json").into_iter().next().expect("a golden system");
    let (system, expected) = open_system::<B>(device, &name);
    let base = RunOptions {
        sampling: Sampling::Sample { temperature: 1.3, top_k: 50, top_p: 0.95 },
        max_new_tokens: 12,
        ..golden_options(&name, &expected["settings"])
    };
    let question = expected["questions"][0].as_str().unwrap().to_string();
    let seeds = [7, 7, 8, 9];
    let opts: Vec<RunOptions> = seeds.iter().map(|&seed| RunOptions { seed, ..base.clone() }).collect();
    let (alone, batched, _) = alone_and_batched(&system, &vec![question; seeds.len()], &opts);
    for (i, (b, a)) in batched.iter().zip(&alone).enumerate() {
        assert_eq!(
            stage_ids(b),
            stage_ids(a),
            "{name} sampled question {i} (seed {}): draws in the batch vs alone",
            seeds[i]
        );
    }
    assert_eq!(stage_ids(&alone[0]), stage_ids(&alone[1]), "one seed, one stream");
    assert!(
        alone[1..].windows(2).any(|w| stage_ids(&w[0]) != stage_ids(&w[1])),
        "seeds 7, 8 and 9 drew the same ids: the sampler did not sample"
    );
}

fn all_systems_batched<B: RmasBackend>(device: &B::Device) {
    for name in rmas_suite::cases("systems", "expected.json") {
        batched_case::<B>(device, &name);
    }
}

rmas_suite::backend_tests! {
    packed_rows_match_alone => packed_rows_match_alone,
    batched_systems_match_alone => all_systems_batched,
    sampled_batch_matches_alone => sampled_batch_matches_alone,
}
