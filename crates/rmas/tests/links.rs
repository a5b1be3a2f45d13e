//! RecursiveLinks against the system goldens, and loading failures.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::prelude::*;
use rmas::hub::Hub;
use rmas::link::{InnerLink, OuterLink};
use rmas::system::SystemSpec;
use rmas_models::nn::Linear;
use rmas_text::{Role, Style, Task};

use crate::common::{SYSTEMS, golden_cases};

type B = NdArray<f32>;

/// Golden tensors: key → (shape, values).
type Golden = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn load_golden(case: &str) -> Golden {
    let bytes = std::fs::read(Path::new(SYSTEMS).join(case).join("expected.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, view)| view.dtype() == safetensors::Dtype::F32)
        .map(|(name, view)| {
            let values = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

fn spec(case: &str, style: Style, task: Task) -> SystemSpec {
    let hub = Hub::new(Path::new(SYSTEMS).join(case).join("hub")).with_offline(true);
    SystemSpec::resolve_style(&hub, style, task).unwrap()
}

fn device() -> burn::backend::ndarray::NdArrayDevice {
    Default::default()
}

fn tensor((shape, values): &(Vec<usize>, Vec<f32>)) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(values.clone(), shape.clone()), &device())
}

/// Asserts `|a − e| ≤ 1e-5 + 1e-4·|e|` elementwise and returns the max absolute difference.
fn compare(actual: Tensor<B, 2>, (shape, expected): &(Vec<usize>, Vec<f32>), label: &str) -> f32 {
    assert_eq!(&actual.dims().to_vec(), shape, "{label}: shape");
    let actual = actual.into_data().to_vec::<f32>().unwrap();
    let mut max = 0f32;
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let diff = (a - e).abs();
        assert!(diff <= 1e-5 + 1e-4 * e.abs(), "{label}[{i}]: got {a}, expected {e}");
        max = max.max(diff);
    }
    max
}

/// `q0/r1/math/inner_latents` → (`q0/r1/math`, `math`).
fn prefix_and_role(key: &str) -> (String, String) {
    let parts: Vec<&str> = key.split('/').collect();
    (parts[..3].join("/"), parts[2].to_string())
}

#[test]
fn links_reproduce_system_goldens() {
    for (case, style, task) in golden_cases() {
        let case = case.as_str();
        let spec = spec(case, style, task);
        let golden = load_golden(case);
        let mut inner: BTreeMap<Role, InnerLink<B>> = BTreeMap::new();
        let mut outer: BTreeMap<String, OuterLink<B>> = BTreeMap::new();
        let (mut inner_max, mut outer_max, mut inner_n, mut outer_n) = (0f32, 0f32, 0, 0);
        for (key, expected) in &golden {
            let (prefix, role) = prefix_and_role(key);
            if key.ends_with("/inner_latents") {
                let role: Role = role.parse().unwrap();
                let link = inner
                    .entry(role)
                    .or_insert_with(|| InnerLink::load(&spec.agent(role).unwrap().inner_link, &device()).unwrap());
                let hidden = tensor(&golden[&format!("{prefix}/rollout_hidden")]);
                inner_max = inner_max.max(compare(link.forward(hidden), expected, key));
                inner_n += 1;
            } else if let Some(outer_key) = key.rsplit('/').next().and_then(|k| k.strip_prefix("message.")) {
                let link = outer
                    .entry(outer_key.to_string())
                    .or_insert_with(|| OuterLink::load(&spec.outer_links[outer_key].path, &device()).unwrap());
                let latents = tensor(&golden[&format!("{prefix}/inner_latents")]);
                outer_max = outer_max.max(compare(link.forward(latents), expected, key));
                outer_n += 1;
            }
        }
        assert!(inner_n > 0 && outer_n > 0, "{case}: no link goldens found");
        println!(
            "{case}: {inner_n} inner checks, max |diff| {inner_max:e}; {outer_n} outer checks, max |diff| {outer_max:e}"
        );
    }
}

#[test]
fn dims_and_empty_input() {
    let spec = spec("mixture-r2", Style::Mixture, Task::Math);
    let link: OuterLink<B> = OuterLink::load(&spec.outer_links["outer_3s"].path, &device()).unwrap();
    assert_eq!((link.in_dim(), link.out_dim()), (96, 64));
    let inner: InnerLink<B> = InnerLink::load(&spec.agent(Role::Math).unwrap().inner_link, &device()).unwrap();
    assert_eq!((inner.in_dim(), inner.out_dim()), (48, 48));
    let empty = Tensor::<B, 2>::zeros([0, 96], &device());
    assert_eq!(link.forward(empty).dims(), [0, 64]);
    assert_eq!(inner.forward(Tensor::zeros([0, 48], &device())).dims(), [0, 48]);
}

/// Converts a loaded link's parameters to safetensors bytes in `dtype`.
fn to_safetensors(tensors: Vec<(&str, TensorData)>, dtype: safetensors::Dtype) -> Vec<u8> {
    let encoded: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, data)| {
            let values = data.to_vec::<f32>().unwrap();
            let bytes = match dtype {
                safetensors::Dtype::BF16 => {
                    values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect()
                }
                _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            };
            (name.to_string(), data.shape.to_vec(), bytes)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = encoded
        .iter()
        .map(|(name, shape, bytes)| {
            (name.clone(), safetensors::tensor::TensorView::new(dtype, shape.clone(), bytes).unwrap())
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn inner_tensors(link: &InnerLink<B>) -> Vec<(&'static str, TensorData)> {
    let bias = |l: &Linear<B>| l.bias.clone().unwrap().into_data();
    vec![
        ("pre_ln.weight", link.pre_ln.weight.clone().into_data()),
        ("pre_ln.bias", link.pre_ln.bias.clone().into_data()),
        ("proj1.weight", hf_weight(&link.proj1).into_data()),
        ("proj1.bias", bias(&link.proj1)),
        ("proj2.weight", hf_weight(&link.proj2).into_data()),
        ("proj2.bias", bias(&link.proj2)),
        ("post_ln.weight", link.post_ln.weight.clone().into_data()),
        ("post_ln.bias", link.post_ln.bias.clone().into_data()),
    ]
}

/// A projection's weight in the checkpoints' `[out, in]` layout.
fn hf_weight(l: &Linear<B>) -> Tensor<B, 2> {
    l.hf_weight().expect("link weights are dense")
}

#[test]
fn safetensors_loading_matches_pytorch_loading() {
    let spec = spec("sequential-light-r2", Style::SequentialLight, Task::Math);
    let pt: InnerLink<B> = InnerLink::load(&spec.agent(Role::Solver).unwrap().inner_link, &device()).unwrap();
    let x = Tensor::<B, 2>::random([3, 48], burn::tensor::Distribution::Normal(0.0, 1.0), &device());
    let expected = pt.forward(x.clone()).into_data();
    for dtype in [safetensors::Dtype::BF16, safetensors::Dtype::F32] {
        let bytes = to_safetensors(inner_tensors(&pt), dtype);
        let st: InnerLink<B> = InnerLink::from_safetensors_bytes(&bytes, &device()).unwrap();
        st.forward(x.clone()).into_data().assert_eq(&expected, true);
    }
}

/// A `torch.save`d `nn.Module` state dict with every layout the reader must handle: a transposed
/// (strided) weight, two biases at offsets 8 and 16 of one shared storage, a stride-2 view, F64 /
/// BF16 / F16 / F32 storages and the OrderedDict's `_metadata` (a BUILD). Reference: the same
/// tensors made contiguous f32 in safetensors.
#[test]
fn pytorch_reader_handles_views_shared_storages_dtypes_and_metadata() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/pt");
    let reference: InnerLink<B> =
        InnerLink::from_safetensors_bytes(&std::fs::read(dir.join("strided_inner.safetensors")).unwrap(), &device())
            .unwrap();
    let path = dir.join("strided_inner.pt");
    let from_file: InnerLink<B> = InnerLink::load(&path, &device()).unwrap();
    let from_bytes: InnerLink<B> =
        InnerLink::from_pt_bytes(&std::fs::read(&path).unwrap(), "strided_inner.pt", &device()).unwrap();
    for (name, expected) in inner_tensors(&reference) {
        let got = inner_tensors(&from_file).into_iter().find(|(n, _)| *n == name).unwrap().1;
        got.assert_eq(&expected, true);
        let got = inner_tensors(&from_bytes).into_iter().find(|(n, _)| *n == name).unwrap().1;
        got.assert_eq(&expected, true);
    }
}

fn err_string<T>(result: rmas::Result<T>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn safetensors_with_wrong_keys_or_shapes_are_rejected() {
    let spec = spec("sequential-light-r2", Style::SequentialLight, Task::Math);
    let pt: InnerLink<B> = InnerLink::load(&spec.agent(Role::Solver).unwrap().inner_link, &device()).unwrap();
    let f32 = safetensors::Dtype::F32;

    let mut extra = inner_tensors(&pt);
    extra.push(("proj3.bias", pt.proj1.bias.clone().unwrap().into_data()));
    let msg = err_string(InnerLink::<B>::from_safetensors_bytes(&to_safetensors(extra, f32), &device()));
    assert!(msg.contains("unexpected [\"proj3.bias\"]") && msg.contains("ln_res_adapter"), "{msg}");

    let mut missing = inner_tensors(&pt);
    missing.retain(|(name, _)| *name != "post_ln.bias");
    let msg = err_string(InnerLink::<B>::from_safetensors_bytes(&to_safetensors(missing, f32), &device()));
    assert!(msg.contains("only ln_res_adapter supported") && msg.contains("post_ln.bias"), "{msg}");

    let mut shaped = inner_tensors(&pt);
    shaped[2].1 = hf_weight(&pt.proj1).slice([0..48, 0..40]).into_data();
    let msg = err_string(InnerLink::<B>::from_safetensors_bytes(&to_safetensors(shaped, f32), &device()));
    assert!(msg.contains("proj1.weight") && msg.contains("[48, 40]") && msg.contains("[48, 48]"), "{msg}");

    let msg = err_string(OuterLink::<B>::from_safetensors_bytes(&to_safetensors(inner_tensors(&pt), f32), &device()));
    assert!(msg.contains("only outer_ln_res_adapter supported") && msg.contains("ln_source.*"), "{msg}");

    let msg = err_string(InnerLink::<B>::from_safetensors_bytes(b"not safetensors", &device()));
    assert!(msg.contains("not a safetensors file"), "{msg}");
}

#[test]
fn wrong_link_type_in_pt_files() {
    let spec = spec("mixture-r2", Style::Mixture, Task::Math);
    let outer_path = &spec.outer_links["outer_1s"].path;
    let msg = err_string(InnerLink::<B>::load(outer_path, &device()));
    assert!(msg.contains("only ln_res_adapter supported") && msg.contains("pre_ln.weight"), "{msg}");
    assert!(msg.contains("Math-Summarizer-Outerlink.pt"), "{msg}");
    let inner_path = &spec.agent(Role::Math).unwrap().inner_link;
    let msg = err_string(OuterLink::<B>::load(inner_path, &device()));
    assert!(msg.contains("only outer_ln_res_adapter supported"), "{msg}");
}

/// Copies a `.pt` zip, rewriting `data.pkl` with `edit` (entries are re-stored with fresh CRCs).
fn rewrite_pt(src: &Path, dst: &Path, edit: impl Fn(Vec<u8>) -> Vec<u8>) {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut writer = zip::ZipWriter::new(std::fs::File::create(dst).unwrap());
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let name = entry.name().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        let bytes = if name.ends_with("data.pkl") { edit(bytes) } else { bytes };
        writer.start_file(name, options).unwrap();
        writer.write_all(&bytes).unwrap();
    }
    writer.finish().unwrap();
}

/// `haystack` with the first occurrence of `from` replaced by `to`.
fn replace_bytes(haystack: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = haystack.windows(from.len()).position(|w| w == from).expect("pattern in pickle");
    let mut out = haystack;
    out.splice(at..at + from.len(), to.iter().copied());
    out
}

/// Views whose sizes overflow or that repeat storage elements (stride 0) are rejected before any
/// allocation, whatever their element count.
#[test]
fn oversized_views_in_pt_files_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec("mixture-r2", Style::Mixture, Task::Math);
    let src = &spec.agent(Role::Code).unwrap().inner_link;
    // proj1.weight is saved as offset 0, size (64, 64), stride (64, 1): BININT1 ops after BINPERSID,
    // each tuple memoised (BINPUT 9 after the size).
    let view = b"QK\x00K@K@\x86q\tK@K\x01\x86";
    let cases: [(&[u8], &str); 2] = [
        // size (2^62 + 1, 64): its element count wraps around 2^64.
        (b"QK\x00\x8a\x08\x01\x00\x00\x00\x00\x00\x00\x40K@\x86q\tK@K\x01\x86", "exceeds its storage"),
        // size (2^40, 64), stride (0, 1): 2^46 elements out of 4096.
        (b"QK\x00\x8a\x06\x00\x00\x00\x00\x00\x01K@\x86q\tK\x00K\x01\x86", "larger than its storage"),
    ];
    for (i, (new_view, expected)) in cases.into_iter().enumerate() {
        let damaged = tmp.path().join(format!("oversized{i}.pt"));
        rewrite_pt(src, &damaged, |p| replace_bytes(p, view, new_view));
        let msg = err_string(InnerLink::<B>::load(&damaged, &device()));
        assert!(
            msg.contains("proj1.weight") && msg.contains(expected) && msg.contains(&format!("oversized{i}.pt")),
            "{msg}"
        );
    }
}

#[test]
fn pt_state_dicts_with_wrong_keys_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec("mixture-r2", Style::Mixture, Task::Math);

    let renamed = tmp.path().join("renamed_outer.pt");
    rewrite_pt(&spec.outer_links["outer_1s"].path, &renamed, |p| {
        replace_bytes(p, b"ln_target.bias", b"ln_target.bi4s")
    });
    let msg = err_string(OuterLink::<B>::load(&renamed, &device()));
    assert!(msg.contains("missing [\"ln_target.bias\"]") && msg.contains("unexpected [\"ln_target.bi4s\"]"), "{msg}");

    let inner = tmp.path().join("renamed_inner.pt");
    rewrite_pt(&spec.agent(Role::Code).unwrap().inner_link, &inner, |p| replace_bytes(p, b"proj1.bias", b"projX.bias"));
    let msg = err_string(InnerLink::<B>::load(&inner, &device()));
    assert!(msg.contains("only ln_res_adapter supported") && msg.contains("proj1.bias"), "{msg}");

    let same = tmp.path().join("rewritten.pt");
    rewrite_pt(&spec.agent(Role::Code).unwrap().inner_link, &same, |p| p);
    assert_eq!(InnerLink::<B>::load(&same, &device()).unwrap().in_dim(), 64);
}

/// Random byte damage to links' pickles (CRCs recomputed, so the zip layer cannot catch it) gives
/// a clear error or a link, never a panic.
#[test]
fn damaged_pickles_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec("mixture-r2", Style::Mixture, Task::Math);
    let inner = spec.agent(Role::Code).unwrap().inner_link.clone();
    let outer = spec.outer_links["outer_1s"].path.clone();
    let mut state = 0x9e37_79b9_7f4a_7c15u64; // xorshift64
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut loaded, mut rejected) = (0, 0);
    for round in 0..400 {
        let edits: Vec<(u64, u8)> = (0..1 + next() % 3).map(|_| (next(), next() as u8)).collect();
        let damaged = tmp.path().join(format!("damaged{round}.pt"));
        let src = if round % 2 == 0 { &inner } else { &outer };
        rewrite_pt(src, &damaged, |mut pickle| {
            for &(at, byte) in &edits {
                let n = pickle.len() as u64;
                pickle[(at % n) as usize] = byte;
            }
            pickle
        });
        let result = std::panic::catch_unwind(|| match round % 2 {
            0 => InnerLink::<B>::load(&damaged, &device()).map(drop),
            _ => OuterLink::<B>::load(&damaged, &device()).map(drop),
        });
        match result {
            Ok(Ok(())) => loaded += 1,
            Ok(Err(e)) => {
                assert!(e.to_string().contains(&format!("damaged{round}.pt")), "round {round}: {e}");
                rejected += 1;
            }
            Err(_) => panic!("round {round}: loading panicked after pickle edits {edits:?}"),
        }
        std::fs::remove_file(&damaged).unwrap();
    }
    assert!(rejected > 200, "{rejected} of 400 damaged pickles rejected, {loaded} loaded");
}

#[test]
fn missing_garbage_truncated_and_corrupt_files_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.pt");
    let msg = err_string(InnerLink::<B>::load(&missing, &device()));
    assert!(msg.contains("cannot read inner link") && msg.contains("nope.pt"), "{msg}");

    let garbage = tmp.path().join("garbage.pt");
    std::fs::write(&garbage, (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect::<Vec<_>>())
        .unwrap();
    let msg = err_string(OuterLink::<B>::load(&garbage, &device()));
    assert!(msg.contains("cannot load outer link") && msg.contains("garbage.pt"), "{msg}");

    let empty = tmp.path().join("empty.pt");
    std::fs::write(&empty, b"").unwrap();
    let msg = err_string(InnerLink::<B>::load(&empty, &device()));
    assert!(msg.contains("empty.pt"), "{msg}");

    let spec = spec("mixture-r2", Style::Mixture, Task::Math);
    let original = std::fs::read(&spec.agent(Role::Science).unwrap().inner_link).unwrap();

    let truncated = tmp.path().join("truncated.pt");
    std::fs::write(&truncated, &original[..original.len() / 2]).unwrap();
    let msg = err_string(InnerLink::<B>::load(&truncated, &device()));
    assert!(msg.contains("cannot load inner link") && msg.contains("truncated.pt"), "{msg}");

    let corrupt = tmp.path().join("corrupt.pt");
    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x5a;
    std::fs::write(&corrupt, flipped).unwrap();
    let msg = err_string(InnerLink::<B>::load(&corrupt, &device()));
    assert!(msg.contains("corrupt.pt") && msg.to_lowercase().contains("checksum"), "{msg}");

    let dir: PathBuf = tmp.path().to_path_buf();
    let msg = err_string(InnerLink::<B>::load(&dir, &device()));
    assert!(msg.contains("not a regular file"), "{msg}");
}
