//! GGUF files of the Llama (rotary-permuted q/k, Llama 3 `rope_freqs`), Qwen2, Qwen3, Gemma 3 (norms
//! stored as `1 + w`, sliding layers, linear rope scaling of the global layers) and Qwen3.5 (tiled
//! value heads, `−exp(A_log)`, shifted norms) architectures: the golden tiny models converted by
//! llama.cpp's own Python package (`tests/gguf_models.py`, llama.cpp's tensor names, layouts and
//! metadata keys) load to the safetensors model's logits: exactly from F32 tensors; from Q8_0
//! tensors, the same kept as blocks or dequantized at load, and (but for Qwen3.5's regrouped
//! `ssm_out` columns) exactly what `--quantize int8` makes of the safetensors model.

use burn::backend::NdArray;
use burn::tensor::{DType, Tensor};
use rmas::system::load::{gguf_tokenizer, load_gguf};
use rmas_models::{BlockFormat, Blocks, Model, Precision, RmasBackend};
use rmas_suite::{Golden, assert_close, golden};
use rmas_text::{ChatOptions, Tokenizer};

type B = NdArray;

fn logits<K: RmasBackend>(model: &Model<K>, ids: &[u32]) -> Tensor<K, 2> {
    let mut cache = model.new_cache(ids.len(), 0).unwrap();
    model.logits(model.forward(model.embed(ids).unwrap(), &mut cache).unwrap())
}

/// The fixture `name` on backend `K`.
fn gguf_on<K: RmasBackend>(name: &str, blocks: Blocks, device: &K::Device) -> Model<K> {
    let path = golden("../gguf").join(name);
    let precision = Precision::new(DType::F32, blocks);
    Model::load_gguf(&path, device, precision).unwrap_or_else(|e| panic!("{name}: {e}")).0
}

fn gguf(name: &str, blocks: Blocks) -> Model<B> {
    gguf_on(name, blocks, &Default::default())
}

#[test]
fn gguf_files_load_to_the_safetensors_logits() {
    for arch in ["llama", "qwen2", "qwen3", "gemma3", "qwen3_5_text"] {
        let ids = Golden::open(&format!("models/{arch}/golden.safetensors")).ids("input_ids");
        let dir = golden(&format!("models/{arch}/model"));
        let precision = |blocks| Precision::new(DType::F32, blocks);
        let safetensors = Model::<B>::load(&dir, &Default::default(), precision(Blocks::Dense)).unwrap();
        let from_f32 = gguf(&format!("{arch}-f32.gguf"), Blocks::Stored);
        // Qwen3.5's `A_log` comes back from the stored `−exp(A_log)` within an ulp; its gated norms
        // amplify that to the case's own f32 noise (`golden.json`), the tolerance there.
        let atol = match arch {
            "qwen3_5_text" => {
                let path = golden(&format!("models/{arch}/golden.json"));
                let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
                json["max_abs_logits_float32_vs_float64"].as_f64().unwrap() as f32
            }
            _ => 1e-5,
        };
        assert_close(&format!("{arch} F32 GGUF"), logits(&from_f32, &ids), logits(&safetensors, &ids), atol, 1e-5);

        // The file's blocks as stored (rows moved back as whole blocks) and decoded give one model.
        let q8 = |blocks| logits(&gguf(&format!("{arch}-q8_0.gguf"), blocks), &ids);
        let dense = q8(Blocks::Dense);
        assert_close(&format!("{arch} Q8_0 GGUF (blocks)"), q8(Blocks::Stored), dense.clone(), 1e-5, 1e-5);
        // Qwen3.5's converter reorders the columns of `ssm_out` in runs of a value head (16 here):
        // its Q8_0 blocks group other weights than quantizing the checkpoint does.
        if arch != "qwen3_5_text" {
            let int8 = Model::<B>::load(&dir, &Default::default(), precision(Blocks::Quantize(BlockFormat::Q8_0)));
            assert_close(&format!("{arch} Q8_0 GGUF"), dense, logits(&int8.unwrap(), &ids), 1e-5, 1e-5);
        }
    }
}

/// A Qwen3.5 file whose `ssm_a` (stored `−exp(A_log)`) holds a value no `A_log` gives is refused,
/// naming the tensor, instead of loading NaN decay rates.
#[test]
fn a_positive_ssm_a_is_refused() {
    let path = golden("../gguf").join("qwen3_5_text-f32.gguf");
    let file = rmas_models::gguf::GgufFile::open(&path).unwrap();
    let ssm_a = file.tensors.iter().find(|t| t.name == "blk.1.ssm_a").unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[ssm_a.range.start..ssm_a.range.start + 4].copy_from_slice(&0.5f32.to_le_bytes());
    let hostile = std::env::temp_dir().join(format!("rmas-ssm-a-{}.gguf", std::process::id()));
    std::fs::write(&hostile, bytes).unwrap();
    let err = Model::<B>::load_gguf(&hostile, &Default::default(), Precision::new(DType::F32, Blocks::Stored));
    std::fs::remove_file(&hostile).unwrap();
    let err = err.err().expect("a positive ssm_a loads").to_string();
    assert!(err.contains("model.layers.1.linear_attn.A_log") && err.contains("0.5"), "{err}");
}

/// A file in Q4_K_M's mix of K-quants (`tests/gguf_models.py` `k_quant_llama`: Q4_K matrices, Q6_K
/// and Q5_K values and down projections, Q6_K output, F32 norms, rotary-permuted q/k) runs on its
/// blocks as stored to the logits of its weights dequantized at load (each block decoder checked
/// against llama.cpp's in `rmas-models`): the prompt through the decoded-tile GEMM, then one token at
/// a time through the block dot products, greedy; on every backend (the CPU's products over the
/// blocks as stored, the cubecl kernels' over the device layout), against the CPU's dequantized model.
fn k_quant_blocks<K: RmasBackend>(device: &K::Device) {
    let stored = gguf_on::<K>("llama-q4_k_m.gguf", Blocks::Stored, device);
    let formats: std::collections::BTreeSet<String> = stored.block_matrices().map(|m| m.formats()).collect();
    let want = ["Q4_K", "Q4_K+Q5_K", "Q4_K+Q6_K", "Q5_K", "Q6_K"];
    assert_eq!(formats, want.map(String::from).into(), "every matrix kept in its stored types");
    let dense = gguf("llama-q4_k_m.gguf", Blocks::Dense);
    assert_eq!(dense.block_matrices().count(), 0);

    let mut ids = vec![3u32, 200, 17, 319, 0, 99, 42, 7, 128];
    let (mut a, mut b) = (stored.new_cache(ids.len(), 6).unwrap(), dense.new_cache(ids.len(), 6).unwrap());
    let mut fed = 0;
    for step in 0..6 {
        let new = &ids[fed..];
        let got = stored.logits(stored.forward(stored.embed(new).unwrap(), &mut a).unwrap());
        let got = Tensor::<B, 2>::from_data(got.into_data(), &Default::default());
        let want = dense.logits(dense.forward(dense.embed(new).unwrap(), &mut b).unwrap());
        assert_close(&format!("step {step} ({} tokens)", new.len()), got.clone(), want.clone(), 1e-5, 1e-4);
        let last = |l: Tensor<B, 2>| {
            let t = l.dims()[0];
            l.slice(t - 1..t).argmax(1).into_scalar() as u32
        };
        assert_eq!(last(got), last(want.clone()), "step {step}: greedy id");
        fed = ids.len();
        ids.push(last(want));
    }
}

rmas_suite::backend_tests! {
    k_quant_gguf_runs_on_its_blocks_to_the_dequantized_logits => k_quant_blocks,
}

/// The tokenizers built from the golden sequential-light agents' GGUF metadata (`qwen2` and
/// `llama-bpe` pre-tokenizers, control and user-defined tokens, `add_bos_token`, the chat template)
/// encode, decode and render like the HF tokenizers they were converted from.
#[test]
fn gguf_tokenizers_match_the_hf_tokenizers_they_came_from() {
    let text = "Hello, World! I'm here; they'll go, we've been, you'd DON'T know. 12 345 6789 1234567 x2y3.\n\n\
                \tTabs\tand   spaces  \r\n café cafe\u{301} naïve Ωmega 漢字 😀 <|im_start|>user\n<think>x</think>\
                <|im_end|><|eot_id|><|begin_of_text|>  trailing   ";
    let hub = golden("systems/sequential-light-r2/hub");
    for (role, repo) in
        [("planner", "Planner-Qwen3-1.7B"), ("critic", "Critic-Llama3.2-1B"), ("solver", "Solver-Qwen2.5-Math-1.5B")]
    {
        let snapshots = hub.join(format!("models--RecursiveMAS--Sequential-Light-{repo}/snapshots"));
        let snapshot = std::fs::read_dir(&snapshots).unwrap().next().unwrap().unwrap().path();
        let hf = Tokenizer::from_dir(&snapshot).unwrap();
        let path = golden("../gguf/sequential-light-r2").join(format!("{role}.gguf"));
        let (_, ours) = load_gguf::<B>(&path, &Default::default(), DType::F32).unwrap();
        for special in [false, true] {
            let ids = hf.encode(text, special).unwrap();
            assert_eq!(ours.encode(text, special).unwrap(), ids, "{role}: ids (special tokens: {special})");
            assert_eq!(ours.decode(&ids, special).unwrap(), hf.decode(&ids, special).unwrap(), "{role}: text");
        }
        // A GGUF file holds no `generation_config.json`: its EOS is the tokenizer's.
        assert_eq!(ours.eos_token_id(), hf.eos_token_id(), "{role}: eos");
        assert_eq!(ours.generation_eos_ids(), [hf.eos_token_id().unwrap()], "{role}: generation eos");
        let opts = ChatOptions::recursivemas(chrono::NaiveDate::from_ymd_opt(2024, 7, 26).unwrap());
        let rendered = hf.render_prompt("You are a planner.", text, &opts).unwrap();
        assert_eq!(ours.render_prompt("You are a planner.", text, &opts).unwrap(), rendered, "{role}: chat");
    }
}

/// Each `tokenizer.ggml.pre` splits as its definition says, on a vocabulary where it shows: `123`
/// and `abc` are tokens, `123` reachable by merges and `abc` not. GPT-2 keeps digit runs whole,
/// `smollm` and `qwen2` split single digits, `llama-bpe` takes up to three and, as `ignore_merges`,
/// takes a pre-token the vocabulary holds whole without merging. An unknown name is refused.
#[test]
fn gguf_pre_tokenizers_split_as_llama_cpp_names_them() {
    use rmas_models::gguf::{GgufFile, MetaValue};
    let strings = |items: &[&str]| MetaValue::Array(items.iter().map(|s| MetaValue::Str((*s).into())).collect());
    let tokens = ["1", "2", "3", "12", "123", "a", "b", "c", "abc"];
    let [one, two, three, _, n123, a, b, c, abc] = std::array::from_fn(|i| i as u32);
    let cases: [(&str, &[u32]); 5] = [
        ("gpt2", &[n123, a, b, c]),
        ("smollm", &[one, two, three, a, b, c]),
        ("qwen2", &[one, two, three, a, b, c]),
        ("deepseek-r1-qwen", &[one, two, three, a, b, c]),
        ("llama-bpe", &[n123, abc]),
    ];
    for (pre, expected) in cases {
        let metadata = [
            ("tokenizer.ggml.model", MetaValue::Str("gpt2".into())),
            ("tokenizer.ggml.pre", MetaValue::Str(pre.into())),
            ("tokenizer.ggml.tokens", strings(&tokens)),
            ("tokenizer.ggml.merges", strings(&["1 2", "12 3"])),
        ];
        let gguf = GgufFile {
            path: format!("{pre}.gguf").into(),
            metadata: metadata.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            tensors: Vec::new(),
        };
        let ids = gguf_tokenizer(&gguf).unwrap().encode("123abc", false).unwrap();
        assert_eq!(ids, expected, "{pre}");
        if pre == "llama-bpe" {
            let mut unknown = gguf.clone();
            unknown.metadata.insert("tokenizer.ggml.pre".into(), MetaValue::Str("tekken".into()));
            let msg = unknown.tokenizer_files().expect_err("unknown pre-tokenizer").to_string();
            assert!(msg.contains("tekken") && msg.contains("llama-bpe") && msg.contains("llama-bpe.gguf"), "{msg}");
        }
    }
}

/// A SentencePiece vocabulary (`tokenizer.ggml.model = llama`, as Llama 2 and Mistral files hold)
/// tokenizes as llama.cpp does: the ids `tests/gguf_spm.py` recorded from llama.cpp for texts with
/// runs of spaces, newlines and tabs, digits, accents, CJK, an emoji (byte fallback), control and
/// user-defined tokens; each without special tokens decodes back to its text.
#[test]
fn sentencepiece_vocabularies_tokenize_as_llama_cpp() {
    let dir = golden("../gguf/spm");
    let gguf = rmas_models::gguf::GgufFile::open(&dir.join("vocab.gguf")).unwrap();
    let tokenizer = gguf_tokenizer(&gguf).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let cases = expected["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(tokenizer.encode(text, false).unwrap(), want, "{text:?}");
        // `add_bos_token`: the BOS id first.
        assert_eq!(tokenizer.encode(text, true).unwrap(), [&[1][..], &want].concat(), "{text:?} with BOS");
        // After a special token, llama.cpp's prefixed space decodes as a space (as HF's Llama
        // tokenizer does), so only texts without one decode to themselves.
        if !case["sentencepiece_ids"].is_null() {
            assert_eq!(tokenizer.decode(&want, false).unwrap(), text, "{want:?} decoded");
        }
    }
}
