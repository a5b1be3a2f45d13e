//! Gated DeltaNet recurrence (Qwen3.5 linear-attention layers), per value head `h`:
//! `S ← exp(g_t)·S;  S ← S + k_t ⊗ β_t(v_t − Sᵀk_t);  o_t = Sᵀq_t`, with `S ∈ R^{dk×dv}` kept in f32,
//! optionally followed by the layer's gated RMSNorm of each `o_t`.

use burn::tensor::{Bool, DType, Tensor, backend::Backend};

use crate::Act;

/// Chunk length of the chunked (WY) form used for multi-token prefill.
pub const CHUNK: usize = 64;

/// The inputs of one gated-delta-rule call, token-major as a layer computes them.
#[derive(Clone, Debug)]
pub struct DeltaRule<B: Backend> {
    /// Queries `[T, nv, dk]`, l2-normed and scaled by `dk^-½`.
    pub q: Tensor<B, 3>,
    /// Keys `[T, nv, dk]`, l2-normed.
    pub k: Tensor<B, 3>,
    /// Values `[T, nv, dv]`; their dtype is the output's.
    pub v: Tensor<B, 3>,
    /// Log-decay (≤ 0) `[nv, T]`.
    pub g: Tensor<B, 2>,
    /// Write strength in (0, 1) `[nv, T]`.
    pub beta: Tensor<B, 2>,
    /// The state before the first token, f32 `[nv, dk, dv]`.
    pub state: Tensor<B, 3>,
}

/// The gated RMSNorm applied to each head's output: `w · o / rms(o) · silu(z)`.
#[derive(Clone, Debug)]
pub struct GatedNorm<B: Backend> {
    /// Gate `[T, nv, dv]`.
    pub z: Tensor<B, 3>,
    /// Weight `[dv]`.
    pub weight: Tensor<B, 1>,
    /// Added to the mean square.
    pub eps: f64,
}

/// Tensor-op reference: the recurrent form for one token, the chunked form otherwise (all in f32);
/// returns `o` `[T, nv, dv]` (normed when `norm` is given, in `v`'s dtype) and the new state.
pub fn reference<B: Backend>(x: DeltaRule<B>, norm: Option<GatedNorm<B>>) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let dtype = x.v.dtype();
    let (o, state) = if x.q.dims()[0] == 1 { recurrent(x) } else { chunked(x) };
    let o = match norm {
        Some(norm) => gated_rms_norm(o, norm),
        None => o,
    };
    (o.cast(dtype), state)
}

/// The gated RMSNorm of `o` `[T, nv, dv]` in f32.
pub fn gated_rms_norm<B: Backend>(o: Tensor<B, 3>, norm: GatedNorm<B>) -> Tensor<B, 3> {
    let o = f32_of(o);
    let o = o.clone() * (o.powi_scalar(2).mean_dim(2) + norm.eps).sqrt().recip();
    let w = f32_of(norm.weight).unsqueeze::<3>();
    crate::act::reference(f32_of(norm.z), Act::Silu, Some(o * w))
}

pub(crate) fn f32_of<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if x.dtype() == DType::F32 { x } else { x.cast(DType::F32) }
}

/// `q`, `k`, `v` head-major `[nv, T, d]` and every input in f32, for the batched-over-heads forms.
fn head_major<B: Backend>(x: DeltaRule<B>) -> ([Tensor<B, 3>; 3], [Tensor<B, 2>; 2], Tensor<B, 3>) {
    let [q, k, v] = [x.q, x.k, x.v].map(|t| f32_of(t).swap_dims(0, 1));
    ([q, k, v], [f32_of(x.g), f32_of(x.beta)], f32_of(x.state))
}

/// Token-by-token recurrence (decode and latent steps); `o` `[T, nv, dv]` in f32.
pub fn recurrent<B: Backend>(x: DeltaRule<B>) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let ([q, k, v], [g, beta], mut state) = head_major(x);
    let [nv, t_len, _dk] = q.dims();
    let dv = v.dims()[2];
    // [nv, T] → [nv, T, 1] before narrowing: reshaping a narrowed view to [nv, 1, 1] reads wrong
    // elements on burn 0.21's cubecl backends.
    let (g, beta) = (g.unsqueeze_dim::<3>(2), beta.unsqueeze_dim::<3>(2));
    let mut outs = Vec::with_capacity(t_len);
    for t in 0..t_len {
        let qt = q.clone().narrow(1, t, 1); // [nv, 1, dk]
        let kt = k.clone().narrow(1, t, 1); // [nv, 1, dk]
        let vt = v.clone().narrow(1, t, 1); // [nv, 1, dv]
        let decay = g.clone().narrow(1, t, 1).exp(); // [nv, 1, 1]
        let bt = beta.clone().narrow(1, t, 1); // [nv, 1, 1]
        state = state * decay;
        let kv = kt.clone().matmul(state.clone()); // [nv, 1, dv] = kᵀS
        let delta = (vt - kv) * bt; // [nv, 1, dv]
        state = state + kt.swap_dims(1, 2).matmul(delta); // k ⊗ δ: [nv, dk, dv]
        outs.push(qt.matmul(state.clone())); // [nv, 1, dv]
    }
    let o = if outs.len() == 1 { outs.pop().expect("one step") } else { Tensor::cat(outs, 1) };
    debug_assert_eq!(o.dims(), [nv, t_len, dv]);
    (o.swap_dims(0, 1), state)
}

/// Chunked WY form (chunk 64): equal to the recurrence up to rounding, O(T/64) sequential steps;
/// `o` `[T, nv, dv]` in f32.
pub fn chunked<B: Backend>(x: DeltaRule<B>) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let ([q, k, v], [g, beta], mut state) = head_major(x);
    let [nv, t_len, dk] = q.dims();
    let dv = v.dims()[2];
    let device = q.device();
    let n = t_len.div_ceil(CHUNK);
    let pad = n * CHUNK - t_len;
    // Zero padding: padded steps have k = v = β = g = 0, so they leave S unchanged.
    let pad3 = |x: Tensor<B, 3>, d: usize| {
        if pad == 0 { x } else { Tensor::cat(vec![x, Tensor::zeros([nv, pad, d], &device)], 1) }
    };
    let pad2 = |x: Tensor<B, 2>| {
        if pad == 0 { x } else { Tensor::cat(vec![x, Tensor::zeros([nv, pad], &device)], 1) }
    };
    let q = pad3(q, dk).reshape([nv, n, CHUNK, dk]);
    let k = pad3(k, dk).reshape([nv, n, CHUNK, dk]);
    let v = pad3(v, dv).reshape([nv, n, CHUNK, dv]);
    let beta = pad2(beta).reshape([nv, n, CHUNK, 1]);
    let gamma = pad2(g).reshape([nv, n, CHUNK]).cumsum(2); // within-chunk cumulative log-decay

    // D[i,j] = exp(γ_i − γ_j) for i ≥ j, 0 above the diagonal (zeroed before exp).
    // Burn masks are `true` where filled: `tril_mask(_, 0)` is true strictly above the diagonal.
    let upper = Tensor::<B, 2, Bool>::tril_mask([CHUNK, CHUNK], 0, &device).reshape([1, 1, CHUNK, CHUNK]);
    let diff = gamma.clone().unsqueeze_dim::<4>(3) - gamma.clone().unsqueeze_dim::<4>(2);
    let decay = diff.mask_fill(upper.clone(), 0.0).exp().mask_fill(upper.clone(), 0.0);

    let k_beta = k.clone() * beta.clone();
    let v_beta = v * beta;
    // A = −(β⊙K)Kᵀ ⊙ D, strictly lower; T̃ = (I − A)⁻¹ = Π_{s<6} (I + A^{2^s}) since A^64 = 0.
    let on_or_above = Tensor::<B, 2, Bool>::tril_mask([CHUNK, CHUNK], -1, &device).reshape([1, 1, CHUNK, CHUNK]);
    let a = (k_beta.clone().matmul(k.clone().swap_dims(2, 3)) * decay.clone()).neg().mask_fill(on_or_above, 0.0);
    let eye = Tensor::<B, 2>::eye(CHUNK, &device).reshape([1, 1, CHUNK, CHUNK]);
    let mut t_inv = eye.clone() + a.clone();
    let mut power = a;
    for _ in 1..CHUNK.trailing_zeros() {
        power = power.clone().matmul(power);
        t_inv = t_inv.clone() + t_inv.matmul(power.clone());
    }
    let u = t_inv.clone().matmul(v_beta); // [nv, n, C, dv]
    let w = t_inv.matmul(k_beta * gamma.clone().exp().unsqueeze_dim::<4>(3)); // [nv, n, C, dk]
    let qk = q.clone().matmul(k.clone().swap_dims(2, 3)) * decay; // causal, diagonal kept

    let mut outs = Vec::with_capacity(n);
    for c in 0..n {
        let at = |x: Tensor<B, 4>| x.narrow(1, c, 1).squeeze_dim::<3>(1);
        let (q_c, k_c, u_c, w_c, qk_c) = (at(q.clone()), at(k.clone()), at(u.clone()), at(w.clone()), at(qk.clone()));
        let g_c = gamma.clone().narrow(1, c, 1).swap_dims(1, 2); // [nv, C, 1]: γ per row
        let g_last = g_c.clone().narrow(1, CHUNK - 1, 1); // [nv, 1, 1]
        let v_new = u_c - w_c.matmul(state.clone()); // [nv, C, dv]
        let inter = (q_c * g_c.clone().exp()).matmul(state.clone());
        outs.push(inter + qk_c.matmul(v_new.clone()));
        let k_decayed = k_c * (g_last.clone() - g_c).exp(); // [nv, C, dk]
        state = state * g_last.exp() + k_decayed.swap_dims(1, 2).matmul(v_new);
    }
    let o = Tensor::cat(outs, 1).narrow(1, 0, t_len); // [nv, T, dv]
    (o.swap_dims(0, 1), state)
}
