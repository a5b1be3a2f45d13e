//! Weight products on the CPU that stream the weight instead of copying it (see `cpu_common.rs`).

use burn::backend::NdArray;
use burn::tensor::Tensor;
use gemm::Parallelism;
use ndarray::{Array2, ArrayView2, Axis, Ix2};
use rayon::prelude::*;

use crate::Rows;
use crate::cpu_common::{dot, f32_array, matmul, tensor};

/// Up to this many rows stream the weight instead of packing it for a GEMM.
pub(crate) const STREAM_ROWS: usize = 4;
/// Fewest output columns a thread takes.
const MIN_COLUMNS: usize = 256;
/// Output columns of a streamed step whose rows stay in L1 while a weight row segment is applied to each.
const STRIP: usize = 256;

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
/// Streams the weight for up to [`STREAM_ROWS`] rows or any number of [`Rows::PerRow`] rows (each
/// row's sums then run in the same order whatever the count); packs it for a GEMM otherwise.
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
    if x.nrows() <= STREAM_ROWS || rows == Rows::PerRow {
        if let Some(rows) = w.as_slice() {
            stream(x, rows, Layout::InOut, &mut out);
            return tensor(Ok(out.into_dyn().into_shared()));
        }
        if let Some(rows) = w.t().as_slice() {
            stream(x, rows, Layout::OutIn, &mut out);
            return tensor(Ok(out.into_dyn().into_shared()));
        }
    }
    matmul(1.0, x, w, out.view_mut(), Parallelism::Rayon(0));
    tensor(Ok(out.into_dyn().into_shared()))
}
/// `out[i, :] = x[i, :]·W` reading the row-major weight `rows` once for all rows of `x`. Each
/// output is summed over `k` in order, the same for any number of rows.
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

/// The [`Layout::InOut`] body of [`stream`] for the output columns `c0..` held by `y`: AVX2 lanes
/// where the CPU has them. Both bodies multiply, then add (no FMA), lane by lane: the same results.
fn axpy_strips(x: ArrayView2<f32>, rows: &[f32], n: usize, c0: usize, y: ndarray::ArrayViewMut2<f32>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, which is all the body is compiled for.
        return unsafe { axpy_strips_avx2(x, rows, n, c0, y) };
    }
    axpy_strips_body(x, rows, n, c0, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn axpy_strips_avx2(x: ArrayView2<f32>, rows: &[f32], n: usize, c0: usize, y: ndarray::ArrayViewMut2<f32>) {
    axpy_strips_body(x, rows, n, c0, y)
}

#[inline(always)]
fn axpy_strips_body(x: ArrayView2<f32>, rows: &[f32], n: usize, c0: usize, mut y: ndarray::ArrayViewMut2<f32>) {
    let k = x.ncols();
    // Strip by strip, every row of `x` takes each weight row segment while it is in L1.
    for s0 in (0..y.ncols()).step_by(STRIP) {
        let len = STRIP.min(y.ncols() - s0);
        for kk in 0..k {
            let w = &rows[kk * n + c0 + s0..kk * n + c0 + s0 + len];
            for (i, mut yi) in y.rows_mut().into_iter().enumerate() {
                let xk = x[[i, kk]];
                let yi = &mut yi.as_slice_mut().expect("output rows are contiguous")[s0..s0 + len];
                yi.iter_mut().zip(w).for_each(|(y, w)| *y += xk * w);
            }
        }
    }
}
