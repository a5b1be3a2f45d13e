//! Weight products on the CPU (ndarray) without the copies of burn-ndarray's generic matmul, which
//! reshapes (copies) both operands and, through its GEMM, packs the weight even for one row: a decode
//! step read every weight about five times. Here a few rows stream the weight once (split over the
//! output columns on the thread pool); more rows run one GEMM on views.

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_ndarray::NdArrayTensor;
use ndarray::{ArcArray, Array2, ArrayView2, Ix2, IxDyn};
use rayon::prelude::*;

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
    ndarray::linalg::general_mat_mul(1.0, &x, &w, 0.0, &mut out);
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

/// `a·b` with eight partial sums (so the compiler vectorises it).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    let mut acc = [0f32; 8];
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The f32 array behind a tensor, or the tensor's primitive when it is stored otherwise.
fn f32_array(t: Tensor<NdArray, 2>) -> Result<ArcArray<f32, IxDyn>, TensorPrimitive<NdArray>> {
    match t.into_primitive() {
        TensorPrimitive::Float(NdArrayTensor::F32(storage)) => Ok(storage.into_shared()),
        other => Err(other),
    }
}

fn tensor(array: Result<ArcArray<f32, IxDyn>, TensorPrimitive<NdArray>>) -> Tensor<NdArray, 2> {
    Tensor::from_primitive(match array {
        Ok(a) => TensorPrimitive::Float(NdArrayTensor::from(a)),
        Err(p) => p,
    })
}
