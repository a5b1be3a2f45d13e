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

use super::{BLOCK, BlockFormat, QuantMatrix};
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
    let mut w = [0f32; BLOCK];
    blocks
        .chunks_exact(format.block_bytes())
        .zip(x.chunks_exact(BLOCK))
        .map(|(b, x)| {
            format.decode(b, &mut w);
            dot(&w, x)
        })
        .sum()
}

/// The row dot product in AVX2 + FMA: per block, the codes times `x` in f32 lanes, then times the
/// scale (and the minimum, or Q4_0's offset of 8, times the block's sum of `x`).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BLOCK, BlockFormat};

    /// Whether this CPU has what [`row_dot`] is compiled for: AVX2, FMA and F16C.
    pub fn available() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
    }

    /// See [`super::RowDot`].
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn row_dot(format: BlockFormat, blocks: &[u8], x: &[f32]) -> f32 {
        let size = format.block_bytes();
        let n = blocks.len() / size;
        assert!(x.len() >= n * BLOCK, "{} activations for {n} blocks", x.len());
        let (mut acc, mut acc_sum) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for b in 0..n {
            let block = &blocks[b * size..(b + 1) * size];
            prefetch(block);
            // SAFETY: `x` holds `n` blocks of 32 (checked above); each load reads 8 of block `b`'s.
            let xs = unsafe {
                let at = x.as_ptr().add(b * BLOCK);
                [
                    _mm256_loadu_ps(at),
                    _mm256_loadu_ps(at.add(8)),
                    _mm256_loadu_ps(at.add(16)),
                    _mm256_loadu_ps(at.add(24)),
                ]
            };
            let d = _mm256_set1_ps(half(block, 0));
            match format {
                BlockFormat::Q8_0 => {
                    let mut s = _mm256_setzero_ps();
                    for (g, x) in xs.iter().enumerate() {
                        let q: &[u8; 8] = block[2 + 8 * g..10 + 8 * g].try_into().expect("8 codes");
                        let q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_set_epi64x(0, i64::from_le_bytes(*q))));
                        s = _mm256_fmadd_ps(q, *x, s);
                    }
                    acc = _mm256_fmadd_ps(d, s, acc);
                }
                BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
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
                    let (lo, hi) = (_mm_and_si128(raw, nibble), _mm_and_si128(_mm_srli_epi16(raw, 4), nibble));
                    // Weights 0..16 are the low nibbles, 16..32 the high ones.
                    let codes = [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)];
                    let mut s = _mm256_setzero_ps();
                    let mut sum = _mm256_setzero_ps();
                    for (q, x) in codes.iter().zip(&xs) {
                        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(*q)), *x, s);
                        sum = _mm256_add_ps(sum, *x);
                    }
                    acc = _mm256_fmadd_ps(d, s, acc);
                    acc_sum = _mm256_fmadd_ps(_mm256_set1_ps(min), sum, acc_sum);
                }
            }
        }
        horizontal_sum(_mm256_add_ps(acc, acc_sum))
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
        let k = 5 * BLOCK;
        let x: Vec<f32> = (0..k).map(|i| ((i * 7919 % 211) as f32 / 105.0 - 1.0) * 3.0).collect();
        let values: Vec<f32> = (0..k).map(|i| ((i * 104_729 % 307) as f32 / 153.0 - 1.0) * 0.2).collect();
        for format in [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1] {
            let w = QuantMatrix::quantize(format, &values, 1, k).unwrap();
            let (_, blocks) = w.row_blocks(0);
            let (fast, portable) = (row_dot_fn()(format, blocks, &x), row_dot(format, blocks, &x));
            assert!((fast - portable).abs() <= 1e-5 * portable.abs().max(1.0), "{format}: {fast} vs {portable}");
        }
    }
}
