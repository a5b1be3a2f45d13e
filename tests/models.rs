//! Every agent family against the reference logits and hidden states of HF transformers (tiny random models).
//!
//! Tolerances: the goldens are HF float32 runs; `golden.json` records each model's float32-vs-float64 logit
//! noise (≈1e-5, Qwen3.5 up to 7e-4 because its gated norm amplifies rounding). We allow a few times that.
//! Hidden states are checked against a float64 run of the same model (`ref64.safetensors`, written by
//! `tests/hf_ref64.py`) where the case has one, within twice HF float32's own error there (at least
//! 1e-4) + 1e-3·|x|; else against HF float32 at 1e-4 + 1e-3·|x|.

use burn::tensor::{DType, ElementConversion, Tensor, TensorData};
use rmas_kernels::Rows;
use rmas_models::generate::{GenerateOptions, Generation, Sampler, Sampling, generate};
use rmas_models::nn::VocabMatrix;
use rmas_models::{Model, RmasBackend, block_on};
use rmas_suite::{Golden, assert_close, golden};

/// Every model case under `tests/fixtures/golden/models`.
fn archs() -> Vec<String> {
    rmas_suite::cases("models", "golden.safetensors")
}

/// The model of case `models/<arch>` or `variants/<name>`, in f32.
fn load<B: RmasBackend>(case: &str, device: &B::Device) -> Model<B> {
    Model::load(&golden(&format!("{case}/model")), device, DType::F32).unwrap_or_else(|e| panic!("{case}: {e}"))
}

/// Logit tolerance (absolute): a few times the reference's own float32-vs-float64 noise recorded in
/// the case's `golden.json` (Qwen3.5's gated norm amplifies rounding to ~7e-4), at least 2e-4.
fn logit_tol(case: &str) -> f32 {
    let path = golden(&format!("{case}/golden.json"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
            .unwrap();
    let noise = json["max_abs_logits_float32_vs_float64"]
        .as_f64()
        .unwrap_or_else(|| panic!("{}: no float64 noise", path.display()));
    (3.0 * noise as f32).max(2e-4)
}

/// Golden case `case`: its reference tensors and its model in f32.
fn open<B: RmasBackend>(case: &str, device: &B::Device) -> (Golden, Model<B>) {
    (Golden::open(&format!("{case}/golden.safetensors")), load(case, device))
}

/// Full forward: every layer's output and the logits.
fn full_forward<B: RmasBackend>(device: &B::Device) {
    for arch in archs() {
        let case = format!("models/{arch}");
        let ((g, model), tol) = (open::<B>(&case, device), logit_tol(&case));
        let ids = g.ids("input_ids");
        let mut cache = model.new_cache(ids.len(), 0).unwrap();
        let states = model.forward_traced(model.embed(&ids).unwrap(), &mut cache).unwrap();
        // Against the float64 run of the same weights where `tests/hf_ref64.py` wrote one, allowing twice
        // float32's own error at each hidden state (HF's float32 run against it, at least 1e-4): on the
        // upstream Qwen3.5 layout float32 rounding alone reaches 4.4e-4 (docs/numerics.md, "Strict f32").
        let float32: Tensor<B, 3> = g.tensor("hidden_states", device); // [layers + 1, T, hidden]
        let ref64 = format!("{case}/ref64.safetensors");
        let float64 =
            rmas_suite::golden(&ref64).is_file().then(|| Golden::open(&ref64).tensor::<B, 3>("hidden_states", device));
        assert_eq!(states.len(), float32.dims()[0], "{arch}: number of hidden states");
        for (i, h) in states.iter().enumerate() {
            let hf32 = float32.clone().narrow(0, i, 1).squeeze_dim::<2>(0); // [T, hidden]
            let (reference, expected, atol) = match &float64 {
                Some(f64s) => {
                    let truth = f64s.clone().narrow(0, i, 1).squeeze_dim::<2>(0);
                    let noise = (hf32 - truth.clone()).abs().max().into_scalar().elem::<f32>();
                    ("float64", truth, (2.0 * noise).max(1e-4))
                }
                None => ("HF float32", hf32, 1e-4),
            };
            assert_close(&format!("{arch} hidden_states[{i}] vs {reference}"), h.clone(), expected, atol, 1e-3);
        }
        let logits = model.logits(states.last().unwrap().clone());
        assert_close(&format!("{arch} logits"), logits, g.tensor("logits", device), tol, 0.0);
    }
}

/// Prefill 70 tokens, then one token per call: equal to the full forward (and to HF's cached path).
fn prefill_then_decode<B: RmasBackend>(device: &B::Device) {
    for arch in archs() {
        let case = format!("models/{arch}");
        let ((g, model), tol) = (open::<B>(&case, device), logit_tol(&case));
        let ids = g.ids("input_ids");
        let n = 70;
        let mut cache = model.new_cache(ids.len(), 0).unwrap();
        let mut rows = vec![model.forward(model.embed(&ids[..n]).unwrap(), &mut cache).unwrap()];
        for &id in &ids[n..] {
            rows.push(model.forward(model.embed(&[id]).unwrap(), &mut cache).unwrap());
        }
        let logits = model.logits(Tensor::cat(rows, 0));
        let full: Tensor<B, 2> = g.tensor("logits", device);
        assert_close(&format!("{arch} prefill+decode vs full"), logits.clone(), full, tol, 0.0);
        if g.has("qwen35_prefill_decode_logits") {
            let hf: Tensor<B, 2> = g.tensor("qwen35_prefill_decode_logits", device);
            let ours = logits.clone().narrow(0, n - 1, ids.len() - n); // row j predicts position n+j
            assert_close(&format!("{arch} vs HF cached path"), ours, hf, tol, 0.0);
            let ref64: Tensor<B, 2> = g.tensor("qwen35_ref64_logits", device);
            assert_close(&format!("{arch} vs float64 recurrence"), logits, ref64, tol, 0.0);
        }
    }
}

/// `n` greedy tokens after `prompt`, with their log-probabilities (no stop ids).
fn greedy<B: RmasBackend>(model: &Model<B>, prompt: &[u32], n: usize) -> Generation {
    let mut cache = model.new_cache(prompt.len(), n).unwrap();
    let opts = GenerateOptions { max_new_tokens: n, stop_ids: vec![], logprobs: true };
    let mut sampler = Sampler::new(Sampling::Greedy, 0);
    block_on(generate(model, model.embed(prompt).unwrap(), &mut cache, &opts, &mut sampler, |_| false)).unwrap()
}

/// Greedy generation: identical ids and per-step logits.
fn greedy_generation<B: RmasBackend>(device: &B::Device) {
    for arch in archs() {
        let (g, model) = open::<B>(&format!("models/{arch}"), device);
        let prompt = g.ids("gen_prompt_ids");
        let expected = g.ids("gen_new_ids");
        let out = greedy(&model, &prompt, expected.len());
        assert_eq!(out.ids, expected, "{arch}: greedy ids");
        assert_eq!(out.logprobs.len(), expected.len());
        assert!(out.logprobs.iter().all(|lp| lp.is_finite() && *lp <= 0.0), "{arch}: logprobs {:?}", out.logprobs);
    }
}

/// Config variants of the tiny models (biases, sliding windows, head shapes, RoPE layouts, configs
/// without `layer_types`, Gated-DeltaNet shapes) against transformers: the last prompt position's
/// logits, then greedy ids and their log-probabilities.
fn config_variants<B: RmasBackend>(device: &B::Device) {
    for name in rmas_suite::cases("variants", "golden.safetensors") {
        let case = format!("variants/{name}");
        let ((g, model), tol) = (open::<B>(&case, device), logit_tol(&case));
        let prompt = g.ids("prompt_ids");
        let mut cache = model.new_cache(prompt.len(), 0).unwrap();
        let states = model.forward(model.embed(&prompt).unwrap(), &mut cache).unwrap(); // [T, hidden]
        let last = model.logits(rmas_models::generate::last_row(states)); // [1, vocab]
        assert_close(
            &format!("{name} last logits"),
            last,
            g.tensor::<B, 1>("last_logits", device).unsqueeze(),
            tol,
            0.0,
        );

        let expected = g.ids("new_ids");
        let out = greedy(&model, &prompt, expected.len());
        assert_eq!(out.ids, expected, "{name}: greedy ids");
        let n = out.logprobs.len();
        let logprobs = Tensor::<B, 1>::from_data(TensorData::new(out.logprobs, [n]), device);
        assert_close(&format!("{name} logprobs"), logprobs, g.tensor("logprobs", device), 2.0 * tol, 0.0);
    }
}

/// A latent rollout with the cache (one row per step) equals recomputing the whole sequence each step,
/// as the reference does; the fed row is the hidden state itself (an identity link).
fn cached_rollout_equals_recompute<B: RmasBackend>(device: &B::Device) {
    for arch in ["qwen3_5", "gemma3", "llama"] {
        let (g, model) = open::<B>(&format!("models/{arch}"), device);
        let prompt = model.embed(&g.ids("gen_prompt_ids")).unwrap();
        let steps = 5;
        let mut cache = model.new_cache(prompt.dims()[0], steps).unwrap();
        let mut h = rmas_models::generate::last_row(model.forward(prompt.clone(), &mut cache).unwrap());
        let mut seq = prompt;
        for step in 0..steps {
            seq = Tensor::cat(vec![seq, h.clone()], 0);
            let mut fresh = model.new_cache(seq.dims()[0], 0).unwrap();
            let recomputed = rmas_models::generate::last_row(model.forward(seq.clone(), &mut fresh).unwrap());
            h = rmas_models::generate::last_row(model.forward(h, &mut cache).unwrap());
            assert_close(&format!("{arch} latent step {step}"), h.clone(), recomputed, 1e-4, 1e-3);
        }
    }
}

/// A vocabulary matrix split into row blocks (as for a device's buffer limit) gathers the same rows
/// and gives the same logits as the whole matrix, for blocks of 1 row, an odd size and a short last block.
fn split_vocab_matrix<B: RmasBackend>(device: &B::Device) {
    let (v, h) = (37, 5);
    let m = Tensor::<B, 2>::from_data(TensorData::new(rmas_suite::uniform(3, v * h), [v, h]), device);
    let x = Tensor::<B, 2>::from_data(TensorData::new(rmas_suite::uniform(4, 3 * h), [3, h]), device);
    let ids = [36, 0, 5, 5, 12, 35, 3, 36];
    let whole = VocabMatrix::from_tensor(m.clone(), v);
    assert_eq!(whole.num_blocks(), 1);
    for block_rows in [1, 4, 7, 36] {
        let split = VocabMatrix::from_tensor(m.clone(), block_rows);
        assert_eq!(split.num_blocks(), v.div_ceil(block_rows));
        split.rows(&ids).into_data().assert_eq(&whole.rows(&ids).into_data(), true);
        assert_close(
            &format!("logits in blocks of {block_rows}"),
            split.logits(x.clone(), &[3]),
            whole.logits(x.clone(), &[3]),
            1e-6,
            1e-6,
        );
    }
}

/// The backend's weight products (on the CPU: register tiles for a layer, copying weight blocks past
/// 16 rows; a vocabulary matrix streamed for ≤ 4 rows, GEMM on views above; on cubecl backends `x·wᵀ`
/// of HF's `[out, in]` layout) equal burn's matmul, for 1…40 rows, depths that end mid-block and
/// widths that end mid-tile and do not divide evenly among threads.
fn weight_products<B: RmasBackend>(device: &B::Device) {
    let shapes = [(1, 7, 300), (3, 64, 1000), (4, 33, 257), (5, 16, 513), (9, 129, 70), (17, 40, 600), (40, 70, 1100)];
    for (m, k, n) in shapes {
        let x = Tensor::<B, 2>::from_data(TensorData::new(rmas_suite::uniform(m as u64, m * k), [m, k]), device);
        let w = Tensor::<B, 2>::from_data(TensorData::new(rmas_suite::uniform(7, k * n), [k, n]), device);
        // The layer's weight in the backend's layout: HF's [n, k] (contiguous) or [k, n].
        let layer =
            if B::WEIGHTS_OUT_IN { Tensor::from_data(w.clone().transpose().into_data(), device) } else { w.clone() };
        let vocab = Tensor::<B, 2>::from_data(w.clone().transpose().into_data(), device); // [n, k], contiguous
        let want = x.clone().matmul(w.clone());
        for rows in [Rows::Sequence, Rows::PerRow] {
            let what = format!("{m}x{k} by {k}x{n}, {rows:?}");
            let linear = B::linear_matmul(x.clone(), layer.clone(), rows);
            assert_close(&format!("linear {what}"), linear, want.clone(), 1e-5, 1e-5);
            let logits = B::vocab_logits(x.clone(), vocab.clone(), rows);
            assert_close(&format!("logits {what}"), logits, want.clone(), 1e-5, 1e-5);
        }
    }
}

/// On the CPU a layer's product gives each row the same bits at any row count (docs/batching.md,
/// "Batch invariance"): every row of a 37-row product equals that row multiplied alone.
#[test]
fn cpu_layer_product_rows_do_not_depend_on_the_row_count() {
    type B = burn::backend::NdArray;
    let device = Default::default();
    let (m, k, n) = (37, 300, 1030);
    let x = Tensor::<B, 2>::from_data(TensorData::new(rmas_suite::uniform(3, m * k), [m, k]), &device);
    let w = Tensor::<B, 2>::from_data(TensorData::new(rmas_suite::uniform(5, k * n), [k, n]), &device);
    let all = B::linear_matmul(x.clone(), w.clone(), Rows::Sequence);
    for (i, lens) in [(0, 1), (5, 4), (20, 17)] {
        let part = B::linear_matmul(x.clone().narrow(0, i, lens), w.clone(), Rows::Sequence);
        assert_close(&format!("rows {i}..{}", i + lens), part, all.clone().narrow(0, i, lens), 0.0, 0.0);
    }
}

rmas_suite::backend_tests! {
    quantized_weights_compute_their_decoded_values => quantized_weights_compute_their_decoded_values,
    weight_products_match_matmul => weight_products,
    split_vocab_matrix_matches_whole => split_vocab_matrix,
    full_forward_matches_hf => full_forward,
    prefill_then_decode_matches_full => prefill_then_decode,
    greedy_generation_matches_hf => greedy_generation,
    config_variants_match_hf => config_variants,
    cached_rollout_equals_recompute => cached_rollout_equals_recompute,
}

/// int8 (Q8_0) and int4 (Q4_1) weights quantized at load, on every model golden and every backend
/// (the CPU's products over the blocks as stored, the cubecl kernels' over the device layout):
/// - exact: the quantized model's logits equal, within the case's f32 tolerance, those of a dense
///   model whose checkpoint holds the same weights quantized and decoded again, so every product over
///   blocks (fused projections, regrouped gates, tied vocabularies) computes what the weights say;
/// - accuracy against f32: the largest logit error relative to the largest logit and how often the
///   argmax agrees, printed as the table in docs/quantization.md (random tiny models have little margin
///   between logits, so int4's agreement is low; int8's is held to a bound).
fn quantized_weights_compute_their_decoded_values<B: RmasBackend>(device: &B::Device) {
    use rmas_models::{BlockFormat, Blocks, Precision};
    println!("| model | weights | max logit error / max logit | argmax agreement |");
    for arch in archs() {
        let case = format!("models/{arch}");
        let g = Golden::open(&format!("{case}/golden.safetensors"));
        let ids = g.ids("input_ids");
        let logits = |dir: &std::path::Path, blocks: Blocks| {
            let precision = Precision::new(DType::F32, blocks);
            let model = Model::<B>::load(dir, device, precision).unwrap();
            // On a GPU the blocks live on the device only (the embedding's rows are gathered there).
            assert!(model.block_matrices().all(|m| m.on_host() != B::BLOCKS_ON_DEVICE), "{arch}: blocks on the host");
            let mut cache = model.new_cache(ids.len(), 0).unwrap();
            let h = model.forward(model.embed(&ids).unwrap(), &mut cache).unwrap();
            model.logits(h).into_data().to_vec::<f32>().unwrap()
        };
        let dir = golden(&format!("{case}/model"));
        let reference = logits(&dir, Blocks::Dense);
        let vocab = reference.len() / ids.len();
        let argmax = |row: &[f32]| row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
        let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
        for format in [BlockFormat::Q8_0, BlockFormat::Q4_1] {
            let got = logits(&dir, Blocks::Quantize(format));
            let decoded = logits(&decoded_checkpoint(&dir, format, &arch), Blocks::Dense);
            let shape = [ids.len(), vocab];
            let tensor = |v: &[f32]| Tensor::<B, 2>::from_data(TensorData::new(v.to_vec(), shape), device);
            assert_close(
                &format!("{arch} {format} vs its decoded weights"),
                tensor(&got),
                tensor(&decoded),
                logit_tol(&case),
                0.0,
            );

            let error = got.iter().zip(&reference).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
            let agree = got.chunks(vocab).zip(reference.chunks(vocab)).filter(|(a, b)| argmax(a) == argmax(b)).count();
            println!("| {arch} | {format} | {error:.4} | {agree}/{} |", ids.len());
            assert!(error > 0.0, "{arch} {format}: no rounding at all — were the weights quantized?");
            if format == BlockFormat::Q8_0 {
                assert!(agree * 10 >= ids.len() * 7, "{arch} int8: argmax agrees at {agree}/{} positions", ids.len());
            }
        }
    }
}

/// `--quantize`'s cache (`rmas_models::quant_cache`): the first load writes one file, the next load
/// of the same checkpoint reads its blocks instead of quantizing (bit-identical logits), a checkpoint
/// changed on disk misses, and a damaged file is read as a miss and written again. The hit is shown
/// by a weight changed in place with its size and modification time kept: a load that quantized
/// would see it, one from the cache does not.
#[test]
fn quantize_cache_serves_the_next_load_and_misses_a_changed_checkpoint() {
    use rmas_models::{BlockFormat, Blocks, Precision};
    type B = burn::backend::NdArray;
    let device = Default::default();
    let case = "models/qwen3_5_text";
    let ids = Golden::open(&format!("{case}/golden.safetensors")).ids("input_ids");
    let tmp = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quantize-cache");
    let _ = std::fs::remove_dir_all(&tmp);
    let (dir, cache) = (tmp.join("checkpoint"), tmp.join("cache"));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(golden(&format!("{case}/model"))).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let logits = |cached: bool| {
        let mut precision = Precision::new(DType::F32, Blocks::Quantize(BlockFormat::Q4_1));
        precision.cache = cached.then(|| cache.as_path().into());
        let model = Model::<B>::load(&dir, &device, precision).unwrap();
        let mut kv = model.new_cache(ids.len(), 0).unwrap();
        model.logits(model.forward(model.embed(&ids).unwrap(), &mut kv).unwrap()).into_data().to_vec::<f32>().unwrap()
    };
    let files = || {
        let mut names: Vec<String> = std::fs::read_dir(&cache)
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    };

    let fresh = logits(false);
    assert!(files().is_empty(), "no cache without one asked for");
    assert_eq!(logits(true), fresh, "the load that writes the cache");
    let written = files();
    assert_eq!(written.len(), 1, "one file, no temporary left: {written:?}");
    assert!(written[0].starts_with("checkpoint-Q4_1-") && written[0].ends_with(".gguf"), "{written:?}");
    assert_eq!(logits(true), fresh, "a load from the cache");

    // Reverse the elements of one quantized weight in place, keeping size and modification time.
    let weights = dir.join("model.safetensors");
    let modified = std::fs::metadata(&weights).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&weights).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (name, view) = st.tensors().into_iter().find(|(n, _)| n.ends_with("layers.0.mlp.down_proj.weight")).unwrap();
    let start = view.data().as_ptr() as usize - bytes.as_ptr() as usize;
    let (len, width) = (view.data().len(), view.dtype().bitsize() / 8);
    assert!(start >= 8 + header, "{name}");
    let reversed: Vec<u8> = bytes[start..start + len].chunks(width).rev().flatten().copied().collect();
    bytes[start..start + len].copy_from_slice(&reversed);
    std::fs::write(&weights, &bytes).unwrap();
    std::fs::File::options().write(true).open(&weights).unwrap().set_modified(modified).unwrap();
    let changed = logits(false);
    assert_ne!(changed, fresh, "{name} reversed changes the logits");
    assert_eq!(logits(true), fresh, "same size and time: the cached blocks are read, not the changed weight");

    // A new modification time misses and writes a second file.
    std::fs::File::options().write(true).open(&weights).unwrap().set_modified(std::time::SystemTime::now()).unwrap();
    assert_eq!(logits(true), changed, "a changed checkpoint misses");
    let both = files();
    assert_eq!(both.len(), 2, "{both:?}");
    assert_eq!(logits(true), changed, "and is cached in turn");

    // A damaged file is a miss: the blocks are quantized again and the file rewritten.
    let newest = both.iter().find(|f| !written.contains(f)).unwrap();
    let path = cache.join(newest);
    let mut damaged = std::fs::read(&path).unwrap();
    let at = damaged.len() - 5;
    damaged[at] ^= 0x5a;
    std::fs::write(&path, &damaged).unwrap();
    assert_eq!(logits(true), changed, "a damaged cache file is not used");
    assert_ne!(std::fs::read(&path).unwrap(), damaged, "and is written again");
    assert_eq!(logits(true), changed);
}

/// A copy of checkpoint `dir` whose weights are those `Blocks::Quantize(format)` holds, decoded to
/// f32: layer projections in `format`, the embedding and LM head in Q8_0 (widths of whole blocks).
fn decoded_checkpoint(dir: &std::path::Path, format: rmas_models::BlockFormat, arch: &str) -> std::path::PathBuf {
    use rmas_kernels::quant::{BLOCK, QuantMatrix};
    // A directory per call: the backends' tests run at once, and rewriting a file another one has
    // mapped would take the pages from under it (SIGBUS).
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("decoded-{arch}-{format}-{call}"));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "model.safetensors" {
            std::fs::copy(&path, out.join(path.file_name().unwrap())).unwrap();
        }
    }
    let weights = rmas_models::Weights::from_dir(dir).unwrap();
    let mut tensors: Vec<(String, Vec<f32>, Vec<usize>)> = Vec::new();
    for name in weights.names() {
        let shape = weights.shape(name).unwrap().to_vec();
        let mut values = weights.data(name, &shape).unwrap().to_vec::<f32>().unwrap();
        let vocab = name.ends_with("embed_tokens.weight") || name.ends_with("lm_head.weight");
        let layer = name.ends_with("_proj.weight") || name.contains(".in_proj_");
        if let (&[rows, cols], true) = (shape.as_slice(), vocab || layer) {
            if cols % BLOCK == 0 {
                let f = if vocab { rmas_models::BlockFormat::Q8_0 } else { format };
                values = QuantMatrix::quantize(f, &values, rows, cols).unwrap().dequantize();
            }
        }
        tensors.push((name.to_owned(), values, shape));
    }
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> =
        tensors.into_iter().map(|(n, v, s)| (n, v.iter().flat_map(|x| x.to_le_bytes()).collect(), s)).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, b, s)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &out.join("model.safetensors")).unwrap();
    out
}
