//! RMSNorm on the CPU: one pass per row.

use burn::backend::NdArray;
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use crate::cpu_common::{dot, standard, tensor, values, wide};

/// [`crate::norm::rms_norm`] in one pass per row, in place when `x` is not shared.
pub fn rms_norm<const D: usize>(x: Tensor<NdArray, D>, scale: Tensor<NdArray, 1>, eps: f64) -> Tensor<NdArray, D> {
    if x.dtype() != DType::F32 {
        return crate::norm::rms_norm(x, scale, eps);
    }
    let width = x.dims()[D - 1];
    let scale = standard(scale);
    let scale = values(&scale);
    let mut x = standard(x);
    x.as_slice_mut()
        .expect("standard layout")
        .par_chunks_mut(width.max(1))
        .with_min_len(16)
        .for_each(|row| wide(|| norm_row(row, scale, eps as f32)));
    tensor(Ok(x))
}

/// One row's RMSNorm in place: `row / rms(row) · scale` (inlined into [`wide`]'s callers; the
/// rotary body normalizes its heads with it, so both give the same bits).
#[inline(always)]
pub(crate) fn norm_row(row: &mut [f32], scale: &[f32], eps: f32) {
    let inv = 1.0 / (dot(row, row) / row.len() as f32 + eps).sqrt();
    row.iter_mut().zip(scale).for_each(|(v, s)| *v = *v * inv * s);
}
