//! Rotary position embedding of attention heads, with the heads' RMSNorm before it (Qwen3/Qwen3.5/
//! Gemma 3 q/k norms) and the head-major transpose after it, alone or written into a KV cache with
//! the values: reference paths. One kernel on cubecl backends, and one pass per head on the CPU,
//! replace the ~10 tensor ops per tensor this takes, and the cache writes (docs/performance.md,
//! "Launches").

use burn::tensor::{DType, Tensor};

use crate::RmasBackend;

pub(crate) mod cpu;
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

/// Writes one sequence's keys and values into rows `at..at + T` of its KV cache `caches` (keys,
/// values, each `[nkv, capacity, head_dim]`) and returns the caches: the keys are `k` `[T, nkv,
/// width]` through [`RmasBackend::rope_heads`] (`norm`, then `cos`/`sin` `[T, rot]`), the values
/// `v` `[T, nkv, head_dim]` as they are, both head-major.
pub fn append_kv<B: RmasBackend>(
    (k_cache, v_cache): (Tensor<B, 3>, Tensor<B, 3>),
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    norm: Option<(Tensor<B, 1>, f64)>,
    (cos, sin): (Tensor<B, 2>, Tensor<B, 2>),
    at: usize,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let [t, nkv, head_dim] = v.dims();
    let k = B::rope_heads(k, head_dim, norm, cos, sin); // [nkv, T, head_dim]
    let rows = [0..nkv, at..at + t, 0..head_dim];
    (k_cache.slice_assign(rows.clone(), k), v_cache.slice_assign(rows, v.swap_dims(0, 1)))
}
