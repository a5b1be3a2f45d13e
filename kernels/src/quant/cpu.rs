//! `x·Wᵀ` over a [`QuantMatrix`] on the CPU. The rows of `W` are split over the thread pool; each
//! task takes each weight row's dot products with the few rows of `x` straight from the blocks (a
//! decode step; AVX2+FMA where the CPU has them), or decodes a tile of rows and runs one small GEMM on
//! it (a prompt). Either way the weights are read once, as blocks, and the arithmetic is f32: the
//! products of the dequantized weights, summed in another order (activations are not quantized, unlike
//! llama.cpp's, so results stay within f32 noise of the dequantized model's).

use burn::backend::NdArray;
use burn::tensor::Tensor;
use gemm::Parallelism;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, Ix2};
use rayon::prelude::*;

use super::{BlockFormat, QuantMatrix, SUPER_BLOCK};
use crate::Rows;
use crate::cpu_common::{dot, matmul as gemm, standard, tensor, wide};

/// Up to this many rows of `x` take dot products with each decoded row; more run a GEMM per tile.
pub(crate) const DOT_ROWS: usize = 4;
/// Weight rows per task.
const TILE: usize = 64;

/// `x·wᵀ` `[M, N]` for `x` `[M, K]` and `w` `[N, K]`.
/// Up to [`DOT_ROWS`] rows, or any number of [`Rows::PerRow`] rows, take the dot path (each row's
/// sums then run in the same order whatever the count).
pub fn matmul(x: Tensor<NdArray, 2>, w: &QuantMatrix, rows: Rows) -> Tensor<NdArray, 2> {
    let [m, k] = x.dims();
    assert_eq!(k, w.cols(), "product of [{m}, {k}] by a quantized [{}, {}]ᵀ", w.rows(), w.cols());
    let x = standard(x);
    let x = x.view().into_dimensionality::<Ix2>().expect("rank-2 tensor");
    let mut out = Array2::<f32>::zeros((m, w.rows()));
    products(x, w, x.nrows() <= DOT_ROWS || rows == Rows::PerRow, &mut out);
    tensor(Ok(out.into_dyn().into_shared()))
}

/// `out = x·wᵀ`, tile by tile of `w`'s rows on the thread pool.
fn products(x: ArrayView2<f32>, w: &QuantMatrix, per_row: bool, out: &mut Array2<f32>) {
    let k = w.cols();
    let row_dot = row_dot_fn();
    let tile = |(t, mut y): (usize, ArrayViewMut2<f32>)| {
        let first = t * TILE;
        let rows = y.ncols();
        if per_row {
            for j in 0..rows {
                let (format, blocks) = w.row_blocks(first + j);
                for (i, xi) in x.rows().into_iter().enumerate() {
                    y[[i, j]] = row_dot(format, blocks, xi.as_slice().expect("standard layout"));
                }
            }
        } else {
            wide(|| {
                let mut tile = Array2::<f32>::zeros((rows, k));
                for (j, mut r) in tile.rows_mut().into_iter().enumerate() {
                    w.decode_row(first + j, r.as_slice_mut().expect("fresh rows are contiguous"));
                }
                gemm(1.0, x, tile.t(), y.view_mut(), Parallelism::None);
            })
        }
    };
    out.axis_chunks_iter_mut(Axis(1), TILE).into_par_iter().enumerate().for_each(tile);
}

/// A weight row's blocks dotted with `x` (as long as the row).
type RowDot = fn(BlockFormat, &[u8], &[f32]) -> f32;

/// The fastest [`RowDot`] this CPU runs.
fn row_dot_fn() -> RowDot {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: the CPU has the features `avx2::row_dot` is compiled for.
        return |format, blocks, x| unsafe { avx2::row_dot(format, blocks, x) };
    }
    row_dot
}

/// [`RowDot`] on any CPU: each block decoded, then dotted.
fn row_dot(format: BlockFormat, blocks: &[u8], x: &[f32]) -> f32 {
    let mut w = [0f32; SUPER_BLOCK];
    let w = &mut w[..format.block_weights()];
    blocks
        .chunks_exact(format.block_bytes())
        .zip(x.chunks_exact(format.block_weights()))
        .map(|(b, x)| {
            format.decode(b, w);
            dot(w, x)
        })
        .sum()
}

/// The row dot product in AVX2 + FMA: per block (or K-quant sub-block), the codes times `x` in f32
/// lanes, then times the scale (and the minimum, or Q4_0's offset of 8, times the block's sum of `x`).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::BlockFormat;
    use crate::quant::scale_min_k4;

    /// Whether this CPU has what [`row_dot`] is compiled for: AVX2, FMA and F16C.
    pub fn available() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
    }

    /// Running sums of a row's dot product: `acc` gathers scale × Σ code·x, `offset` the minimum (or
    /// code offset) × Σ x.
    struct Sums {
        acc: __m256,
        offset: __m256,
    }

    /// See [`super::RowDot`].
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn row_dot(format: BlockFormat, blocks: &[u8], x: &[f32]) -> f32 {
        let (size, weights) = (format.block_bytes(), format.block_weights());
        let n = blocks.len() / size;
        assert!(x.len() >= n * weights, "{} activations for {n} {format} blocks", x.len());
        let mut sums = Sums { acc: _mm256_setzero_ps(), offset: _mm256_setzero_ps() };
        for b in 0..n {
            let block = &blocks[b * size..(b + 1) * size];
            prefetch(block);
            let x = &x[b * weights..(b + 1) * weights];
            match format {
                BlockFormat::Q8_0 => q8_0(block, x, &mut sums),
                BlockFormat::Q4_0 | BlockFormat::Q4_1 => q4(format, block, x, &mut sums),
                BlockFormat::Q4K | BlockFormat::Q5K => q4k_q5k(format, block, x, &mut sums),
                BlockFormat::Q6K => q6k(block, x, &mut sums),
            }
        }
        horizontal_sum(_mm256_add_ps(sums.acc, sums.offset))
    }

    /// Eight activations from `x[at..at + 8]`.
    #[inline(always)]
    fn load8(x: &[f32], at: usize) -> __m256 {
        let x: &[f32; 8] = x[at..at + 8].try_into().expect("eight activations");
        // SAFETY: `x` is eight f32s; the load is unaligned.
        unsafe { _mm256_loadu_ps(x.as_ptr()) }
    }

    /// 32 bytes from `bytes[at..at + 32]`.
    #[inline(always)]
    fn load32(bytes: &[u8], at: usize) -> __m256i {
        let b: &[u8; 32] = bytes[at..at + 32].try_into().expect("32 bytes");
        // SAFETY: `b` is 32 bytes; the load is unaligned.
        unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
    }

    /// Σ code·x over the eight unsigned codes in the low bytes of `codes` and `x[at..at + 8]`, added to `s`.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn fma8(codes: __m128i, x: &[f32], at: usize, s: __m256) -> __m256 {
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(codes)), load8(x, at), s)
    }

    /// The four groups of eight bytes of `v`, in order.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn quarters(v: __m256i) -> [__m128i; 4] {
        let (lo, hi) = (_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)]
    }

    /// Σ x over `x[at..at + n]` (`n` a multiple of 8), added to `s`.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn sum_x(x: &[f32], at: usize, n: usize, mut s: __m256) -> __m256 {
        for g in (at..at + n).step_by(8) {
            s = _mm256_add_ps(s, load8(x, g));
        }
        s
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn q8_0(block: &[u8], x: &[f32], sums: &mut Sums) {
        let mut s = _mm256_setzero_ps();
        for g in 0..4 {
            let q: &[u8; 8] = block[2 + 8 * g..10 + 8 * g].try_into().expect("8 codes");
            let q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_set_epi64x(0, i64::from_le_bytes(*q))));
            s = _mm256_fmadd_ps(q, load8(x, 8 * g), s);
        }
        sums.acc = _mm256_fmadd_ps(_mm256_set1_ps(half(block, 0)), s, sums.acc);
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn q4(format: BlockFormat, block: &[u8], x: &[f32], sums: &mut Sums) {
        let (offset, min) = match format {
            BlockFormat::Q4_0 => (2, -8.0 * half(block, 0)),
            _ => (4, half(block, 2)),
        };
        let q: &[u8; 16] = block[offset..offset + 16].try_into().expect("16 bytes of nibbles");
        let raw = _mm_set_epi64x(
            i64::from_le_bytes(q[8..].try_into().expect("8 bytes")),
            i64::from_le_bytes(q[..8].try_into().expect("8 bytes")),
        );
        let nibble = _mm_set1_epi8(0xF);
        let (lo, hi) = (_mm_and_si128(raw, nibble), _mm_and_si128(_mm_srli_epi16::<4>(raw), nibble));
        // Weights 0..16 are the low nibbles, 16..32 the high ones.
        let codes = [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)];
        let mut s = _mm256_setzero_ps();
        for (g, q) in codes.into_iter().enumerate() {
            s = fma8(q, x, 8 * g, s);
        }
        sums.acc = _mm256_fmadd_ps(_mm256_set1_ps(half(block, 0)), s, sums.acc);
        sums.offset = _mm256_fmadd_ps(_mm256_set1_ps(min), sum_x(x, 0, 32, _mm256_setzero_ps()), sums.offset);
    }

    /// Q4_K and Q5_K: eight sub-blocks of 32, each with its 6-bit scale and minimum.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn q4k_q5k(format: BlockFormat, block: &[u8], x: &[f32], sums: &mut Sums) {
        let (d, dmin, scales) = (half(block, 0), half(block, 2), &block[4..16]);
        let (high, ql) = match format {
            BlockFormat::Q5K => (Some(load32(block, 16)), 48),
            _ => (None, 16),
        };
        let nibble = _mm256_set1_epi8(0xF);
        for j in 0..4 {
            let raw = load32(block, ql + 32 * j);
            let halves = [_mm256_and_si256(raw, nibble), _mm256_and_si256(_mm256_srli_epi16::<4>(raw), nibble)];
            for (h, mut codes) in halves.into_iter().enumerate() {
                let sub = 2 * j + h;
                if let Some(high) = high {
                    // Bit `sub` of each high byte is the code's fifth bit.
                    let bit =
                        _mm256_and_si256(_mm256_srl_epi16(high, _mm_cvtsi32_si128(sub as i32)), _mm256_set1_epi8(1));
                    codes = _mm256_or_si256(codes, _mm256_slli_epi16::<4>(bit));
                }
                let mut s = _mm256_setzero_ps();
                for (g, q) in quarters(codes).into_iter().enumerate() {
                    s = fma8(q, x, 32 * sub + 8 * g, s);
                }
                let (sc, m) = scale_min_k4(sub, scales);
                sums.acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc as f32), s, sums.acc);
                let x_sum = sum_x(x, 32 * sub, 32, _mm256_setzero_ps());
                sums.offset = _mm256_fmadd_ps(_mm256_set1_ps(-dmin * m as f32), x_sum, sums.offset);
            }
        }
    }

    /// Q6_K: two halves of 128, each four runs of 32 codes (a nibble and a bit pair each), sixteen
    /// sub-blocks of 16 with signed scales; codes are offset by 32.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn q6k(block: &[u8], x: &[f32], sums: &mut Sums) {
        let d = half(block, 208);
        let (nibble, pair) = (_mm256_set1_epi8(0xF), _mm256_set1_epi8(3));
        for n in 0..2 {
            let (ql0, ql1, qh) = (load32(block, 64 * n), load32(block, 64 * n + 32), load32(block, 128 + 32 * n));
            let low = [
                _mm256_and_si256(ql0, nibble),
                _mm256_and_si256(ql1, nibble),
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), nibble),
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), nibble),
            ];
            let high = [
                _mm256_and_si256(qh, pair),
                _mm256_and_si256(_mm256_srli_epi16::<2>(qh), pair),
                _mm256_and_si256(_mm256_srli_epi16::<4>(qh), pair),
                _mm256_and_si256(_mm256_srli_epi16::<6>(qh), pair),
            ];
            for (i, (low, high)) in low.into_iter().zip(high).enumerate() {
                let codes = quarters(_mm256_or_si256(low, _mm256_slli_epi16::<4>(high)));
                let at = 128 * n + 32 * i;
                // Weights at..at + 16 and at + 16..at + 32 have scales 8n + 2i and 8n + 2i + 1.
                for half_run in 0..2 {
                    let mut s = _mm256_setzero_ps();
                    for g in 0..2 {
                        s = fma8(codes[2 * half_run + g], x, at + 16 * half_run + 8 * g, s);
                    }
                    let scale = d * block[192 + 8 * n + 2 * i + half_run] as i8 as f32;
                    sums.acc = _mm256_fmadd_ps(_mm256_set1_ps(scale), s, sums.acc);
                    let x_sum = sum_x(x, at + 16 * half_run, 16, _mm256_setzero_ps());
                    sums.offset = _mm256_fmadd_ps(_mm256_set1_ps(-32.0 * scale), x_sum, sums.offset);
                }
            }
        }
    }

    /// Asks for the cache line `PREFETCH` bytes past `block`: the hardware prefetcher alone left the
    /// loops waiting on memory (a product streams megabytes of blocks once).
    #[inline(always)]
    fn prefetch(block: &[u8]) {
        // SAFETY: a prefetch never faults; the address is only computed (wrapping), not dereferenced.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(block.as_ptr().wrapping_add(PREFETCH).cast()) };
    }

    /// How far ahead [`prefetch`] reads.
    const PREFETCH: usize = 2048;

    /// The f16 at byte `at` of a block.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn half(block: &[u8], at: usize) -> f32 {
        let bits = u16::from_le_bytes([block[at], block[at + 1]]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// The sum of the eight lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn horizontal_sum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 body equals the portable one (which other CPUs run) on every format.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_row_dot_equals_the_portable_one() {
        if !avx2::available() {
            return eprintln!("no AVX2+FMA+F16C here: nothing to compare");
        }
        let k = 3 * SUPER_BLOCK;
        let x: Vec<f32> = (0..k).map(|i| ((i * 7919 % 211) as f32 / 105.0 - 1.0) * 3.0).collect();
        let values: Vec<f32> = (0..k).map(|i| ((i * 104_729 % 307) as f32 / 153.0 - 1.0) * 0.2).collect();
        for format in BlockFormat::ALL {
            let w = match format.quantizes() {
                true => QuantMatrix::quantize(format, &values, 1, k).unwrap(),
                false => QuantMatrix::from_blocks(format, 1, k, random_k_blocks(format, k)).unwrap(),
            };
            let (_, blocks) = w.row_blocks(0);
            let (fast, portable) = (row_dot_fn()(format, blocks, &x), row_dot(format, blocks, &x));
            assert!((fast - portable).abs() <= 1e-5 * portable.abs().max(1.0), "{format}: {fast} vs {portable}");
        }
    }

    /// A row of `k` weights in K-quant `format`: pseudo-random codes and scales, finite f16 super-block
    /// scales.
    fn random_k_blocks(format: BlockFormat, k: usize) -> Vec<u8> {
        let mut bytes: Vec<u8> = (0..k / format.block_weights() * format.block_bytes())
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let scales: &[usize] = if format == BlockFormat::Q6K { &[208] } else { &[0, 2] };
        for (b, block) in bytes.chunks_exact_mut(format.block_bytes()).enumerate() {
            for &at in scales {
                let d = half::f16::from_f32(0.001 * (1 + (b + at) % 7) as f32);
                block[at..at + 2].copy_from_slice(&d.to_le_bytes());
            }
        }
        bytes
    }
}
