//! RMSNorm over the last axis (every family's block norms and q/k norms): reference path.

use burn::tensor::{Tensor, backend::Backend};

use crate::{RmasBackend, f32_of};

pub(crate) mod cpu;
pub(crate) mod cube;

/// `x / rms(x) · scale` over the last axis, computed in f32 and returned in `x`'s dtype; `scale`
/// `[width]` is the effective weight (`w`, or `1 + w` for zero-centred norms).
pub fn rms_norm<B: Backend, const D: usize>(x: Tensor<B, D>, scale: Tensor<B, 1>, eps: f64) -> Tensor<B, D> {
    let dtype = x.dtype();
    let x = f32_of(x);
    let inv = (x.clone().powi_scalar(2).mean_dim(D - 1) + eps).sqrt().recip();
    (x * inv * f32_of(scale).unsqueeze::<D>()).cast(dtype)
}

/// `x + y` `[rows, width]` and its RMSNorm: a residual add fused with the next block's norm (one
/// kernel on cubecl backends); returns (sum, normed) in `x`'s dtype.
pub fn add_rms_norm<B: RmasBackend>(
    x: Tensor<B, 2>,
    y: Tensor<B, 2>,
    scale: Tensor<B, 1>,
    eps: f64,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let sum = x + y;
    (sum.clone(), B::rms_norm(sum, scale, eps))
}
