//! The gated delta rule on the CPU: the exact recurrence, one value head per task.

use burn::backend::NdArray;
use burn::tensor::Tensor;
use rayon::prelude::*;

use crate::cpu_common::{dot, from_vec, standard, values, wide};
use crate::{Act, DeltaRule, GatedNorm};

/// The gated delta rule and norm of [`crate::RmasBackend::gated_delta_rule`] by the recurrence, one
/// value head per task.
pub fn gated_delta_rule(
    x: DeltaRule<NdArray>,
    norm: Option<GatedNorm<NdArray>>,
) -> (Tensor<NdArray, 3>, Tensor<NdArray, 3>) {
    let dtype = x.qkv.dtype();
    let [nk, nv, dk, dv] = x.heads();
    let [t_len, width] = x.qkv.dims();
    let (rep, q_scale) = (nv / nk, (dk as f32).powf(-0.5));
    let qkv = standard(x.qkv);
    let gates = [standard(x.ab), standard(x.decay)];
    let (qkv, [ab, params]) = (values(&qkv), gates.each_ref().map(values));
    let norm = norm.map(|n| ([n.z, n.weight.unsqueeze()].map(standard), n.eps as f32));
    let norm = norm.as_ref().map(|(zw, eps)| (zw.each_ref().map(values), *eps));
    let mut s = values(&standard(x.state)).to_vec();
    // Each head's outputs `[T, dv]`; interleaved into `[T, nv, dv]` below.
    let mut per_head = vec![0f32; nv * t_len * dv];
    per_head.par_chunks_mut(t_len * dv).zip(s.par_chunks_mut(dk * dv)).enumerate().for_each(|(h, (o, s))| {
        wide(|| {
            // 1/‖x‖ as the l2 norm of q and k computes it.
            fn inv_norm(x: &[f32]) -> f32 {
                1.0 / (dot(x, x) + crate::gdn::L2_EPS as f32).sqrt()
            }
            let kh = h / rep;
            let (mut kv, mut delta) = (vec![0f32; dv], vec![0f32; dv]);
            for t in 0..t_len {
                let row = &qkv[t * width..(t + 1) * width]; // [q ‖ k ‖ v] of token t
                let qt = &row[kh * dk..(kh + 1) * dk];
                let kt = &row[(nk + kh) * dk..(nk + kh + 1) * dk];
                let vt = &row[2 * nk * dk + h * dv..2 * nk * dk + (h + 1) * dv];
                // The raw k and q, with their norms applied to the scalars they produce.
                let (k_scale, q_scale) = (inv_norm(kt), q_scale * inv_norm(qt));
                // exp(g) and β from the raw gates (see `gdn::gates`).
                let a = ab[t * 2 * nv + h] + params[h];
                let decay = (params[nv + h] * (a.max(0.0) + (-a.abs()).exp().ln_1p())).exp();
                let b = 1.0 / (1.0 + (-ab[t * 2 * nv + nv + h]).exp());
                // kᵀS with the old state; the decayed state gives decay·kᵀS.
                kv.fill(0.0);
                for (ki, row) in kt.iter().zip(s.chunks_exact(dv)) {
                    kv.iter_mut().zip(row).for_each(|(a, r)| *a += ki * r);
                }
                let (kv_scale, write) = (decay * k_scale, b * k_scale);
                delta.iter_mut().zip(vt).zip(&kv).for_each(|((d, v), kv)| *d = (v - kv_scale * kv) * write);
                // S ← decay·S + k ⊗ δ and o = qᵀS in one pass over the rows of S.
                let ot = &mut o[t * dv..(t + 1) * dv];
                for ((ki, qi), row) in kt.iter().zip(qt).zip(s.chunks_exact_mut(dv)) {
                    for ((r, d), o) in row.iter_mut().zip(&delta).zip(ot.iter_mut()) {
                        *r = decay * *r + ki * d;
                        *o += qi * *r;
                    }
                }
                ot.iter_mut().for_each(|o| *o *= q_scale);
                if let Some(([z, w], eps)) = norm {
                    // w · o / rms(o) · silu(z), with `delta` as scratch.
                    let scale = 1.0 / (dot(ot, ot) / dv as f32 + eps).sqrt();
                    ot.iter_mut().zip(w).for_each(|(o, w)| *o *= scale * w);
                    delta.copy_from_slice(&z[(t * nv + h) * dv..(t * nv + h + 1) * dv]);
                    Act::Silu.apply(&mut delta, Some(ot));
                    ot.copy_from_slice(&delta);
                }
            }
        })
    });
    let o = if t_len == 1 {
        per_head // [1, nv, dv] already
    } else {
        let mut o = vec![0f32; nv * t_len * dv];
        o.par_chunks_mut(nv * dv).enumerate().for_each(|(t, row)| {
            for (h, out) in row.chunks_exact_mut(dv).enumerate() {
                out.copy_from_slice(&per_head[(h * t_len + t) * dv..(h * t_len + t + 1) * dv]);
            }
        });
        o
    };
    (from_vec(o, [t_len, nv, dv]).cast(dtype), from_vec(s, [nv, dk, dv]))
}
