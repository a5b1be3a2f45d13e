//! cubecl kernel for the gated delta rule: one cube per value head, one unit per value column `j`,
//! which keeps its state column `S[:, j]` (dk f32 values) in registers across all T tokens, and
//! applies the layer's gated RMSNorm to each token's output row before writing it (a cube-wide sum
//! of squares). It serves decode (T = 1) and prefill alike, computes the exact recurrence, reads the
//! layer's conv output and raw gate projections as they are (the q/k l2 norms, q's scale, the
//! key-head sharing and the gates' softplus/sigmoid folded in) and replaces ~10 tensor ops per
//! token, the q/k preparation's ~15, the gates' ~10 and the norm's six.

use burn::tensor::{DType, Tensor};
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement, ops::numeric::empty_device_dtype};
use cubecl::prelude::{CubeCount, CubeDim};

use crate::cube_common::{Cube, contiguous, f32_contiguous, tensor, unused};
use crate::gdn::{DeltaRule, GatedNorm};

mod kernel {
    use cubecl::prelude::*;

    use crate::cube_common::cube_reduce;

    #[cube(launch)]
    pub fn gated_delta_rule_kernel<F: Float>(
        qkv: &Tensor<F>,             // [T, nk·dk ‖ nk·dk ‖ nv·dv]: raw q, k and v of each token
        ab: &Tensor<F>,              // [T, 2·nv]: per token the raw gates a, then b
        decay: &Tensor<f32>,         // [2, nv]: dt_bias, then −exp(A_log)
        state: &Tensor<f32>,         // [nv, dk, dv]
        z: &Tensor<F>,               // [T, nv, dv] norm gate (read only when normed)
        w: &Tensor<f32>,             // [dv] norm weight (read only when normed)
        out: &mut Tensor<F>,         // [T, nv, dv]
        state_out: &mut Tensor<f32>, // [nv, dk, dv]
        #[comptime] dk: usize,
        #[comptime] normed: bool,
        #[comptime] units: usize,
        #[comptime] eps_bits: u32,
        #[define(F)] _dtype: StorageType,
    ) {
        let h = CUBE_POS_X as usize;
        let j = UNIT_POS_X as usize;
        let t_len = qkv.shape(0);
        let width = qkv.shape(1);
        let nv = state.shape(0);
        let dv = state.shape(2);
        let nk = (width - nv * dv) / (2 * dk);
        // Value head h reads key head h / (nv/nk); offsets of its q, k and v within a token's row.
        let kh = h / (nv / nk);
        let q0 = kh * dk;
        let k0 = (nk + kh) * dk;
        let v0 = 2 * nk * dk + h * dv;
        let l2_eps = comptime!(crate::gdn::L2_EPS as f32);
        let q_scale = 1.0f32 / f32::sqrt(f32::cast_from(dk as u32));
        // Units past dv (the cube is a power of two for the norm's sum) only join the sums.
        let active = j < dv;
        let mut shared = SharedMemory::<f32>::new(units);
        let mut s = Array::<f32>::new(dk);
        if active {
            for i in 0..dk {
                s[i] = state[(h * dk + i) * dv + j];
            }
        }
        for t in 0..t_len {
            let base = t * width;
            let row = t * nv + h; // head h of token t in [T, nv, ·]
            let mut o = 0.0f32;
            if active {
                // The raw k and q: their l2 norms scale the scalars they produce.
                // exp(g) and β from the raw gates (see `gdn::gates`).
                let a = f32::cast_from(ab[t * 2 * nv + h]) + decay[h];
                let softplus = max(a, 0.0f32) + f32::log1p(f32::exp(-f32::abs(a)));
                let decay_t = f32::exp(decay[nv + h] * softplus);
                let beta = 1.0f32 / (1.0f32 + f32::exp(-f32::cast_from(ab[t * 2 * nv + nv + h])));
                let mut kv = 0.0f32;
                let mut kk = 0.0f32;
                for i in 0..dk {
                    let ki = f32::cast_from(qkv[base + k0 + i]);
                    s[i] *= decay_t;
                    kv += s[i] * ki;
                    kk += ki * ki;
                }
                let k_scale = 1.0f32 / f32::sqrt(kk + l2_eps);
                let delta = beta * (f32::cast_from(qkv[base + v0 + j]) - kv * k_scale) * k_scale;
                let mut qq = 0.0f32;
                for i in 0..dk {
                    let qi = f32::cast_from(qkv[base + q0 + i]);
                    s[i] += f32::cast_from(qkv[base + k0 + i]) * delta;
                    o += s[i] * qi;
                    qq += qi * qi;
                }
                o *= q_scale / f32::sqrt(qq + l2_eps);
            }
            if normed {
                let mean_square = cube_reduce(&mut shared, o * o, false) / f32::cast_from(dv as u32);
                let scale = 1.0f32 / f32::sqrt(mean_square + comptime!(f32::from_bits(eps_bits)));
                if active {
                    let gate = f32::cast_from(z[row * dv + j]);
                    out[row * dv + j] = F::cast_from(w[j] * o * scale * gate / (1.0f32 + f32::exp(-gate)));
                }
            } else if active {
                out[row * dv + j] = F::cast_from(o);
            }
        }
        if active {
            for i in 0..dk {
                state_out[(h * dk + i) * dv + j] = s[i];
            }
        }
    }
}

/// Launches the kernel on the contiguous inputs, the projections (`qkv`, `ab`, `z`) in their own
/// dtype and the rest in f32; returns `o` `[T, nv, dv]` (in `qkv`'s dtype) and the f32 state.
pub fn gated_delta_rule<R, F, I, BT>(
    x: DeltaRule<Cube<R, F, I, BT>>,
    norm: Option<GatedNorm<Cube<R, F, I, BT>>>,
) -> (Tensor<Cube<R, F, I, BT>, 3>, Tensor<Cube<R, F, I, BT>, 3>)
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let dtype = x.qkv.dtype();
    let [_, nv, dk, dv] = x.heads();
    let t_len = x.qkv.dims()[0];
    // The gates and the norm's gate in `qkv`'s dtype (the projection gives them all in one).
    let projected = |t: Tensor<Cube<R, F, I, BT>, 2>| {
        contiguous(if t.dtype() == dtype { t } else { t.cast(dtype) }.into_primitive().tensor())
    };
    let (qkv, state) = (projected(x.qkv), f32_contiguous(x.state));
    let (ab, decay) = (projected(x.ab), f32_contiguous(x.decay));
    let (normed, eps) = (norm.is_some(), norm.as_ref().map_or(0.0, |n| n.eps as f32));
    let (z, w) = match norm {
        Some(n) => (projected(n.z), f32_contiguous(n.weight)),
        None => (unused(&qkv), unused(&qkv)),
    };
    let client = qkv.client.clone();
    let out = empty_device_dtype(client.clone(), qkv.device.clone(), [t_len, nv, dv].into(), dtype);
    let state_out = empty_device_dtype(client.clone(), qkv.device.clone(), [nv, dk, dv].into(), DType::F32);
    let units = dv.next_power_of_two();
    kernel::gated_delta_rule_kernel::launch::<R>(
        &client,
        CubeCount::Static(nv as u32, 1, 1),
        CubeDim::new_1d(units as u32),
        qkv.into_tensor_arg(),
        ab.into_tensor_arg(),
        decay.into_tensor_arg(),
        state.into_tensor_arg(),
        z.into_tensor_arg(),
        w.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        state_out.clone().into_tensor_arg(),
        dk,
        normed,
        units,
        eps.to_bits(),
        dtype.into(),
    );
    (tensor(out), tensor(state_out))
}
