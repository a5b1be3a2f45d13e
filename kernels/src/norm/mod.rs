//! RMSNorm over the last axis (every family's block norms and q/k norms): reference path.

use burn::tensor::{Tensor, backend::Backend};

use crate::f32_of;

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
