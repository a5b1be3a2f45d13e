//! Weight products on the CPU that stream the weight instead of copying it (see `cpu_common.rs`).

use burn::backend::NdArray;
use burn::tensor::Tensor;
use gemm::Parallelism;
use ndarray::{Array2, ArrayView2, Ix2};
use rayon::prelude::*;

use crate::cpu_common::{dot, f32_array, matmul, tensor};

/// Up to this many rows stream the weight once per row instead of packing it for a GEMM.
const STREAM_ROWS: usize = 4;
/// Fewest output columns a thread takes.
const MIN_COLUMNS: usize = 256;

/// `x·w` for `x` `[M, K]` and `w` `[K, N]` (a linear layer's weight stored `[in, out]`).
pub fn linear(x: Tensor<NdArray, 2>, w: Tensor<NdArray, 2>) -> Tensor<NdArray, 2> {
    product(x, w, Layout::InOut)
}
/// `h·mᵀ` for `h` `[T, H]` and `m` `[V, H]` (a vocabulary matrix).
pub fn logits(h: Tensor<NdArray, 2>, m: Tensor<NdArray, 2>) -> Tensor<NdArray, 2> {
    product(h, m, Layout::OutIn)
}
/// How the weight's rows are laid out.
#[derive(Clone, Copy)]
enum Layout {
    /// `[K, N]`: one row per input feature.
    InOut,
    /// `[N, K]`: one row per output.
    OutIn,
}
fn product(x: Tensor<NdArray, 2>, w: Tensor<NdArray, 2>, layout: Layout) -> Tensor<NdArray, 2> {
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
    if x.nrows() <= STREAM_ROWS {
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
/// `out[i, :] = x[i, :]·W` reading the row-major weight `rows` once per row of `x`.
fn stream(x: ArrayView2<f32>, rows: &[f32], layout: Layout, out: &mut Array2<f32>) {
    let (k, n) = (x.ncols(), out.ncols());
    let per_thread = n.div_ceil(rayon::current_num_threads()).max(MIN_COLUMNS);
    for (xi, mut yi) in x.rows().into_iter().zip(out.rows_mut()) {
        let xi: Vec<f32> = xi.iter().copied().collect();
        let yi = yi.as_slice_mut().expect("fresh output rows are contiguous");
        yi.par_chunks_mut(per_thread).enumerate().for_each(|(c, y)| {
            let c0 = c * per_thread;
            match layout {
                // y += x_k · W[k, c0..]: axpy over the rows of W.
                Layout::InOut => {
                    for (kk, &xk) in xi.iter().enumerate() {
                        let w = &rows[kk * n + c0..kk * n + c0 + y.len()];
                        y.iter_mut().zip(w).for_each(|(y, w)| *y += xk * w);
                    }
                }
                // y_j = x·W[j, :]: one dot product per output row of W.
                Layout::OutIn => {
                    for (j, y) in y.iter_mut().enumerate() {
                        *y = dot(&xi, &rows[(c0 + j) * k..(c0 + j + 1) * k]);
                    }
                }
            }
        });
    }
}
