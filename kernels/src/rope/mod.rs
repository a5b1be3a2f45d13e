//! Rotary position embedding of attention heads, with the heads' RMSNorm before it (Qwen3/Qwen3.5/
//! Gemma 3 q/k norms) and the head-major transpose after it: reference path. One kernel on cubecl
//! backends replaces the ~10 tensor ops per tensor this takes (docs/performance.md, "Launches").

use burn::tensor::{DType, Tensor};

use crate::RmasBackend;

pub(crate) mod cube;

/// Per head of `x` `[T, heads, width]` (any strides), its first `head_dim` features: RMSNorm with
/// `norm` = (effective scale `[head_dim]`, eps) when given, then rotate-half RoPE of the first `rot`
/// features with `cos`, `sin` `[T, rot]` (f32). Returns `[heads, T, head_dim]` in `x`'s dtype.
pub fn reference<B: RmasBackend>(
    x: Tensor<B, 3>,
    head_dim: usize,
    norm: Option<(Tensor<B, 1>, f64)>,
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
) -> Tensor<B, 3> {
    let [t, heads, width] = x.dims();
    let x = if width == head_dim { x } else { x.narrow(2, 0, head_dim) };
    let x = match norm {
        Some((scale, eps)) => B::rms_norm(x, scale, eps),
        None => x,
    };
    let dtype = x.dtype();
    let in_dtype = |t: Tensor<B, 2>| if dtype == DType::F32 { t } else { t.cast(dtype) };
    let (rot, half) = (cos.dims()[1], cos.dims()[1] / 2);
    let r = x.clone().narrow(2, 0, rot);
    let rotated = Tensor::cat(vec![r.clone().narrow(2, half, half).neg(), r.clone().narrow(2, 0, half)], 2);
    let (c, s) = (in_dtype(cos).unsqueeze_dim::<3>(1), in_dtype(sin).unsqueeze_dim::<3>(1)); // [T, 1, rot]
    let r = r * c + rotated * s;
    let y = if rot == head_dim { r } else { Tensor::cat(vec![r, x.narrow(2, rot, head_dim - rot)], 2) };
    y.reshape([t, heads, head_dim]).swap_dims(0, 1) // [heads, T, head_dim]
}
