//! Products over block-quantized weights (`RmasBackend::quant_matmul`; the CPU's blocked body, the
//! reference elsewhere) against float64 loops over the decoded weights, at awkward sizes (1 row, the
//! dot-product/GEMM switch, past a task's tile of rows), for every block format (the K-quants'
//! super-blocks included) and for a matrix whose row runs differ in format; and the quantizers'
//! error bounds.

use burn::tensor::{Tensor, TensorData};
use rmas_kernels::quant::{BLOCK, BlockFormat, QuantMatrix, SUPER_BLOCK};
use rmas_kernels::{RmasBackend, Rows};
use rmas_suite::{assert_close, random_blocks, uniform};

/// The formats `--quantize` makes.
const FORMATS: [BlockFormat; 3] = [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1];

/// `x·wᵀ` in float64 over `w`'s decoded weights.
fn reference(x: &[f32], m: usize, w: &QuantMatrix) -> Vec<f32> {
    let (n, k) = (w.rows(), w.cols());
    let dense = w.dequantize();
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k).map(|c| x[i * k + c] as f64 * dense[j * k + c] as f64).sum();
            out[i * n + j] = s as f32;
        }
    }
    out
}

fn check<B: RmasBackend>(d: &B::Device, what: &str, w: &QuantMatrix, m: usize) {
    check_held::<B>(d, what, w, w, m);
}

/// Products over `held`, a copy of `w` (its blocks released to the device, say), against `w`'s reference.
fn check_held<B: RmasBackend>(d: &B::Device, what: &str, w: &QuantMatrix, held: &QuantMatrix, m: usize) {
    let x = uniform(m as u64 * 31 + 7, m * w.cols());
    let want = reference(&x, m, w);
    let want = Tensor::<B, 2>::from_data(TensorData::new(want, [m, w.rows()]), d);
    let x = Tensor::<B, 2>::from_data(TensorData::new(x, [m, w.cols()]), d);
    for rows in [Rows::Sequence, Rows::PerRow] {
        assert_close(&format!("{what} {rows:?}"), B::quant_matmul(x.clone(), held, rows), want.clone(), 1e-4, 1e-4);
    }
}

fn products_match_f64<B: RmasBackend>(d: &B::Device) {
    for format in BlockFormat::ALL {
        let b = format.block_weights();
        for (n, k) in [(1, b), (70, 3 * b), (129, 2 * b)] {
            let w = random_blocks(n as u64, format, n, k);
            for m in [1, 3, 4, 5, 17] {
                check::<B>(d, &format!("{format} [{m}, {k}]·[{n}, {k}]ᵀ"), &w, m);
            }
        }
    }
}

fn mixed_formats_and_reordered_rows_and_columns<B: RmasBackend>(d: &B::Device) {
    // Q4_K_M's mix: Q4_K layers beside Q6_K ones, and the 32-weight formats; rows of 512 hold both.
    let k = 2 * SUPER_BLOCK;
    let formats = [BlockFormat::Q8_0, BlockFormat::Q4K, BlockFormat::Q4_0, BlockFormat::Q6K, BlockFormat::Q4_1];
    let parts: Vec<_> = formats.iter().enumerate().map(|(i, &f)| random_blocks(40 + i as u64, f, 30 + i, k)).collect();
    let all = QuantMatrix::concat(parts.clone()).expect("same width");
    assert_eq!(all.formats(), "Q8_0+Q4_K+Q4_0+Q6_K+Q4_1");
    assert_eq!(all.rows(), 30 + 31 + 32 + 33 + 34);
    // The concatenation's decoded rows are the parts' rows, in order.
    let stacked: Vec<f32> = parts.iter().flat_map(|p| p.dequantize()).collect();
    assert_eq!(all.dequantize(), stacked);
    for m in [1, 6] {
        check::<B>(d, &format!("mixed, {m} rows"), &all, m);
    }
    // Adjacent runs of one format merge into one run (one product launch on a device), rows in order.
    let same: Vec<_> = [50, 51].into_iter().map(|seed| random_blocks(seed, BlockFormat::Q4K, 20, k)).collect();
    let merged = QuantMatrix::concat(same.clone()).expect("same width");
    assert!(merged.single_format().is_some(), "two Q4_K runs stayed two");
    assert_eq!(merged.dequantize(), same.iter().flat_map(|p| p.dequantize()).collect::<Vec<_>>());
    check::<B>(d, "merged runs", &merged, 3);
    // Reordered across the format runs (a GGUF query weight un-permuted, gated attention regrouped).
    let order: Vec<usize> = (0..all.rows()).rev().step_by(2).chain((0..all.rows()).step_by(2)).collect();
    let reordered = all.select_rows(&order);
    let want: Vec<f32> = order.iter().flat_map(|&r| all.dequantize_rows([r])).collect();
    assert_eq!(reordered.dequantize(), want);
    check::<B>(d, "reordered", &reordered, 2);
    // Columns moved in runs of whole super-blocks (a GGUF `ssm_out` whose value heads were tiled)
    // move as blocks; runs that split a block cannot.
    let runs = |width: usize| -> Vec<usize> { (0..k / width).rev().flat_map(|r| r * width..(r + 1) * width).collect() };
    let moved = all.select_column_blocks(&runs(SUPER_BLOCK)).expect("whole blocks of every format");
    let want: Vec<f32> =
        all.dequantize().chunks(k).flat_map(|row| runs(SUPER_BLOCK).into_iter().map(|c| row[c])).collect();
    assert_eq!(moved.dequantize(), want);
    check::<B>(d, "columns moved", &moved, 3);
    assert!(all.select_column_blocks(&runs(32)).is_none(), "runs of 32 split the K-quants' blocks");
    let q8 = &parts[0];
    let want: Vec<f32> = q8.dequantize().chunks(k).flat_map(|row| runs(32).into_iter().map(|c| row[c])).collect();
    assert_eq!(q8.select_column_blocks(&runs(32)).expect("Q8_0 blocks of 32").dequantize(), want);
    assert!(q8.select_column_blocks(&runs(16)).is_none(), "runs of 16 split Q8_0 blocks");
}

/// Row lookups of a matrix whose host blocks were released to the device (`QuantMatrix::released_to`,
/// `RmasBackend::device_rows`: an embedding on a GPU) give the host's decoded rows, for every format,
/// across the runs of a mixed matrix, repeated and in any order; the released matrix keeps its shape
/// and byte count and refuses host reads.
fn released_rows_are_the_decoded_rows<B: RmasBackend>(d: &B::Device) {
    let k = SUPER_BLOCK;
    let single = BlockFormat::ALL.iter().map(|&f| random_blocks(70 + f as u64, f, 37, k));
    let mixed = [BlockFormat::Q6K, BlockFormat::Q4_1, BlockFormat::Q8_0, BlockFormat::Q4K]
        .iter()
        .enumerate()
        .map(|(i, &f)| random_blocks(80 + i as u64, f, 5 + i, k))
        .collect();
    for w in single.chain([QuantMatrix::concat(mixed).expect("same width")]) {
        let n = w.rows();
        let ids: Vec<u32> = [0, n - 1, 3, 3, n / 2, 1, n - 2, 7].iter().map(|&r| r as u32).collect();
        let want = w.dequantize_rows(ids.iter().map(|&r| r as usize));
        let want = Tensor::<B, 2>::from_data(TensorData::new(want, [ids.len(), k]), d);
        let released = w.released_to::<B>(d);
        assert!(w.on_host() && !released.on_host());
        assert_eq!((released.rows(), released.cols(), released.bytes()), (n, k, w.bytes()));
        assert!(std::panic::catch_unwind(|| released.dequantize()).is_err(), "{w:?}: host read of released blocks");
        let ids = Tensor::<B, 1>::from_data(TensorData::new(ids.iter().map(|&r| r as f32).collect(), [ids.len()]), d);
        let got = B::device_rows(&released.on_device::<B>(d), ids);
        // Exact but for a fused multiply-add in the kernel's `code·scale + offset`.
        assert_close(&format!("{w:?} rows"), got, want, 1e-6, 1e-6);
        if B::BLOCKS_ON_DEVICE {
            // The products read the same copy (backends that read host blocks never release them).
            check_held::<B>(d, &format!("{w:?} released"), &w, &released, 5);
        }
    }
}

rmas_suite::backend_tests! {
    quant_products_match_f64 => products_match_f64,
    quant_mixed_formats_and_reordered_rows_and_columns => mixed_formats_and_reordered_rows_and_columns,
    quant_released_rows_are_the_decoded_rows => released_rows_are_the_decoded_rows,
}

/// Each weight decodes to within the format's step of itself: half a step where it rounds, a whole
/// one where Q4_0 clips the side opposite its largest weight, plus the f16 rounding of the scales
/// (relative 2⁻¹¹, or half of 2⁻²⁴ for a scale in f16's subnormal range) times the largest code.
#[test]
fn quantization_error_is_within_a_step() {
    let k = 4 * BLOCK;
    let v: Vec<f32> =
        uniform(9, 64 * k).iter().enumerate().map(|(i, x)| x * 10f32.powi((i / BLOCK % 7) as i32 - 3)).collect();
    for format in FORMATS {
        let back = QuantMatrix::quantize(format, &v, 64, k).unwrap().dequantize();
        for (b, (x, y)) in v.chunks(BLOCK).zip(back.chunks(BLOCK)).enumerate() {
            let (lo, hi) = x.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
            let amax = lo.abs().max(hi.abs());
            let (step, bound) = match format {
                BlockFormat::Q8_0 => (amax / 127.0, 0.5),
                BlockFormat::Q4_0 => (amax / 8.0, 1.0),
                BlockFormat::Q4_1 => ((hi - lo) / 15.0, 0.5),
                k_quant => unreachable!("{k_quant} is not among the quantized FORMATS"),
            };
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                let err = (x - y).abs();
                let allowed =
                    bound * step + 16.0 * step * 2f32.powi(-11) + amax * 2f32.powi(-11) + 128.0 * 2f32.powi(-25);
                assert!(err <= allowed, "{format} block {b} weight {i}: {x} → {y} (error {err}, allowed {allowed})");
            }
        }
    }
}

/// The device layout (`quant/device.rs`: codes in u32 words, f32 scale and offset per group) holds
/// every format's weights bit for bit, fused runs of several formats included, and a matrix is
/// uploaded once per device.
#[test]
fn the_device_layout_holds_every_format_exactly() {
    type B = burn::backend::NdArray;
    let device = Default::default();
    let k = 2 * SUPER_BLOCK;
    let parts: Vec<_> =
        BlockFormat::ALL.iter().enumerate().map(|(i, &f)| random_blocks(60 + i as u64, f, 3 + i, k)).collect();
    let all = QuantMatrix::concat(parts).expect("same width");
    let on_device = all.on_device::<B>(&device);
    assert_eq!(on_device.parts.len(), BlockFormat::ALL.len());
    let (want, got) = (all.dequantize(), on_device.dequantize());
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "weight {i} (row {}): {g} vs {w}", i / k);
    }
    assert!(std::sync::Arc::ptr_eq(&on_device, &all.on_device::<B>(&device)), "one upload per device");
    let bits: Vec<usize> = BlockFormat::ALL.iter().map(|f| f.device_bits_per_weight()).collect();
    assert_eq!(bits, [10, 6, 6, 6, 10, 12]);
}

#[test]
fn bad_shapes_are_refused() {
    assert!(QuantMatrix::quantize(BlockFormat::Q8_0, &[0.0; 40], 1, 40).is_none(), "40 columns: not whole blocks");
    assert!(QuantMatrix::quantize(BlockFormat::Q8_0, &[0.0; 64], 3, 32).is_none(), "64 values for [3, 32]");
    assert!(QuantMatrix::from_blocks(BlockFormat::Q4_1, 2, 32, vec![0; 39]).is_none(), "39 bytes for two Q4_1 blocks");
    assert!(QuantMatrix::from_blocks(BlockFormat::Q4_1, usize::MAX, 64, vec![]).is_none(), "overflowing size");
    let a = QuantMatrix::quantize(BlockFormat::Q8_0, &[0.0; 32], 1, 32).unwrap();
    let b = QuantMatrix::quantize(BlockFormat::Q8_0, &[0.0; 64], 1, 64).unwrap();
    assert!(QuantMatrix::concat(vec![a, b]).is_none(), "different widths");
    assert!(QuantMatrix::from_blocks(BlockFormat::Q4K, 1, 32 * 9, vec![0; 144]).is_none(), "288 columns of Q4_K");
    assert!(QuantMatrix::quantize(BlockFormat::Q6K, &[0.0; 256], 1, 256).is_none(), "no Q6_K encoder");
}
