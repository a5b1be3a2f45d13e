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
    let activations: Vec<Activations> = match per_row {
        true => x.rows().into_iter().map(|r| Activations::new(r.to_slice().expect("standard layout"))).collect(),
        false => Vec::new(),
    };
    let tile = |(t, mut y): (usize, ArrayViewMut2<f32>)| {
        let first = t * TILE;
        let rows = y.ncols();
        if per_row {
            for j in 0..rows {
                let (format, blocks) = w.row_blocks(first + j);
                for (i, xi) in activations.iter().enumerate() {
                    y[[i, j]] = row_dot(format, blocks, xi);
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

/// A row of activations and, on x86, the sums of its runs of 16 and 32 (`Σx`, which each block's
/// minimum or code offset multiplies in the x86 bodies): taken once per product, not once per
/// weight row. The portable body decodes whole blocks and reads no sums.
pub(crate) struct Activations<'a> {
    x: &'a [f32],
    /// `sums16[i]` = Σ `x[16i..16i + 16]`.
    #[cfg(target_arch = "x86_64")]
    sums16: Vec<f32>,
    /// `sums32[i]` = Σ `x[32i..32i + 32]`.
    #[cfg(target_arch = "x86_64")]
    sums32: Vec<f32>,
}

impl<'a> Activations<'a> {
    fn new(x: &'a [f32]) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let sums16: Vec<f32> = x.chunks(16).map(|c| c.iter().sum()).collect();
            let sums32 = sums16.chunks(2).map(|c| c.iter().sum()).collect();
            Self { x, sums16, sums32 }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Self { x }
    }
}

/// A weight row's blocks dotted with a row of activations (as long as the weight row).
type RowDot = fn(BlockFormat, &[u8], &Activations) -> f32;

/// The fastest [`RowDot`] this CPU runs.
fn row_dot_fn() -> RowDot {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the CPU has the features `avx512::row_dot` is compiled for.
        return |format, blocks, x| unsafe { avx512::row_dot(format, blocks, x) };
    }
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: the CPU has the features `avx2::row_dot` is compiled for.
        return |format, blocks, x| unsafe { avx2::row_dot(format, blocks, x) };
    }
    row_dot
}

/// [`RowDot`] on any CPU: each block decoded, then dotted.
fn row_dot(format: BlockFormat, blocks: &[u8], x: &Activations) -> f32 {
    let mut w = [0f32; SUPER_BLOCK];
    let w = &mut w[..format.block_weights()];
    blocks
        .chunks_exact(format.block_bytes())
        .zip(x.x.chunks_exact(format.block_weights()))
        .map(|(b, x)| {
            format.decode(b, w);
            dot(w, x)
        })
        .sum()
}

/// The row dot product in AVX2 + FMA: per block (or K-quant sub-block), the codes times `x` in f32
/// lanes, then times the scale; the minimum (or Q4_0's offset of 8, Q6_K's of 32) times the run's
/// precomputed `Σx`. Blocks rotate over four accumulators, so that consecutive blocks' sums do not
/// wait on each other (one accumulator made each block wait for the last one's FMA: 1.3× slower).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Activations, BlockFormat};
    use crate::cpu_common::Lanes;
    use crate::quant::scale_min_k4;

    /// Whether this CPU has what [`row_dot`] is compiled for: AVX2, FMA and F16C.
    pub fn available() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
    }

    /// Running sums of a row's dot product: `acc` gathers scale × Σ code·x, `offset` the minimum (or
    /// code offset) × Σ x.
    #[derive(Clone, Copy)]
    pub struct Sums<L> {
        pub acc: L,
        pub offset: f32,
    }

    /// Accumulators that blocks rotate over.
    const CHAINS: usize = 4;

    /// See [`super::RowDot`].
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn row_dot(format: BlockFormat, blocks: &[u8], x: &Activations) -> f32 {
        let n = blocks.len() / format.block_bytes();
        assert!(x.x.len() >= n * format.block_weights(), "{} activations for {n} {format} blocks", x.x.len());
        // One loop per format, so that each block's body is inlined into it.
        // SAFETY: this function is compiled for `__m256`'s features (AVX2, FMA).
        unsafe {
            match format {
                BlockFormat::Q8_0 => chains(format, blocks, |block, b, sums| q8_0(block, b, x, sums)),
                BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                    chains(format, blocks, |block, b, sums| q4(format, block, b, x, sums))
                }
                BlockFormat::Q4K | BlockFormat::Q5K => {
                    chains(format, blocks, |block, b, sums| q4k_q5k(format, block, b, x, sums))
                }
                BlockFormat::Q6K => chains(format, blocks, |block, b, sums| q6k(block, b, x, sums)),
            }
        }
    }

    /// Σ over a row's blocks of `body(block, b, sums)`, block `b` adding to accumulator `b mod CHAINS`.
    ///
    /// # Safety
    /// The CPU must have `L`'s features (the caller is a body compiled for them).
    #[inline(always)]
    pub unsafe fn chains<L: Lanes>(
        format: BlockFormat,
        blocks: &[u8],
        mut body: impl FnMut(&[u8], usize, &mut Sums<L>),
    ) -> f32 {
        // SAFETY: the caller's CPU has `L`'s features.
        let mut sums = [Sums { acc: unsafe { L::splat(0.0) }, offset: 0.0 }; CHAINS];
        let size = format.block_bytes();
        let mut groups = blocks.chunks_exact(CHAINS * size);
        for (g, group) in groups.by_ref().enumerate() {
            // A constant trip count: unrolled, with each accumulator in a register.
            for (c, sums) in sums.iter_mut().enumerate() {
                let block = &group[c * size..(c + 1) * size];
                prefetch(block);
                body(block, CHAINS * g + c, sums);
            }
        }
        let whole = blocks.len() / size / CHAINS * CHAINS;
        for (b, block) in groups.remainder().chunks_exact(size).enumerate() {
            body(block, whole + b, &mut sums[0]);
        }
        // SAFETY: as above.
        let acc = unsafe { sums[0].acc.add(sums[1].acc).add(sums[2].acc.add(sums[3].acc)).sum() };
        acc + sums.iter().map(|s| s.offset).sum::<f32>()
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

    /// Σ code·x over 8·`N` codes (the low eight bytes of each of `codes`, unsigned) and
    /// `x[at..at + 8N]`, in two independent chains.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn dot_codes<const N: usize>(codes: [__m128i; N], x: &[f32], at: usize) -> __m256 {
        let mut s = [_mm256_setzero_ps(); 2];
        for (g, q) in codes.into_iter().enumerate() {
            let q = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q));
            s[g % 2] = _mm256_fmadd_ps(q, load8(x, at + 8 * g), s[g % 2]);
        }
        _mm256_add_ps(s[0], s[1])
    }

    /// The four groups of eight bytes of `v`, in order.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn quarters(v: __m256i) -> [__m128i; 4] {
        let (lo, hi) = (_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)]
    }

    /// Adds `scale` × `s` to the row's sums.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn add_scaled(sums: &mut Sums<__m256>, scale: f32, s: __m256) {
        sums.acc = _mm256_fmadd_ps(_mm256_set1_ps(scale), s, sums.acc);
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn q8_0(block: &[u8], b: usize, x: &Activations, sums: &mut Sums<__m256>) {
        let x = &x.x[32 * b..32 * b + 32];
        let mut s = [_mm256_setzero_ps(); 2];
        for g in 0..4 {
            let q: &[u8; 8] = block[2 + 8 * g..10 + 8 * g].try_into().expect("8 codes");
            let q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_set_epi64x(0, i64::from_le_bytes(*q))));
            s[g % 2] = _mm256_fmadd_ps(q, load8(x, 8 * g), s[g % 2]);
        }
        add_scaled(sums, half(block, 0), _mm256_add_ps(s[0], s[1]));
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn q4(format: BlockFormat, block: &[u8], b: usize, x: &Activations, sums: &mut Sums<__m256>) {
        let [d, m] = halves(block);
        let (offset, min) = match format {
            BlockFormat::Q4_0 => (2, -8.0 * d),
            _ => (4, m),
        };
        let q: &[u8; 16] = block[offset..offset + 16].try_into().expect("16 bytes of nibbles");
        // SAFETY: `q` is 16 bytes; the load is unaligned.
        let raw = unsafe { _mm_loadu_si128(q.as_ptr().cast()) };
        let nibble = _mm_set1_epi8(0xF);
        let (lo, hi) = (_mm_and_si128(raw, nibble), _mm_and_si128(_mm_srli_epi16::<4>(raw), nibble));
        // Weights 0..16 are the low nibbles, 16..32 the high ones.
        let codes = [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)];
        add_scaled(sums, d, dot_codes(codes, &x.x[32 * b..], 0));
        sums.offset += min * x.sums32[b];
    }

    /// Q4_K and Q5_K: eight sub-blocks of 32, each with its 6-bit scale and minimum.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn q4k_q5k(format: BlockFormat, block: &[u8], b: usize, x: &Activations, sums: &mut Sums<__m256>) {
        let ([d, dmin], scales) = (halves(block), &block[4..16]);
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
                let (sc, m) = scale_min_k4(sub, scales);
                add_scaled(sums, d * sc as f32, dot_codes(quarters(codes), &x.x[256 * b..], 32 * sub));
                sums.offset += -dmin * m as f32 * x.sums32[8 * b + sub];
            }
        }
    }

    /// Q6_K: two halves of 128, each four runs of 32 codes (a nibble and a bit pair each), sixteen
    /// sub-blocks of 16 with signed scales; codes are offset by 32.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn q6k(block: &[u8], b: usize, x: &Activations, sums: &mut Sums<__m256>) {
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
                let [c0, c1, c2, c3] = quarters(_mm256_or_si256(low, _mm256_slli_epi16::<4>(high)));
                let at = 128 * n + 32 * i;
                // Weights at..at + 16 and at + 16..at + 32 have scales 8n + 2i and 8n + 2i + 1.
                for (run, codes) in [[c0, c1], [c2, c3]].into_iter().enumerate() {
                    let scale = d * block[192 + 8 * n + 2 * i + run] as i8 as f32;
                    add_scaled(sums, scale, dot_codes(codes, &x.x[256 * b..], at + 16 * run));
                    sums.offset += -32.0 * scale * x.sums16[16 * b + (at + 16 * run) / 16];
                }
            }
        }
    }

    /// Asks for the cache line `PREFETCH` bytes past `block`: the hardware prefetcher alone left the
    /// loops waiting on memory (a product streams megabytes of blocks once).
    #[inline(always)]
    pub fn prefetch(block: &[u8]) {
        // SAFETY: a prefetch never faults; the address is only computed (wrapping), not dereferenced.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(block.as_ptr().wrapping_add(PREFETCH).cast()) };
    }

    /// How far ahead [`prefetch`] reads.
    const PREFETCH: usize = 2048;

    /// The two f16s that open a block (the scale and minimum of Q4_1, Q4_K and Q5_K; Q4_0 and
    /// Q8_0 have only the first), converted together.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub fn halves(block: &[u8]) -> [f32; 2] {
        let bits = i32::from_le_bytes(block[..4].try_into().expect("a block opens with 4 bytes"));
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
        [_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v))]
    }

    /// The f16 at byte `at` of a block.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn half(block: &[u8], at: usize) -> f32 {
        let bits = u16::from_le_bytes([block[at], block[at + 1]]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }
}

/// The 32-weight formats (Q8_0, Q4_0, Q4_1) in AVX-512: a block's codes widened to two vectors of
/// sixteen f32 lanes (half the conversions and FMAs of AVX2's eight; 1.2× the decode speed of
/// SmolLM2 Q4_1 on a Zen 4), the K-quants as in AVX2.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::avx2::{Sums, chains, halves};
    use super::{Activations, BlockFormat};

    /// Whether this CPU has what [`row_dot`] is compiled for: AVX2's features and AVX-512 F and BW.
    pub fn available() -> bool {
        super::avx2::available() && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
    }

    /// See [`super::RowDot`].
    ///
    /// # Safety
    /// The CPU must have what [`available`] asks for.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
    pub unsafe fn row_dot(format: BlockFormat, blocks: &[u8], x: &Activations) -> f32 {
        let n = blocks.len() / format.block_bytes();
        assert!(x.x.len() >= n * format.block_weights(), "{} activations for {n} {format} blocks", x.x.len());
        // SAFETY: this function is compiled for `__m512`'s features (AVX-512 F) and AVX2's row
        // dot's (AVX2, FMA, F16C).
        unsafe {
            match format {
                BlockFormat::Q8_0 => chains(format, blocks, |block, b, sums| q8_0(block, b, x, sums)),
                BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                    chains(format, blocks, |block, b, sums| q4(format, block, b, x, sums))
                }
                _ => super::avx2::row_dot(format, blocks, x),
            }
        }
    }

    /// Sixteen activations from `x[at..at + 16]`.
    #[inline(always)]
    fn load16(x: &[f32], at: usize) -> __m512 {
        let x: &[f32; 16] = x[at..at + 16].try_into().expect("sixteen activations");
        // SAFETY: `x` is sixteen f32s; the load is unaligned.
        unsafe { _mm512_loadu_ps(x.as_ptr()) }
    }

    /// Adds `scale` × Σ code·x to `sums`, for the 32 codes of a block (`lo`: weights 0..16, `hi`:
    /// 16..32, one byte each, widened as `widen` says) and `x[32b..32b + 32]`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
    fn add_block(sums: &mut Sums<__m512>, scale: f32, [lo, hi]: [__m512i; 2], x: &[f32], b: usize) {
        let x = &x[32 * b..32 * b + 32];
        let s = _mm512_mul_ps(_mm512_cvtepi32_ps(lo), load16(x, 0));
        let s = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi), load16(x, 16), s);
        sums.acc = _mm512_fmadd_ps(_mm512_set1_ps(scale), s, sums.acc);
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
    fn q8_0(block: &[u8], b: usize, x: &Activations, sums: &mut Sums<__m512>) {
        let q: &[u8; 32] = block[2..34].try_into().expect("32 codes");
        // SAFETY: `q` is 32 bytes; the loads are unaligned.
        let (lo, hi) = unsafe { (_mm_loadu_si128(q.as_ptr().cast()), _mm_loadu_si128(q[16..].as_ptr().cast())) };
        add_block(sums, halves(block)[0], [_mm512_cvtepi8_epi32(lo), _mm512_cvtepi8_epi32(hi)], x.x, b);
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
    fn q4(format: BlockFormat, block: &[u8], b: usize, x: &Activations, sums: &mut Sums<__m512>) {
        let [d, m] = halves(block);
        let (offset, min) = match format {
            BlockFormat::Q4_0 => (2, -8.0 * d),
            _ => (4, m),
        };
        let q: &[u8; 16] = block[offset..offset + 16].try_into().expect("16 bytes of nibbles");
        // SAFETY: `q` is 16 bytes; the load is unaligned.
        let raw = unsafe { _mm_loadu_si128(q.as_ptr().cast()) };
        let nibble = _mm_set1_epi8(0xF);
        // Weights 0..16 are the low nibbles, 16..32 the high ones.
        let (lo, hi) = (_mm_and_si128(raw, nibble), _mm_and_si128(_mm_srli_epi16::<4>(raw), nibble));
        add_block(sums, d, [_mm512_cvtepu8_epi32(lo), _mm512_cvtepu8_epi32(hi)], x.x, b);
        sums.offset += min * x.sums32[b];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 and AVX-512 bodies equal the portable one (which other CPUs run) on every format, for
    /// rows of whole rotations of their accumulators and rows with blocks left over.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn simd_row_dots_equal_the_portable_one() {
        let mut bodies: Vec<(&str, RowDot)> = Vec::new();
        if avx2::available() {
            // SAFETY: the CPU has the features each body is compiled for.
            bodies.push(("AVX2", |format, blocks, x| unsafe { avx2::row_dot(format, blocks, x) }));
        }
        if avx512::available() {
            bodies.push(("AVX-512", |format, blocks, x| unsafe { avx512::row_dot(format, blocks, x) }));
        }
        if bodies.is_empty() {
            return eprintln!("no AVX2+FMA+F16C here: nothing to compare");
        }
        for k in [4 * SUPER_BLOCK, 5 * SUPER_BLOCK, 7 * 32] {
            let x: Vec<f32> = (0..k).map(|i| ((i * 7919 % 211) as f32 / 105.0 - 1.0) * 3.0).collect();
            let values: Vec<f32> = (0..k).map(|i| ((i * 104_729 % 307) as f32 / 153.0 - 1.0) * 0.2).collect();
            let x = Activations::new(&x);
            for format in BlockFormat::ALL.into_iter().filter(|f| k % f.block_weights() == 0) {
                let w = match format.quantizes() {
                    true => QuantMatrix::quantize(format, &values, 1, k).unwrap(),
                    false => QuantMatrix::from_blocks(format, 1, k, random_k_blocks(format, k)).unwrap(),
                };
                let (_, blocks) = w.row_blocks(0);
                let portable = row_dot(format, blocks, &x);
                for (name, body) in &bodies {
                    let fast = body(format, blocks, &x);
                    let close = (fast - portable).abs() <= 1e-5 * portable.abs().max(1.0);
                    assert!(close, "{name} {format}, k {k}: {fast} vs {portable}");
                }
            }
        }
        eprintln!("checked: {}", bodies.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", "));
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
