//! Criterion benches on the CPU backend: one decode step and a 512-token prefill of a small Qwen3.5,
//! one decode step per family, a whole demo RecursiveMAS run, questions/s of batched runs, the streaming weight products against
//! burn's generic matmul at Qwen3.5-2B decode shapes (GB/s of weights read), the CPU bodies of the
//! delta rule, activations and softmax against their reference paths, and attention's CPU body and
//! (with `wgpu` or `cuda`) cubecl kernel against the reference, and choosing a sampled token. Model and whole-run iterations run
//! on rayon's pool (`on_cpu_pool`), as `rmas` runs its CPU jobs.

use burn::backend::NdArray;
use burn::tensor::DType;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rmas_kernels::Rows;
use rmas_models::{Model, block_on, demo::random_weights, on_cpu_pool};
use rmas_suite::golden;

type B = NdArray;

/// A small Qwen3.5 (hidden 256, 8 layers) with the real layer pattern and head layout.
fn small_qwen35() -> Model<B> {
    let types: Vec<&str> =
        (0..8).map(|i| if (i + 1) % 4 == 0 { "full_attention" } else { "linear_attention" }).collect();
    let json = serde_json::json!({
        "model_type": "qwen3_5_text", "hidden_size": 256, "num_hidden_layers": 8, "intermediate_size": 768,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "layer_types": types,
        "linear_num_key_heads": 4, "linear_num_value_heads": 4, "linear_key_head_dim": 64, "linear_value_head_dim": 64,
        "linear_conv_kernel_dim": 4, "vocab_size": 4096, "tie_word_embeddings": true,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25}
    });
    let cfg = rmas_models::config::parse(&json.to_string(), std::path::Path::new("bench")).unwrap();
    let w = random_weights(&cfg, 1);
    Model::from_weights(cfg, &w, &Default::default(), DType::F32).unwrap()
}

fn qwen35(c: &mut Criterion) {
    let model = small_qwen35();
    let ids: Vec<u32> = (0..512).map(|i| (i * 37) % 4096).collect();
    let mut g = c.benchmark_group("qwen35_small_cpu");
    g.sample_size(10);
    g.throughput(Throughput::Elements(512));
    g.bench_function("prefill_512", |b| {
        b.iter(|| {
            on_cpu_pool(|| {
                let mut cache = model.new_cache(512, 0).unwrap();
                model.forward(model.embed(&ids).unwrap(), &mut cache).unwrap().into_data()
            })
        })
    });
    g.throughput(Throughput::Elements(1));
    let mut cache = model.new_cache(4096, 0).unwrap();
    model.forward(model.embed(&ids).unwrap(), &mut cache).unwrap();
    g.bench_function("decode_step", |b| {
        b.iter(|| {
            on_cpu_pool(|| {
                let mut step = cache.clone();
                let h = model.forward(model.embed(&[7]).unwrap(), &mut step).unwrap();
                model.logits(h).argmax(1).into_data()
            })
        })
    });
    g.finish();
}

fn families(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_step_tiny");
    for arch in ["qwen3_5", "qwen2", "qwen3", "llama", "mistral", "gemma3"] {
        let model =
            Model::<B>::load(&golden(&format!("models/{arch}/model")), &Default::default(), DType::F32).unwrap();
        let mut cache = model.new_cache(256, 0).unwrap();
        model.forward(model.embed(&[1; 64]).unwrap(), &mut cache).unwrap();
        g.bench_function(arch, |b| {
            b.iter(|| {
                on_cpu_pool(|| {
                    let mut step = cache.clone();
                    let h = model.forward(model.embed(&[3]).unwrap(), &mut step).unwrap();
                    model.logits(h).argmax(1).into_data()
                })
            })
        });
    }
    g.finish();
}

fn demo_run(c: &mut Criterion) {
    use rmas::engine::Run;
    use rmas::options::RunOptions;
    use rmas_models::generate::Sampling;
    let system = rmas::demo::mixture::<B>(&Default::default(), 42, DType::F32).unwrap();
    let opts = RunOptions {
        dataset: "math500".parse().unwrap(),
        fn_name: None,
        latent_steps: 4,
        rounds: 2,
        max_new_tokens: 24,
        sampling: Sampling::Greedy,
        seed: 42,
        chat: rmas_text::ChatOptions::recursivemas(chrono::NaiveDate::from_ymd_opt(2024, 7, 26).unwrap()),
        answer_retry: false,
        summarize_every_round: true,
    };
    let mut g = c.benchmark_group("recursivemas");
    g.sample_size(10);
    g.bench_function("demo_mixture_r2_t4", |b| {
        b.iter(|| {
            on_cpu_pool(|| block_on(Run::new(&system, &opts, rmas::demo::QUESTION, None, &mut |_| {}).execute()))
                .unwrap()
        })
    });
    g.finish();
}

/// Questions per second of whole RecursiveMAS runs at batch sizes 1, 4, 8 and 16 (continuous
/// batching, `rmas::engine::run_questions`): the demo mixture, and the demo's agents resized to
/// hidden 512 × 8 layers (~25 M parameters each), 16 distinct questions per iteration.
fn batched_questions(c: &mut Criterion) {
    use rmas::demo::Scale;
    let opts = rmas::demo::run_options(chrono::NaiveDate::from_ymd_opt(2024, 7, 26).unwrap());
    let questions: Vec<String> = (1..=16)
        .map(|i| format!("A baker makes {i} dozen muffins and sells {} of them. How many are left?", 3 * i))
        .collect();
    let device = Default::default();
    let systems = [
        ("demo", rmas::demo::mixture::<B>(&device, 42, DType::F32).unwrap()),
        (
            "mixture_h512x8",
            rmas::demo::mixture_scaled::<B>(&device, 42, DType::F32, Scale { hidden: 512, layers: 8 }).unwrap(),
        ),
    ];
    let mut g = c.benchmark_group("batched_questions");
    g.sample_size(10);
    g.throughput(Throughput::Elements(questions.len() as u64));
    for (name, system) in &systems {
        for batch in [1, 4, 8, 16] {
            g.bench_function(format!("{name}_b{batch}"), |b| {
                b.iter(|| {
                    let runs = questions.iter().map(|q| (q.clone(), opts.clone()));
                    let flow = on_cpu_pool(|| {
                        rmas::engine::run_questions(system, None, batch, runs, |_, (result, _)| {
                            result.map_or_else(std::ops::ControlFlow::Break, |_| std::ops::ControlFlow::Continue(()))
                        })
                    });
                    assert!(flow.is_continue(), "a question failed");
                })
            });
        }
    }
    g.finish();
}

/// One row, two to eight rows and a 128-row prompt times a 2B-sized MLP weight `[2048, 6144]`, and one row
/// times a 32k-row vocabulary block `[32768, 2048]`.
fn weight_products(c: &mut Criterion) {
    use burn::tensor::{Distribution, Tensor};
    use rmas_models::RmasBackend;
    let device = Default::default();
    let x = Tensor::<B, 2>::random([1, 2048], Distribution::Normal(0.0, 1.0), &device);
    let w = Tensor::<B, 2>::random([2048, 6144], Distribution::Normal(0.0, 1.0), &device);
    let m = Tensor::<B, 2>::random([32768, 2048], Distribution::Normal(0.0, 1.0), &device);
    let mut g = c.benchmark_group("weight_product_cpu");
    g.throughput(Throughput::Bytes(2048 * 6144 * 4));
    g.bench_function("linear_1x2048x6144_streaming", |b| {
        b.iter(|| B::linear_matmul(x.clone(), w.clone(), Rows::Sequence).into_data())
    });
    g.bench_function("linear_1x2048x6144_burn_matmul", |b| b.iter(|| x.clone().matmul(w.clone()).into_data()));
    // Two, four and eight decode rows (packed steps of a batch): one pass over the weight for all
    // of them, which should cost about what one row's does.
    for rows in [2, 4, 8] {
        let xr = Tensor::<B, 2>::random([rows, 2048], Distribution::Normal(0.0, 1.0), &device);
        g.bench_function(format!("linear_{rows}x2048x6144_tiles"), |b| {
            b.iter(|| B::linear_matmul(xr.clone(), w.clone(), Rows::PerRow).into_data())
        });
    }
    // A 128-row prompt: register tiles (any row count, batch-invariant) against burn's GEMM.
    let x128 = Tensor::<B, 2>::random([128, 2048], Distribution::Normal(0.0, 1.0), &device);
    g.throughput(Throughput::Elements(2 * 128 * 2048 * 6144)); // flops
    g.bench_function("linear_128x2048x6144_tiles", |b| {
        b.iter(|| B::linear_matmul(x128.clone(), w.clone(), Rows::Sequence).into_data())
    });
    g.bench_function("linear_128x2048x6144_burn_matmul", |b| b.iter(|| x128.clone().matmul(w.clone()).into_data()));
    g.throughput(Throughput::Bytes(32768 * 2048 * 4));
    g.bench_function("logits_32768x2048_streaming", |b| {
        b.iter(|| B::vocab_logits(x.clone(), m.clone(), Rows::Sequence).into_data())
    });
    g.bench_function("logits_32768x2048_burn_matmul", |b| {
        b.iter(|| m.clone().matmul(x.clone().transpose()).transpose().into_data())
    });
    g.finish();
}

/// Products over quantized blocks (docs/quantization.md) at Qwen3.5-2B decode shapes, one row of
/// activations, in every block format (K-quants included): GB/s of blocks read, beside the f32
/// streaming product of the same shape above.
fn quant_products(c: &mut Criterion) {
    use burn::tensor::{Distribution, Tensor};
    use rmas_kernels::quant::BlockFormat;
    use rmas_models::RmasBackend;
    let device = Default::default();
    let x = Tensor::<B, 2>::random([1, 2048], Distribution::Normal(0.0, 1.0), &device);
    let mut g = c.benchmark_group("quant_product_cpu");
    for (rows, name) in [(6144, "linear"), (32768, "logits")] {
        for format in BlockFormat::ALL {
            let w = rmas_suite::random_blocks(1, format, rows, 2048);
            g.throughput(Throughput::Bytes(w.bytes() as u64));
            g.bench_function(format!("{name}_1x2048x{rows}_{format}"), |b| {
                b.iter(|| B::quant_matmul(x.clone(), &w, Rows::Sequence).into_data())
            });
        }
    }
    g.finish();
}

/// The CPU bodies of the custom operations against their tensor-op reference paths, at Qwen3.5-2B
/// prefill shapes (512 tokens).
fn cpu_ops(c: &mut Criterion) {
    use burn::tensor::{Distribution, Tensor};
    use rmas_kernels::{Act, DeltaRule, GatedNorm, RmasBackend, act, conv, gdn, norm};
    let device = Default::default();
    let (nv, t, d) = (16, 512, 128);
    let qkv = Tensor::<B, 2>::random([t, 3 * nv * d], Distribution::Normal(0.0, 1.0), &device); // q ‖ k ‖ v, 16 heads each
    let ab = Tensor::<B, 2>::random([t, 2 * nv], Distribution::Normal(0.0, 1.0), &device); // a ‖ b per token
    let decay = Tensor::<B, 2>::random([2, nv], Distribution::Uniform(-0.5, 0.0), &device);
    let state = Tensor::<B, 3>::zeros([nv, d, d], &device);
    let rule = DeltaRule { qkv, ab, decay, state };
    let norm = GatedNorm {
        z: Tensor::<B, 2>::random([t, nv * d], Distribution::Normal(0.0, 1.0), &device),
        weight: Tensor::ones([d], &device),
        eps: 1e-6,
    };
    let mut group = c.benchmark_group("cpu_ops");
    group.throughput(Throughput::Elements(t as u64));
    group.bench_function("delta_rule_16x512x128_normed_recurrent_cpu", |b| {
        b.iter(|| B::gated_delta_rule(rule.clone(), Some(norm.clone())).0.into_data())
    });
    group.bench_function("delta_rule_16x512x128_normed_chunked_reference", |b| {
        b.iter(|| gdn::reference(rule.clone(), Some(norm.clone())).0.into_data())
    });
    let x = Tensor::<B, 2>::random([t, 6144], Distribution::Normal(0.0, 1.0), &device);
    let conv_state = Tensor::<B, 2>::random([3, 6144], Distribution::Normal(0.0, 1.0), &device);
    let taps = Tensor::<B, 2>::random([4, 6144], Distribution::Normal(0.0, 0.5), &device);
    group.throughput(Throughput::Elements((t * 6144) as u64));
    group.bench_function("causal_conv_silu_512x6144_cpu", |b| {
        b.iter(|| B::causal_conv_silu(x.clone(), conv_state.clone(), taps.clone()).0.into_data())
    });
    group.bench_function("causal_conv_silu_512x6144_reference", |b| {
        b.iter(|| conv::causal_conv_silu(x.clone(), conv_state.clone(), taps.clone()).0.into_data())
    });
    let up = Tensor::<B, 2>::random([t, 6144], Distribution::Normal(0.0, 1.0), &device);
    group.bench_function("silu_mul_512x6144_cpu", |b| {
        b.iter(|| B::activate(x.clone(), Act::Silu, Some(up.clone())).into_data())
    });
    group.bench_function("silu_mul_512x6144_reference", |b| {
        b.iter(|| act::reference(x.clone(), Act::Silu, Some(up.clone())).into_data())
    });
    let (hidden, scale) = (
        Tensor::<B, 2>::random([t, 2048], Distribution::Normal(0.0, 1.0), &device),
        Tensor::<B, 1>::ones([2048], &device),
    );
    group.throughput(Throughput::Elements((t * 2048) as u64));
    group.bench_function("rms_norm_512x2048_cpu", |b| {
        b.iter(|| B::rms_norm(hidden.clone(), scale.clone(), 1e-6).into_data())
    });
    group.bench_function("rms_norm_512x2048_reference", |b| {
        b.iter(|| norm::rms_norm(hidden.clone(), scale.clone(), 1e-6).into_data())
    });
    let scores = Tensor::<B, 3>::random([8, t, t], Distribution::Normal(0.0, 3.0), &device);
    group.throughput(Throughput::Elements((8 * t * t) as u64));
    group.bench_function("softmax_8x512x512_cpu", |b| b.iter(|| B::softmax_last(scores.clone()).into_data()));
    group.bench_function("softmax_8x512x512_reference", |b| {
        b.iter(|| burn::tensor::activation::softmax(scores.clone(), 2).into_data())
    });
    group.finish();
}

/// Causal attention at Qwen3.5-2B's head layout (8 query heads over 2 KV heads of 256), the
/// backend's body against the reference (full scores, mask, softmax): on the CPU 512- and 2048-token
/// prefills and one decode step over 4096 cached keys; with `wgpu` or `cuda` the shapes the cubecl
/// kernel serves (a decode step and a 16-query chunk over 4096 keys; shorter prefills run the
/// reference); and one sequence's raw queries attended in one call against the three it replaces.
fn attention(c: &mut Criterion) {
    attention_on::<B>(c, "attention_cpu", &Default::default(), &[(512, 512), (2048, 2048), (1, 4096)]);
    #[cfg(feature = "wgpu")]
    attention_on::<burn::backend::Wgpu>(c, "attention_wgpu", &Default::default(), &[(1, 4096), (16, 4096)]);
    #[cfg(feature = "cuda")]
    attention_on::<burn::backend::Cuda>(c, "attention_cuda", &Default::default(), &[(1, 4096), (16, 4096)]);
}

/// The attention group `name` over (query positions, keys) `shapes`.
fn attention_on<A: rmas_kernels::RmasBackend>(
    c: &mut Criterion,
    name: &str,
    device: &A::Device,
    shapes: &[(usize, usize)],
) {
    use burn::tensor::{Distribution, Tensor};
    use rmas_kernels::attn;
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    for &(t, l) in shapes {
        let q = Tensor::<A, 3>::random([8, t, 256], Distribution::Normal(0.0, 1.0), device);
        let [k, v] = [0; 2].map(|_| Tensor::<A, 3>::random([2, l, 256], Distribution::Normal(0.0, 1.0), device));
        group.throughput(Throughput::Elements(t as u64));
        group.bench_function(format!("causal_{t}q_{l}k_backend"), |b| {
            b.iter(|| A::causal_attention(q.clone(), k.clone(), v.clone(), l, 0.0625, None).into_data())
        });
        group.bench_function(format!("causal_{t}q_{l}k_reference"), |b| {
            b.iter(|| attn::reference(q.clone(), k.clone(), v.clone(), 0.0625, None).into_data())
        });
        if t > 16 {
            continue; // prefills take the three calls
        }
        // Raw gated queries as Qwen3.5's projection gives them (normed, rotated over 64 of 256
        // features): `attend` (one launch on cubecl backends) against the three calls it replaces.
        let projection = Tensor::<A, 3>::random([t, 16, 256], Distribution::Normal(0.0, 1.0), device); // q ‖ gate
        let table = || Tensor::<A, 2>::random([t, 64], Distribution::Uniform(-1.0, 1.0), device);
        let (cos, sin, norm) = (table(), table(), Tensor::<A, 1>::ones([256], device));
        let queries = || attn::Queries {
            q: projection.clone().narrow(1, 0, 8),
            norm: Some((norm.clone(), 1e-6)),
            cos: cos.clone(),
            sin: sin.clone(),
            gate: Some(projection.clone().narrow(1, 8, 8)),
        };
        group.bench_function(format!("attend_{t}q_{l}k_backend"), |b| {
            b.iter(|| A::attend(queries(), k.clone(), v.clone(), l, 0.0625, None, None).into_data())
        });
        group.bench_function(format!("attend_{t}q_{l}k_three_calls"), |b| {
            b.iter(|| attn::attend(queries(), k.clone(), v.clone(), l, 0.0625, None).into_data())
        });
    }
    group.finish();
}

/// A Gated DeltaNet mixer at Qwen3.5-2B's layout (16 key and 16 value heads of 128, a 4-tap conv
/// over 6144 channels), normed, from its raw projection: the conv run inside the delta-rule kernel
/// (`conv_delta_rule`, one launch) against the conv kernel, then the rule's (two launches), for a
/// decode step and a 64-token chunk, on each GPU backend compiled in.
fn gdn_mixer(c: &mut Criterion) {
    #[cfg(feature = "wgpu")]
    gdn_mixer_on::<burn::backend::Wgpu>(c, "gdn_mixer_wgpu", &Default::default());
    #[cfg(feature = "cuda")]
    gdn_mixer_on::<burn::backend::Cuda>(c, "gdn_mixer_cuda", &Default::default());
}

/// The mixer group `name` on one backend.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn gdn_mixer_on<A: rmas_kernels::RmasBackend>(c: &mut Criterion, name: &str, device: &A::Device) {
    use burn::tensor::{Distribution, Tensor};
    use rmas_kernels::{DeltaRule, GatedNorm};
    let (heads, d, taps) = (16, 128, 4);
    let channels = 3 * heads * d; // q ‖ k ‖ v
    let random = |shape: [usize; 2]| Tensor::<A, 2>::random(shape, Distribution::Normal(0.0, 0.5), device);
    let (conv_state, weight) = (random([taps - 1, channels]), random([taps, channels]));
    let mut g = c.benchmark_group(name);
    g.sample_size(10);
    for t in [1, 64] {
        let rule = DeltaRule {
            qkv: random([t, channels]),
            ab: random([t, 2 * heads]),
            decay: random([2, heads]),
            state: Tensor::<A, 3>::zeros([heads, d, d], device),
        };
        let norm = GatedNorm { z: random([t, heads * d]), weight: random([1, d]).reshape([d]), eps: 1e-6 };
        let conv = || (conv_state.clone(), weight.clone());
        g.throughput(Throughput::Elements(t as u64));
        g.bench_function(format!("conv_in_rule_{t}t"), |b| {
            b.iter(|| A::conv_delta_rule(rule.clone(), conv(), Some(norm.clone()), None).0.into_data())
        });
        g.bench_function(format!("conv_then_rule_{t}t"), |b| {
            b.iter(|| {
                let (qkv, _) = A::causal_conv_silu(rule.qkv.clone(), conv_state.clone(), weight.clone());
                A::gated_delta_rule(DeltaRule { qkv, ..rule.clone() }, Some(norm.clone())).0.into_data()
            })
        });
    }
    g.finish();
}

/// Choosing a sampled token (temperature 0.6, top-k 50, top-p 0.95: the reference's evaluation
/// settings) from one row of logits at Qwen2/3's and Qwen3.5's vocabulary sizes: the host's warper
/// chain over a whole row (what the CPU backend runs), and on wgpu the whole step from logits on
/// the device (top-k candidates there, then the host) beside a read-back of the whole row.
fn sampling(c: &mut Criterion) {
    use rmas_models::generate::sample_scores;
    let mut g = c.benchmark_group("sampling");
    for vocab in [151_936, 248_320] {
        let logits: Vec<f32> = rmas_suite::uniform(vocab as u64, vocab).into_iter().map(|x| x * 12.0).collect();
        g.throughput(Throughput::Elements(vocab as u64));
        g.bench_function(format!("host_row_{vocab}"), |b| b.iter(|| sample_scores(&logits, 0.6, 50, 0.95, 0.5)));
        #[cfg(feature = "wgpu")]
        {
            use burn::tensor::{Tensor, TensorData};
            use rmas_models::generate::{Sampler, Sampling};
            type W = burn::backend::Wgpu;
            let row = Tensor::<W, 2>::from_data(TensorData::new(logits.clone(), [1, vocab]), &Default::default());
            let mut sampler = Sampler::new(Sampling::Sample { temperature: 0.6, top_k: 50, top_p: 0.95 }, 0);
            g.bench_function(format!("wgpu_step_{vocab}"), |b| b.iter(|| block_on(sampler.sample(row.clone()))));
            g.bench_function(format!("wgpu_read_row_{vocab}"), |b| b.iter(|| row.clone().into_data()));
        }
    }
    g.finish();
}

/// The M = 1 weight product on the GPU backends in both layouts (docs/performance.md, "Weight
/// layout"): `x·w` with the weight stored `[in, out]` (a row-major right operand) against `x·wᵀ`
/// with HF's `[out, in]` (column-major, what rmas keeps on cubecl backends), at a 2B MLP's size.
fn gpu_weight_layouts(c: &mut Criterion) {
    #[cfg(feature = "wgpu")]
    layouts_on::<burn::backend::Wgpu>(c, "weight_layout_wgpu", &Default::default());
    #[cfg(feature = "cuda")]
    layouts_on::<burn::backend::Cuda>(c, "weight_layout_cuda", &Default::default());
}

/// The layout group `name` on one backend.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn layouts_on<A: rmas_kernels::RmasBackend>(c: &mut Criterion, name: &str, device: &A::Device) {
    use burn::tensor::{Distribution, Tensor};
    let (k, n) = (2048, 6144);
    let x = Tensor::<A, 2>::random([1, k], Distribution::Normal(0.0, 1.0), device);
    let w_in_out = Tensor::<A, 2>::random([k, n], Distribution::Normal(0.0, 1.0), device);
    let w_out_in = Tensor::<A, 2>::random([n, k], Distribution::Normal(0.0, 1.0), device);
    let mut g = c.benchmark_group(name);
    g.sample_size(10);
    g.throughput(Throughput::Bytes((k * n * 4) as u64));
    g.bench_function("x_times_w_in_out_row_major", |b| b.iter(|| x.clone().matmul(w_in_out.clone()).into_data()));
    g.bench_function("x_times_w_out_in_transposed", |b| {
        b.iter(|| x.clone().matmul(w_out_in.clone().transpose()).into_data())
    });
    g.finish();
}

criterion_group!(
    benches,
    sampling,
    qwen35,
    families,
    demo_run,
    batched_questions,
    weight_products,
    quant_products,
    cpu_ops,
    attention,
    gdn_mixer,
    gpu_weight_layouts
);
criterion_main!(benches);
