//! Weight products on the CPU that stream the weight instead of copying it (see `cpu_common.rs`).

use std::ops::Range;

use burn::backend::NdArray;
use burn::tensor::Tensor;
use gemm::Parallelism;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, Ix2};
use rayon::prelude::*;

use crate::Rows;
use crate::cpu_common::{Lanes, dot, f32_array, matmul, tensor};

/// Up to this many rows, a vocabulary matrix streams (a dot product per output) instead of going to a GEMM.
pub(crate) const STREAM_ROWS: usize = 4;
/// Fewest output columns a thread takes.
const MIN_COLUMNS: usize = 256;
/// Output columns of a step over a block of weight rows that is copied contiguous (see [`PACK_ROWS`]).
const STRIP: usize = 256;
/// Output columns of a step over weight rows read in place: longer runs of each row for the prefetcher.
const STREAM_STRIP: usize = 1024;
/// Weight rows of a strip that stay in L1 while every row tile takes them (32 KiB).
const KBLOCK: usize = 32;
/// Activation rows of a register tile.
const TILE_ROWS: usize = 4;
/// Past this many rows, each block of weight rows is copied contiguous before the row tiles take it.
const PACK_ROWS: usize = 16;

/// `x·w` for `x` `[M, K]` and `w` `[K, N]` (a linear layer's weight stored `[in, out]`).
pub fn linear(x: Tensor<NdArray, 2>, w: Tensor<NdArray, 2>, rows: Rows) -> Tensor<NdArray, 2> {
    product(x, w, Layout::InOut, rows)
}
/// `h·mᵀ` for `h` `[T, H]` and `m` `[V, H]` (a vocabulary matrix).
pub fn logits(h: Tensor<NdArray, 2>, m: Tensor<NdArray, 2>, rows: Rows) -> Tensor<NdArray, 2> {
    product(h, m, Layout::OutIn, rows)
}
/// How the weight's rows are laid out.
#[derive(Clone, Copy)]
enum Layout {
    /// `[K, N]`: one row per input feature.
    InOut,
    /// `[N, K]`: one row per output.
    OutIn,
}
/// A row-major `[K, N]` weight (a layer's) goes through register tiles at any row count; each row's
/// sums run in the same order whatever the count, so packed sequences need no per-row path. A
/// vocabulary matrix `[N, K]` streams for up to [`STREAM_ROWS`] rows or any number of
/// [`Rows::PerRow`] rows (one dot product per output) and goes to a GEMM otherwise.
fn product(x: Tensor<NdArray, 2>, w: Tensor<NdArray, 2>, layout: Layout, rows: Rows) -> Tensor<NdArray, 2> {
    let (x, w) = match (f32_array(x), f32_array(w)) {
        (Ok(x), Ok(w)) => (x, w),
        (x, w) => {
            let (x, w) = (tensor(x), tensor(w));
            return match layout {
                Layout::InOut => x.matmul(w),
                Layout::OutIn => x.matmul(w.transpose()),
            };
        }
    };
    let x = x.view().into_dimensionality::<Ix2>().expect("rank-2 tensor");
    let w = w.view().into_dimensionality::<Ix2>().expect("rank-2 tensor");
    let w = match layout {
        Layout::InOut => w,
        Layout::OutIn => w.reversed_axes(),
    }; // [K, N] view
    assert_eq!(x.ncols(), w.nrows(), "matmul of [{}, {}] by [{}, {}]", x.nrows(), x.ncols(), w.nrows(), w.ncols());
    let mut out = Array2::<f32>::zeros((x.nrows(), w.ncols()));
    if let Some(rows) = w.as_slice() {
        stream(x, rows, Layout::InOut, &mut out);
        return tensor(Ok(out.into_dyn().into_shared()));
    }
    if x.nrows() <= STREAM_ROWS || rows == Rows::PerRow {
        if let Some(rows) = w.t().as_slice() {
            stream(x, rows, Layout::OutIn, &mut out);
            return tensor(Ok(out.into_dyn().into_shared()));
        }
    }
    matmul(1.0, x, w, out.view_mut(), Parallelism::Rayon(0));
    tensor(Ok(out.into_dyn().into_shared()))
}
/// `out[i, :] = x[i, :]·W`, the output columns split over the thread pool. Each output is summed
/// over `k` in one order, the same for any number of rows.
fn stream(x: ArrayView2<f32>, rows: &[f32], layout: Layout, out: &mut Array2<f32>) {
    let x = x.as_standard_layout();
    let (k, n) = (x.ncols(), out.ncols());
    let per_thread = n.div_ceil(rayon::current_num_threads()).max(MIN_COLUMNS);
    out.axis_chunks_iter_mut(Axis(1), per_thread).into_par_iter().enumerate().for_each(|(c, mut y)| {
        let c0 = c * per_thread;
        match layout {
            // y_i += x_ik · W[k, strip]: axpy over the rows of W, strip by strip.
            Layout::InOut => axpy_strips(x.view(), rows, n, c0, y.view_mut()),
            // y_ij = x_i·W[j, :]: one dot product per output row of W and row of x.
            Layout::OutIn => {
                for j in 0..y.ncols() {
                    let wj = &rows[(c0 + j) * k..(c0 + j + 1) * k];
                    for (i, xi) in x.rows().into_iter().enumerate() {
                        y[[i, j]] = dot(xi.as_slice().expect("standard layout"), wj);
                    }
                }
            }
        }
    });
}

/// The [`Layout::InOut`] body of [`stream`] for the output columns `c0..` held by `y`, in register
/// tiles of the CPU's widest vectors. Every body takes fused multiply-adds (one rounding), each output
/// in `k` order from zero: the same bits on every ISA and for any number of rows.
fn axpy_strips(x: ArrayView2<f32>, w: &[f32], n: usize, c0: usize, y: ArrayViewMut2<f32>) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m256, __m512};
        let fma = std::arch::is_x86_feature_detected!("fma");
        if fma && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F and FMA, all that `__m512`'s lanes use.
            return unsafe { axpy_strips_avx512(x, w, n, c0, y) };
        }
        if fma && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 and FMA, all that `__m256`'s lanes use.
            return unsafe { axpy_strips_avx2(x, w, n, c0, y) };
        }
        /// 4 rows × 4 zmm: 16 of the 32 registers accumulate.
        #[target_feature(enable = "avx512f,fma")]
        unsafe fn axpy_strips_avx512(x: ArrayView2<f32>, w: &[f32], n: usize, c0: usize, y: ArrayViewMut2<f32>) {
            // SAFETY: this function's features are `__m512`'s.
            unsafe { axpy_strips_body::<__m512, 4>(x, w, n, c0, y) }
        }
        /// 4 rows × 2 ymm: 8 of the 16 registers accumulate.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn axpy_strips_avx2(x: ArrayView2<f32>, w: &[f32], n: usize, c0: usize, y: ArrayViewMut2<f32>) {
            // SAFETY: this function's features are `__m256`'s.
            unsafe { axpy_strips_body::<__m256, 2>(x, w, n, c0, y) }
        }
    }
    // SAFETY: single f32 lanes need no CPU feature.
    unsafe { axpy_strips_body::<f32, 8>(x, w, n, c0, y) }
}

/// What a tile reads: the rows of `x`, and a block of weight rows `k0..` with row stride `n`.
#[derive(Clone, Copy)]
struct Operands<'a> {
    /// `[M, K]`, row-major.
    x: &'a [f32],
    k: usize,
    /// Weight rows from `k0` on, `n` floats apart.
    w: &'a [f32],
    k0: usize,
    n: usize,
    /// Whether to prefetch the same columns of the next block of weight rows (x86).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    prefetch: bool,
}

/// Tiles of up to [`TILE_ROWS`] rows × `NV` vectors `V`. SAFETY: the CPU has `V`'s features.
#[inline(always)]
unsafe fn axpy_strips_body<V: Lanes, const NV: usize>(
    x: ArrayView2<f32>,
    w: &[f32],
    n: usize,
    c0: usize,
    mut y: ArrayViewMut2<f32>,
) {
    let k = x.ncols();
    let x = x.as_slice().expect("stream() passes a standard-layout x");
    let width = y.ncols();
    let mut y: Vec<&mut [f32]> =
        y.rows_mut().into_iter().map(|r| r.into_slice().expect("output rows are contiguous")).collect();
    // Several row tiles share each block of weight rows (KBLOCK × STRIP floats): copied contiguous, it
    // stays in L1 for all of them (in place, its rows `n` floats apart would share a few cache sets).
    let mut packed = if y.len() > PACK_ROWS { vec![0f32; KBLOCK * STRIP] } else { Vec::new() };
    let strip = if packed.is_empty() { STREAM_STRIP } else { STRIP };
    // With two to four row tiles reading weight rows in place, the hardware prefetcher falls behind
    // the first tile's FMAs: it asks for the next block's rows as it goes.
    let prefetch = packed.is_empty() && y.len() > TILE_ROWS;
    for s0 in (0..width).step_by(strip) {
        let len = strip.min(width - s0);
        for k0 in (0..k).step_by(KBLOCK) {
            let ks = k0..(k0 + KBLOCK).min(k);
            let (w, w0, n) = if packed.is_empty() {
                (&w[k0 * n..], c0 + s0, n)
            } else {
                for (kk, row) in ks.clone().zip(packed.chunks_exact_mut(len)) {
                    row.copy_from_slice(&w[kk * n + c0 + s0..kk * n + c0 + s0 + len]);
                }
                (&packed[..], 0, len)
            };
            // Each tile keeps its outputs in registers over the block.
            for (t, ys) in y.chunks_mut(TILE_ROWS).enumerate() {
                let ops = Operands { x: &x[t * TILE_ROWS * k..], k, w, k0, n, prefetch: t == 0 && prefetch };
                // SAFETY: the caller's CPU has V's features.
                unsafe {
                    match ys.len() {
                        4 => tile_columns::<4, V, NV>(ops, ys, s0, w0, len, ks.clone()),
                        3 => tile_columns::<3, V, NV>(ops, ys, s0, w0, len, ks.clone()),
                        2 => tile_columns::<2, V, NV>(ops, ys, s0, w0, len, ks.clone()),
                        _ => tile_columns::<1, V, NV>(ops, ys, s0, w0, len, ks.clone()),
                    }
                }
            }
        }
    }
}

/// Output columns `s0..s0 + len` of `R` rows, weight columns `w0..`: tiles of `NV` vectors, then of
/// one, then single lanes. SAFETY: the CPU has `V`'s features.
#[inline(always)]
unsafe fn tile_columns<const R: usize, V: Lanes, const NV: usize>(
    ops: Operands,
    y: &mut [&mut [f32]],
    s0: usize,
    w0: usize,
    len: usize,
    ks: Range<usize>,
) {
    let mut j = 0;
    // SAFETY (all three): the caller's CPU has V's features (f32 needs none).
    while j + NV * V::WIDTH <= len {
        unsafe { tile::<R, V, NV>(ops, y, s0 + j, w0 + j, ks.clone()) };
        j += NV * V::WIDTH;
    }
    while j + V::WIDTH <= len {
        unsafe { tile::<R, V, 1>(ops, y, s0 + j, w0 + j, ks.clone()) };
        j += V::WIDTH;
    }
    for j in j..len {
        unsafe { tile::<R, f32, 1>(ops, y, s0 + j, w0 + j, ks.clone()) };
    }
}

/// `y[r][j..j + C] += Σ_{kk ∈ ks} x[r, kk] · W[kk, jw..jw + C]` for `R` rows and `C = NV·WIDTH`
/// columns, in `kk` order, the sums in registers. SAFETY: the CPU has `V`'s features.
#[inline(always)]
unsafe fn tile<const R: usize, V: Lanes, const NV: usize>(
    ops: Operands,
    y: &mut [&mut [f32]],
    j: usize,
    jw: usize,
    ks: Range<usize>,
) {
    let c = NV * V::WIDTH;
    if ks.is_empty() {
        return;
    }
    // Every read below is in bounds.
    assert!(y.len() >= R && y.iter().all(|y| y.len() >= j + c), "tile outputs");
    assert!((ks.end - 1 - ops.k0) * ops.n + jw + c <= ops.w.len(), "tile weights");
    assert!((R - 1) * ops.k + ks.end <= ops.x.len(), "tile activations");
    // SAFETY: the asserts above bound every pointer; the caller's CPU has V's features.
    unsafe {
        let mut acc = [[V::splat(0.0); NV]; R];
        for (a, y) in acc.iter_mut().zip(y.iter()) {
            for (v, a) in a.iter_mut().enumerate() {
                *a = V::load(y.as_ptr().add(j + v * V::WIDTH));
            }
        }
        for kk in ks {
            let w = ops.w.as_ptr().add((kk - ops.k0) * ops.n + jw);
            #[cfg(target_arch = "x86_64")]
            if ops.prefetch {
                let ahead = w.wrapping_add(KBLOCK * ops.n);
                for line in (0..NV * V::WIDTH).step_by(16) {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        ahead.wrapping_add(line).cast(),
                    );
                }
            }
            let w: [V; NV] = std::array::from_fn(|v| V::load(w.add(v * V::WIDTH)));
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = V::splat(*ops.x.get_unchecked(r * ops.k + kk));
                for (a, w) in a.iter_mut().zip(w) {
                    *a = a.fma(xv, w);
                }
            }
        }
        for (a, y) in acc.iter().zip(y.iter_mut()) {
            for (v, a) in a.iter().enumerate() {
                a.store(y.as_mut_ptr().add(j + v * V::WIDTH));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[M, N]` products of every body this CPU runs, on shapes with a short last row tile, a last
    /// block of weight rows cut short, and columns past the last full tile and vector.
    fn bodies(m: usize) -> Vec<(&'static str, Array2<f32>)> {
        let (k, n) = (70, 1100);
        let x = Array2::from_shape_fn((m, k), |(i, j)| ((i * 131 + j * 7919) % 211) as f32 / 105.0 - 1.0);
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 104_729) % 307) as f32 / 153.0 - 1.0).collect();
        let run = |body: &dyn Fn(ArrayViewMut2<f32>)| {
            let mut y = Array2::zeros((m, n));
            body(y.view_mut());
            y
        };
        // SAFETY: single f32 lanes need no CPU feature.
        let mut out = vec![("portable", run(&|y| unsafe { axpy_strips_body::<f32, 8>(x.view(), &w, n, 0, y) }))];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{__m256, __m512};
            let fma = std::arch::is_x86_feature_detected!("fma");
            if fma && std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 and FMA.
                out.push(("avx2", run(&|y| unsafe { axpy_strips_body::<__m256, 2>(x.view(), &w, n, 0, y) })));
            }
            if fma && std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F and FMA.
                out.push(("avx512", run(&|y| unsafe { axpy_strips_body::<__m512, 4>(x.view(), &w, n, 0, y) })));
            }
        }
        out
    }

    /// Every body gives the portable body's bits, in place (5 rows) and from copied blocks (21 rows),
    /// and each row's bits do not depend on the rows beside it.
    #[test]
    fn bodies_agree_bit_for_bit_at_any_row_count() {
        let wide: Vec<_> = bodies(21).into_iter().map(|(_, y)| y).collect();
        for m in [5, 21] {
            let all = bodies(m);
            let (_, portable) = &all[0];
            for (name, y) in &all {
                assert!(y.iter().zip(portable).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}, {m} rows");
                let rows = wide[0].slice(ndarray::s![..m, ..]);
                assert!(y.iter().zip(rows).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: {m} rows vs 21");
            }
            assert!(portable.iter().any(|&v| v != 0.0), "the products are not all zero");
        }
        eprintln!("bodies compared: {:?}", bodies(1).iter().map(|(name, _)| *name).collect::<Vec<_>>());
    }
}
