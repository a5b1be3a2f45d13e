//! Gated DeltaNet recurrence (Qwen3.5 linear-attention layers), per value head `h`:
//! `S ← exp(g_t)·S;  S ← S + k_t ⊗ β_t(v_t − Sᵀk_t);  o_t = Sᵀq_t`, with `S ∈ R^{dk×dv}` kept in f32,
//! `q_t`, `k_t` l2-normalised (q also scaled by `dk^-½`) and shared by `nv/nk` value heads, the gates
//! `g_t`, `β_t` computed from the layer's raw projections (see [`gates`]), and optionally followed by
//! the layer's gated RMSNorm of each `o_t`.

use burn::tensor::{Bool, Tensor, backend::Backend};

use crate::{Act, RmasBackend, f32_of};

pub(crate) mod cpu;
pub(crate) mod cube;

/// Chunk length of the chunked (WY) form used for multi-token prefill.
pub const CHUNK: usize = 64;

/// The inputs of one gated-delta-rule call, token-major as a Qwen3.5 layer computes them.
#[derive(Clone, Debug)]
pub struct DeltaRule<B: Backend> {
    /// Each token's raw queries, keys and values `[T, nk·dk ‖ nk·dk ‖ nv·dv]` (the layer's conv
    /// output): q and k are l2-normalised here and q scaled by `dk^-½`; value head `h` reads key head
    /// `h / (nv/nk)`; the values' dtype is the output's.
    pub qkv: Tensor<B, 2>,
    /// The gates' raw inputs `[T, 2·nv]` (any strides): per token `a` (log-decay), then `b` (write
    /// strength), as the layer's fused input projection lays them out; see [`gates`].
    pub ab: Tensor<B, 2>,
    /// The gates' per-head parameters `[2, nv]`: `dt_bias`, then `−exp(A_log)`.
    pub decay: Tensor<B, 2>,
    /// The state before the first token, f32 `[nv, dk, dv]`.
    pub state: Tensor<B, 3>,
}

impl<B: Backend> DeltaRule<B> {
    /// `[nk, nv, dk, dv]`: key heads (from `qkv`'s width), value heads and head widths (from `state`).
    pub fn heads(&self) -> [usize; 4] {
        let [nv, dk, dv] = self.state.dims();
        let width = self.qkv.dims()[1];
        let nk = width.saturating_sub(nv * dv) / (2 * dk).max(1);
        assert!(
            2 * nk * dk + nv * dv == width && nk > 0 && nv % nk == 0,
            "qkv width {width} is not 2·nk·{dk} + {nv}·{dv} with {nv} value heads a multiple of nk"
        );
        [nk, nv, dk, dv]
    }
}

/// The l2 norm's `ε` (added to the sum of squares), as in Qwen3.5's `use_qk_l2norm_in_kernel`.
pub const L2_EPS: f64 = 1e-6;

/// The gated RMSNorm applied to each head's output: `w · o / rms(o) · silu(z)`.
#[derive(Clone, Debug)]
pub struct GatedNorm<B: Backend> {
    /// Gate `[T, nv·dv]` (head-major within a token, any strides).
    pub z: Tensor<B, 2>,
    /// Weight `[dv]`.
    pub weight: Tensor<B, 1>,
    /// Added to the mean square.
    pub eps: f64,
}

/// Tensor-op reference: the recurrent form for one token, the chunked form otherwise (all in f32);
/// returns `o` `[T, nv, dv]` (normed when `norm` is given, in `qkv`'s dtype) and the new state.
pub fn reference<B: Backend>(x: DeltaRule<B>, norm: Option<GatedNorm<B>>) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let dtype = x.qkv.dtype();
    let (o, state) = if x.qkv.dims()[0] == 1 { recurrent(x) } else { chunked(x) };
    let o = match norm {
        Some(norm) => gated_rms_norm(o, norm),
        None => o,
    };
    (o.cast(dtype), state)
}

/// The layer's causal conv + SiLU over the raw projection `x.qkv` with `conv` (state `[K−1, C]`,
/// weight `[K, C]`), then the delta rule over its output: the composition
/// [`RmasBackend::conv_delta_rule`] stands for; returns `o`, the state and the new conv state.
#[allow(clippy::type_complexity)]
pub fn conv_delta_rule<B: RmasBackend>(
    x: DeltaRule<B>,
    (state, weight): (Tensor<B, 2>, Tensor<B, 2>),
    norm: Option<GatedNorm<B>>,
) -> (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 2>) {
    let (qkv, conv_state) = B::causal_conv_silu(x.qkv, state, weight);
    let (o, ssm) = B::gated_delta_rule(DeltaRule { qkv, ..x }, norm);
    (o, ssm, conv_state)
}

/// The gated RMSNorm of `o` `[T, nv, dv]` in f32.
pub fn gated_rms_norm<B: Backend>(o: Tensor<B, 3>, norm: GatedNorm<B>) -> Tensor<B, 3> {
    let o = f32_of(o);
    let o = o.clone() * (o.powi_scalar(2).mean_dim(2) + norm.eps).sqrt().recip();
    let w = f32_of(norm.weight).unsqueeze::<3>();
    let z = f32_of(norm.z).reshape(o.dims()); // [T, nv·dv] → [T, nv, dv]
    crate::act::reference(z, Act::Silu, Some(o * w))
}

/// The log-decay `g = −exp(A_log)·softplus(a + dt_bias)` (≤ 0) and the write strength `β = σ(b)`,
/// each `[nv, T]` in f32, of the raw gate inputs `ab` `[T, 2·nv]` and `decay` `[2, nv]`.
pub fn gates<B: Backend>(ab: Tensor<B, 2>, decay: Tensor<B, 2>) -> [Tensor<B, 2>; 2] {
    let nv = ab.dims()[1] / 2;
    let (ab, decay) = (f32_of(ab).transpose(), f32_of(decay)); // ab: [2·nv, T]
    let gate = |i: usize| ab.clone().narrow(0, i * nv, nv); // [nv, T]
    let param = |i: usize| decay.clone().narrow(0, i, 1).reshape([nv, 1]);
    let g = softplus(gate(0) + param(0)) * param(1);
    [g, crate::act::reference(gate(1), Act::Sigmoid, None)]
}

/// `log(1 + eˣ)` without overflow: `max(x, 0) + log1p(e^{−|x|})`.
fn softplus<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    x.clone().clamp_min(0.0) + x.abs().neg().exp().log1p()
}

/// `q`, `k` (l2-normed, q scaled, repeated to nv heads) and `v` head-major `[nv, T, d]`, the gates
/// `[g, β]` and the state, all in f32, for the batched-over-heads forms.
fn head_major<B: Backend>(x: DeltaRule<B>) -> ([Tensor<B, 3>; 3], [Tensor<B, 2>; 2], Tensor<B, 3>) {
    let [nk, nv, dk, dv] = x.heads();
    let t = x.qkv.dims()[0];
    let qkv = f32_of(x.qkv);
    let heads = |start: usize, n: usize, d: usize| qkv.clone().narrow(1, start, n * d).reshape([t, n, d]);
    let l2 = |x: Tensor<B, 3>| x.clone() * (x.powi_scalar(2).sum_dim(2) + L2_EPS).sqrt().recip();
    // Value head h reads key head h / (nv/nk): [T, nk, dk] → [T, nk, rep, dk] → [T, nv, dk].
    let repeat = |x: Tensor<B, 3>| x.unsqueeze_dim::<4>(2).expand([t, nk, nv / nk, dk]).reshape([t, nv, dk]);
    let q = repeat(l2(heads(0, nk, dk)) * (dk as f64).powf(-0.5));
    let k = repeat(l2(heads(nk * dk, nk, dk)));
    let v = heads(2 * nk * dk, nv, dv);
    let [q, k, v] = [q, k, v].map(|x| x.swap_dims(0, 1));
    ([q, k, v], gates(x.ab, x.decay), f32_of(x.state))
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
    let g = pad2(g).reshape([nv, n, CHUNK]);
    let gamma = g.clone().cumsum(2); // within-chunk cumulative log-decay γ_i = Σ_{s≤i} g_s

    // Burn masks are `true` where filled: `tril_mask(_, 0)` is true strictly above the diagonal.
    let upper = Tensor::<B, 2, Bool>::tril_mask([CHUNK, CHUNK], 0, &device).reshape([1, 1, CHUNK, CHUNK]);
    // seg[j, i] = γ_i − γ_j = Σ_{j<s≤i} g_s (0 for i ≤ j), summed from zero rather than subtracted:
    // γ reaches tens of thousands under strong decay, where its f32 differences lose their digits.
    let seg = g.unsqueeze_dim::<4>(2).expand([nv, n, CHUNK, CHUNK]).mask_fill(upper.clone().bool_not(), 0.0).cumsum(3); // [nv, n, C(j), C(i)]
    // D[i,j] = exp(γ_i − γ_j) for i ≥ j, 0 above the diagonal.
    let decay = seg.clone().swap_dims(2, 3).exp().mask_fill(upper.clone(), 0.0);
    let to_end = seg.narrow(3, CHUNK - 1, 1); // [nv, n, C, 1]: γ_last − γ_j

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
        let inter = (q_c * g_c.exp()).matmul(state.clone());
        outs.push(inter + qk_c.matmul(v_new.clone()));
        let k_decayed = k_c * at(to_end.clone()).exp(); // [nv, C, dk]
        state = state * g_last.exp() + k_decayed.swap_dims(1, 2).matmul(v_new);
    }
    let o = Tensor::cat(outs, 1).narrow(1, 0, t_len); // [nv, T, dv]
    (o.swap_dims(0, 1), state)
}
