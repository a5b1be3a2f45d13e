//! Causal softmax attention with grouped KV heads and an optional sliding window: reference path;
//! and attention of a sequence's raw queries (their norm and rotation before it, the output gate
//! after it), which cubecl backends run inside the attention kernel (docs/performance.md, "Launches").

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};

use crate::{Act, RmasBackend, f32_of};

pub(crate) mod cpu;
pub(crate) mod cube;

/// Softmax of `scale·q·kᵀ` times `v` for queries `q` `[nh, T, hd]` over keys and values `[nkv, L, hd]`
/// (`L ≥ T`): query `i` sits at key position `L − T + i` and sees the keys at or before it, the
/// last `window` of them when given; query head `h` reads KV head `h / (nh / nkv)`. Scores and
/// softmax are f32; returns `[nh, T, hd]` in `v`'s dtype.
pub fn reference<B: RmasBackend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    scale: f64,
    window: Option<usize>,
) -> Tensor<B, 3> {
    let ([nh, t, hd], [nkv, l, _]) = (q.dims(), k.dims());
    assert!(
        l >= t && nh % nkv == 0 && window != Some(0),
        "attention of {t} queries × {nh} heads over {l} keys × {nkv} heads, window {window:?}"
    );
    let rep = nh / nkv;
    // A single query with a window only needs the window's keys.
    let (k, v, l) = match window {
        Some(w) if t == 1 && l > w => (k.narrow(1, l - w, w), v.narrow(1, l - w, w), w),
        _ => (k, v, l),
    };
    // GQA without copying K/V: query heads of one KV group become rows.
    let q = q.reshape([nkv, rep * t, hd]);
    let scores = f32_of(q.matmul(k.swap_dims(1, 2))) * scale; // [nkv, rep·T, L]
    let scores = match mask::<B>(t, l, rep, window, &scores.device()) {
        Some(mask) => scores.mask_fill(mask, f32::NEG_INFINITY),
        None => scores,
    };
    let probs = B::softmax_last(scores).cast(v.dtype());
    probs.matmul(v).reshape([nh, t, hd])
}

/// One sequence's queries as its layer's projection gives them, and what turns them into attention's
/// input ([`RmasBackend::rope_heads`]) and its output (the gate).
pub struct Queries<B: Backend> {
    /// `[T, nh, width ≥ head_dim]`, any strides (a view of the projection).
    pub q: Tensor<B, 3>,
    /// The heads' RMSNorm before the rotation: (effective scale `[head_dim]`, eps).
    pub norm: Option<(Tensor<B, 1>, f64)>,
    /// The rotary tables at the sequence's positions, each `[T, rot]` f32.
    pub cos: Tensor<B, 2>,
    /// See `cos`.
    pub sin: Tensor<B, 2>,
    /// The output gate `[T, nh, head_dim]` (any strides): the result is `σ(gate) ⊙ o`.
    pub gate: Option<Tensor<B, 3>>,
}

/// [`RmasBackend::causal_attention`] of `q`'s queries, normed and rotated by
/// [`RmasBackend::rope_heads`], over the first `keys` rows of the cache `k`, `v` `[nkv, ≥ keys,
/// head_dim]`, then times `σ(gate)` ([`RmasBackend::activate`]); returns `[T, nh, head_dim]` in
/// `v`'s dtype. The composition of those three calls, which a fused body must match bit for bit.
pub fn attend<B: RmasBackend>(
    q: Queries<B>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    keys: usize,
    scale: f64,
    window: Option<usize>,
) -> Tensor<B, 3> {
    let head_dim = v.dims()[2];
    let heads = B::rope_heads(q.q, head_dim, q.norm, q.cos, q.sin); // [nh, T, head_dim]
    let o = B::causal_attention(heads, k, v, keys, scale, window).swap_dims(0, 1); // [T, nh, head_dim]
    match q.gate {
        Some(gate) => B::activate(gate, Act::Sigmoid, Some(o)),
        None => o,
    }
}

/// The first key query `i` of `T` may see among `L`: `[lo, L − T + i]` is its range.
pub(crate) fn first_key(i: usize, t: usize, l: usize, window: Option<usize>) -> usize {
    window.map_or(0, |w| (l - t + i + 1).saturating_sub(w))
}

/// `true` where query row `r·T + i` may not see key `j`: `[1, rep·T, L]`, or `None` when every
/// query sees every key.
fn mask<B: RmasBackend>(
    t: usize,
    l: usize,
    rep: usize,
    window: Option<usize>,
    device: &B::Device,
) -> Option<Tensor<B, 3, Bool>> {
    if t == 1 && first_key(0, t, l, window) == 0 {
        return None;
    }
    let mut m = Vec::with_capacity(rep * t * l);
    for _ in 0..rep {
        for i in 0..t {
            let (lo, hi) = (first_key(i, t, l, window), l - t + i);
            m.extend((0..l).map(|j| j < lo || j > hi));
        }
    }
    Some(Tensor::from_data(TensorData::new(m, [1, rep * t, l]), device))
}
