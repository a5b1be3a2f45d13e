//! `rmas bench`'s counters and the device choice: a warm decode step of the tiny Qwen3.5 config on
//! wgpu stays within its per-token budgets (docs/performance.md, "Proxies"), and a backend that
//! cannot start is a clear error, not a panic inside cubecl.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use serde_json::Value;

fn rmas(args: &[&str], env: &[(&str, &str)]) -> Output {
    let runtime_dir = std::env::temp_dir().join("rmas-bench-test-xdg");
    std::fs::create_dir_all(&runtime_dir).unwrap();
    Command::new(env!("CARGO_BIN_EXE_rmas"))
        .args(args)
        .env("XDG_RUNTIME_DIR", runtime_dir)
        .envs(env.iter().copied())
        .output()
        .expect("the rmas binary runs")
}

fn bench_json(backend: &str) -> Value {
    batch_bench_json(backend, 1, &[])
}

fn batch_bench_json(backend: &str, batch: usize, extra: &[&str]) -> Value {
    let batch = batch.to_string();
    let args = ["bench", "--size", "tiny", "--backend", backend, "--prompt-len", "16", "--decode-steps", "8"];
    let out = rmas(&[&args[..], &["--batch", &batch, "--json"], extra].concat(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rmas bench --backend {backend} --batch {batch} failed: {stderr}");
    let json: Value = serde_json::from_slice(&out.stdout).expect("--json prints one JSON object");
    println!("{backend} × {batch}: {json}");
    json
}

#[test]
fn wgpu_decode_step_stays_within_its_budgets() {
    let m = bench_json("wgpu");
    let layers = m["layers"].as_f64().unwrap();
    let launches = m["launches_per_token"].as_f64().expect("cubecl counts launches on wgpu");
    assert!(launches > 0.0, "the launch counter saw nothing: {m}");
    assert!(launches <= 10.0 * layers + 8.0, "{launches} launches per token over 10 × {layers} layers + 8: {m}");
    // What the fusions reached (7.75 per layer and 4 per token; docs/performance.md, "Launches"):
    // a change that adds a launch per layer fails here.
    assert!(launches <= 8.0 * layers, "{launches} launches per token over 8 × {layers} layers: {m}");
    // The queries' norm and rotation and the output gate run inside the attention kernel: each
    // attention layer rotates its keys only; each MLP's gate ‖ up product writes its activation.
    let by_kind = kernels(&m, 1.0);
    let count = |kind: &str| by_kind.iter().filter(|(n, _)| n.starts_with(kind)).map(|(_, c)| c).sum::<f64>();
    assert!(count("AttentionKernel") > 0.0, "no attention kernel launched: {by_kind:?}");
    assert_eq!(count("RopeHeadsKernel"), count("AttentionKernel"), "rotations apart from attention: {by_kind:?}");
    assert_eq!(count("GatedRowsKernel"), layers, "an MLP's gate ‖ up product is not one launch: {by_kind:?}");
    assert_eq!(count("ActivateKernel"), 0.0, "an activation apart from its product: {by_kind:?}");
    assert!(m["host_reads_per_token"].as_f64().unwrap() <= 1.0, "more than one read-back per token: {m}");
    assert!(m["host_uploads_per_token"].as_f64().unwrap() <= 1.0, "more than one upload per token: {m}");
    assert_eq!(m["device_bytes_growth_per_token"].as_f64(), Some(0.0), "device memory grows per token: {m}");
    assert_eq!(m["autotune_runs_after_warmup"].as_u64(), Some(0), "autotune ran after warm-up: {m}");
    assert_eq!(m["backend"]["backend"], "wgpu");
}

/// A packed step of 8 sequences reads back once (every sequence's token) and uploads once (every
/// sequence's token id), and each sequence past the first adds at most 2 launches per layer (its
/// keys' rotation into its cache, its mixer — the convolution runs inside the delta rule, the
/// queries' rotation and the output gate inside attention, and each writes its rows of the
/// layer's packed output), and no copy: not its own sampling, embedding or rotary tables, nor its
/// hidden row into the LM head's input, which reads the steps' rows of the pack in place
/// (docs/batching.md, "Packed read-backs", "Packed outputs").
#[test]
fn wgpu_packed_step_reads_once_and_launches_per_layer() {
    let batch = 8.0;
    let (one, packed) = (bench_json("wgpu"), batch_bench_json("wgpu", 8, &[]));
    let per_step = |m: &Value, key: &str, n: f64| m[key].as_f64().unwrap() * n;
    assert_eq!(per_step(&packed, "host_reads_per_token", batch), 1.0, "read-backs per packed step: {packed}");
    assert_eq!(per_step(&packed, "host_uploads_per_token", batch), 1.0, "uploads per packed step: {packed}");
    let layers = packed["layers"].as_f64().unwrap();
    let added =
        (per_step(&packed, "launches_per_token", batch) - per_step(&one, "launches_per_token", 1.0)) / (batch - 1.0);
    assert!(added <= 2.0 * layers, "each added sequence costs {added} launches per step, over 2 × {layers} layers");
    let growth = packed["device_bytes_growth_per_token"].as_f64().unwrap();
    assert!(growth <= 0.0, "device memory grows per token: {packed}");
    // By kernel: only each sequence's own mixers and its keys' rotation into its cache grow with the
    // batch; the products, norms, activations, copies and the token's choice run once per step.
    let (one, packed) = (kernels(&one, 1.0), kernels(&packed, batch));
    let apart = |k: &BTreeMap<String, f64>| k.keys().any(|name| name.starts_with("CausalConvSiluKernel"));
    assert!(!apart(&one) && !apart(&packed), "the convolution launches apart from the delta rule: {one:?}");
    let once_per_sequence = ["ConvDeltaRuleKernel", "GatedDeltaRuleKernel", "AttentionKernel"];
    let also_grow = ["RopeHeadsKernel"]; // each sequence's keys
    for (name, &launches) in &packed {
        let alone = one.get(name).copied().unwrap_or(0.0);
        let kind = name.split(" | ").next().unwrap();
        assert!(
            launches <= alone || once_per_sequence.contains(&kind) || also_grow.contains(&kind),
            "{kind}: {launches} launches per packed step of {batch} sequences, {alone} alone"
        );
    }
    let count = |k: &BTreeMap<String, f64>, kind: &str| {
        k.iter().filter(|(n, _)| n.starts_with(kind)).map(|(_, c)| c).sum::<f64>()
    };
    for kind in &once_per_sequence {
        assert_eq!(count(&packed, kind), batch * count(&one, kind), "{kind} launches once per sequence and layer");
    }
    // The mixers write their rows of one output, and the LM head reads the steps' rows in place.
    let copies = count(&packed, "SliceAssignKernel") - count(&one, "SliceAssignKernel");
    assert!(copies <= 0.0, "{copies} more copies in a packed step of {batch} than alone: {packed:?}");
}

/// Each kernel's launches per step of `sequences` sequences (its `launches_per_token` × `sequences`),
/// checked to add up to the run's `launches_per_token`.
fn kernels(m: &Value, sequences: f64) -> BTreeMap<String, f64> {
    let rows = m["kernels"].as_array().expect("a counted run lists its kernels");
    let by_name: BTreeMap<String, f64> = rows
        .iter()
        .map(|k| (k["name"].as_str().unwrap().to_string(), k["launches_per_token"].as_f64().unwrap() * sequences))
        .collect();
    assert_eq!(by_name.len(), rows.len(), "one row per kernel: {m}");
    let total = m["launches_per_token"].as_f64().unwrap() * sequences;
    assert!((by_name.values().sum::<f64>() - total).abs() < 1e-6, "the kernels add up to {total} launches: {m}");
    by_name
}

/// In f16 the kernels read and write the tensors' dtype: a step launches what it launches in f32,
/// with no dtype cast around the kernels (docs/performance.md, "Launches").
#[test]
fn wgpu_half_precision_step_casts_nothing() {
    let (f32, f16) = (bench_json("wgpu"), batch_bench_json("wgpu", 1, &["--dtype", "f16"]));
    assert_eq!(f16["weights"], "f16", "{f16}");
    let kernels = kernels(&f16, 1.0);
    assert!(!kernels.keys().any(|name| name.starts_with("Cast")), "f16 casts around the kernels: {kernels:?}");
    assert_eq!(f16["launches_per_token"], f32["launches_per_token"], "f16 launches as f32 does: {f16}");
}

/// `--kernel-times` times every launch on the device: the same kernels launch as untimed, each with
/// a time, and the times add up to `kernel_us_per_token`.
#[test]
fn kernel_times_cover_every_launch() {
    let untimed = bench_json("wgpu");
    let timed = batch_bench_json("wgpu", 1, &["--kernel-times"]);
    assert_eq!(timed["kernel_times"], true);
    assert_eq!(kernels(&timed, 1.0), kernels(&untimed, 1.0), "timing changes no launch");
    assert!(untimed["kernel_us_per_token"].is_null() && untimed["kernels"][0]["us_per_token"].is_null(), "{untimed}");
    let times: Vec<f64> =
        timed["kernels"].as_array().unwrap().iter().map(|k| k["us_per_token"].as_f64().unwrap()).collect();
    assert!(times.iter().all(|t| t.is_finite() && *t >= 0.0), "{timed}");
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "the costliest kernel first: {times:?}");
    let total = timed["kernel_us_per_token"].as_f64().unwrap();
    assert!(total > 0.0 && (times.iter().sum::<f64>() - total).abs() <= 1e-6 * total, "{timed}");

    let out = rmas(&["bench", "--size", "tiny", "--backend", "wgpu", "--kernel-times", "--no-counters"], &[]);
    assert!(!out.status.success(), "--kernel-times needs the counters");
}

/// A sampled step (the reference's settings: top-k 50) reads back each sequence's 51 candidates and
/// its row sum from the device, not its logits; the CPU's logits are host memory, read whole
/// (docs/batching.md, "Packed read-backs").
#[test]
fn sampled_step_reads_candidates_on_a_device() {
    let sampled = ["--temperature", "0.6", "--top-p", "0.95"];
    let vocab_bytes = 4096.0 * 4.0; // the tiny config's vocabulary in f32
    for batch in [1, 4] {
        let gpu = batch_bench_json("wgpu", batch, &sampled);
        let bytes = gpu["host_read_bytes_per_token"].as_f64().unwrap();
        assert_eq!(bytes, (2.0 * 51.0 + 1.0) * 4.0, "bytes read back per sampled token on wgpu: {gpu}");
        assert_eq!(gpu["host_reads_per_token"].as_f64().unwrap() * batch as f64, 1.0, "one read per step: {gpu}");
        let cpu = batch_bench_json("cpu", batch, &sampled);
        assert_eq!(cpu["host_read_bytes_per_token"].as_f64(), Some(vocab_bytes), "the CPU reads whole rows: {cpu}");
    }
}

#[test]
fn cpu_decode_step_reads_and_uploads_once() {
    let m = bench_json("cpu");
    assert_eq!(m["host_reads_per_token"].as_f64(), Some(1.0), "{m}");
    assert_eq!(m["host_uploads_per_token"].as_f64(), Some(1.0), "{m}");
    assert!(m["launches_per_token"].is_null(), "the CPU backend launches no kernels: {m}");
}

#[test]
fn auto_says_what_it_chose() {
    let out = rmas(&["bench", "--size", "tiny", "--prompt-len", "4", "--decode-steps", "2", "--json"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    let reason = m["backend"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("auto: "), "{m}");
    if m["backend"]["backend"] == "cpu" {
        assert!(reason.contains("no GPU"), "a CPU fallback says why: {reason}");
    }
    let line = format!("rmas: {} on ", m["backend"]["backend"].as_str().unwrap());
    assert!(stderr.contains(&line), "one line on stderr names the choice: {stderr}");
}

#[test]
fn a_backend_that_cannot_start_is_a_clear_error() {
    let tiny = ["bench", "--size", "tiny", "--prompt-len", "4", "--decode-steps", "2"];
    // No Vulkan driver: the loader finds no ICD, so wgpu has no adapter.
    let no_driver = [("VK_ICD_FILENAMES", "/nonexistent/icd.json"), ("VK_DRIVER_FILES", "/nonexistent/icd.json")];
    let out = rmas(&[&tiny[..], &["--backend", "wgpu"]].concat(), &no_driver);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "wgpu without a driver must fail");
    assert!(stderr.contains("install a Vulkan driver"), "names what to install: {stderr}");
    assert!(!stderr.contains("panicked"), "an error, not a panic: {stderr}");

    let out = rmas(&[&tiny[..], &["--backend", "wgpu", "--device", "7"]].concat(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--device 7 is out of range"), "{stderr}");

    let out = rmas(&[&tiny[..], &["--backend", "cpu", "--dtype", "bf16"]].concat(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("f32 only"), "{stderr}");
}

/// `--quantize` runs on the CPU (blocks as stored: 8.5 and 5 bits a weight) and on wgpu (the device
/// layout: 10 and 6 bits), reading that fraction of f32's bytes; on wgpu a step launches what the
/// f32 step does (one launch per fused product, its runs of one format merged, and no copy after),
/// plus each MLP's activation, which the dense gate ‖ up product computes inside its launch.
#[test]
fn quantized_weights_run_on_the_cpu_and_wgpu() {
    let tiny = ["bench", "--size", "tiny", "--prompt-len", "8", "--decode-steps", "4", "--json"];
    for (backend, int8_bits, int4_bits) in [("cpu", 8.5, 5.0), ("wgpu", 10.0, 6.0)] {
        let f32 = rmas(&[&tiny[..], &["--backend", backend]].concat(), &[]);
        assert!(f32.status.success(), "{}", String::from_utf8_lossy(&f32.stderr));
        let f32: Value = serde_json::from_slice(&f32.stdout).unwrap();
        for (flag, format, bits) in [("int8", "Q8_0", int8_bits), ("int4", "Q4_1", int4_bits)] {
            let out = rmas(&[&tiny[..], &["--backend", backend, "--quantize", flag]].concat(), &[]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{backend} --quantize {flag}: {stderr}");
            let m: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(m["weights"], format, "{m}");
            let bytes = m["weight_bytes_per_token"].as_f64().unwrap() / f32["weight_bytes_per_token"].as_f64().unwrap();
            let ratio = bits / 32.0;
            assert!(bytes < ratio * 1.2 + 0.05, "{backend} --quantize {flag} reads {bytes} of f32's bytes: {m}");
            assert!(m["decode_tokens_per_s"].as_f64().unwrap() > 0.0, "{m}");
            if backend == "wgpu" {
                // The dense gate ‖ up product writes its activation; the block products keep it apart.
                let (launches, layers) = (m["launches_per_token"].as_f64(), m["layers"].as_f64().unwrap());
                let f32_launches = f32["launches_per_token"].as_f64().unwrap();
                assert_eq!(launches, Some(f32_launches + layers), "{flag}: f32's launches + 1 per layer: {m}");
            }
        }
    }
}
