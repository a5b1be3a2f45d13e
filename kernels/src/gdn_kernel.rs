//! cubecl kernel for the gated delta rule: one cube per value head, one unit per value column `j`,
//! which keeps its state column `S[:, j]` (dk f32 values) in registers across all T tokens, and
//! applies the layer's gated RMSNorm to each token's output row before writing it (a cube-wide sum
//! of squares). It serves decode (T = 1) and prefill alike, computes the exact recurrence, reads the
//! layer's token-major tensors as they are, and replaces ~10 tensor ops per token plus the norm's six.

use burn::tensor::{DType, Tensor};
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement, ops::numeric::empty_device_dtype};
use cubecl::prelude::{CubeCount, CubeDim};

use crate::cube::{Cube, f32_contiguous, tensor, unused};
use crate::gdn::{DeltaRule, GatedNorm, f32_of};

mod kernel {
use cubecl::prelude::*;

use crate::cube::cube_reduce;

#[cube(launch)]
pub fn gated_delta_rule_kernel<F: Float>(
    q: &Tensor<F>,             // [T, nv, dk], l2-normed and scaled
    k: &Tensor<F>,             // [T, nv, dk], l2-normed
    v: &Tensor<F>,             // [T, nv, dv]
    gates: &Tensor<F>,         // [2, nv, T]: log-decay g, then β
    state: &Tensor<F>,         // [nv, dk, dv]
    z: &Tensor<F>,             // [T, nv, dv] norm gate (read only when normed)
    w: &Tensor<F>,             // [dv] norm weight (read only when normed)
    out: &mut Tensor<F>,       // [T, nv, dv]
    state_out: &mut Tensor<F>, // [nv, dk, dv]
    #[comptime] dk: usize,
    #[comptime] normed: bool,
    #[comptime] units: usize,
    #[comptime] eps_bits: u32,
    #[define(F)] _dtype: StorageType,
) {
    let h = CUBE_POS_X as usize;
    let j = UNIT_POS_X as usize;
    let t_len = q.shape(0);
    let nv = q.shape(1);
    let dv = v.shape(2);
    // Units past dv (the cube is a power of two for the norm's sum) only join the sums.
    let active = j < dv;
    let mut shared = SharedMemory::<F>::new(units);
    let mut s = Array::<F>::new(dk);
    if active {
        for i in 0..dk {
            s[i] = state[(h * dk + i) * dv + j];
        }
    }
    for t in 0..t_len {
        let row = t * nv + h; // head h of token t in [T, nv, ·]
        let mut o = F::new(0.0);
        if active {
            let decay = F::exp(gates[h * t_len + t]);
            let mut kv = F::new(0.0);
            for i in 0..dk {
                s[i] *= decay;
                kv += s[i] * k[row * dk + i];
            }
            let delta = gates[(nv + h) * t_len + t] * (v[row * dv + j] - kv);
            for i in 0..dk {
                s[i] += k[row * dk + i] * delta;
                o += s[i] * q[row * dk + i];
            }
        }
        if normed {
            let mean_square = cube_reduce(&mut shared, o * o, false) / F::cast_from(dv as u32);
            let scale = F::new(1.0) / F::sqrt(mean_square + F::new(comptime!(f32::from_bits(eps_bits))));
            if active {
                let gate = z[row * dv + j];
                out[row * dv + j] = w[j] * o * scale * gate / (F::new(1.0) + F::exp(-gate));
            }
        } else if active {
            out[row * dv + j] = o;
        }
    }
    if active {
        for i in 0..dk {
            state_out[(h * dk + i) * dv + j] = s[i];
        }
    }
}
}

/// Launches the kernel on contiguous f32 copies of the inputs; returns `o` `[T, nv, dv]` (in `v`'s
/// dtype) and the f32 state.
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
    let dtype = x.v.dtype();
    let [t_len, nv, dk] = x.q.dims();
    let dv = x.v.dims()[2];
    let [q, k, v, state] = [x.q, x.k, x.v, x.state].map(f32_contiguous);
    // g and β share one binding: WebGPU allows 10 storage buffers per shader stage, and cubecl's
    // metadata takes one.
    let gates = f32_contiguous(Tensor::stack::<3>(vec![f32_of(x.g), f32_of(x.beta)], 0)); // [2, nv, T]
    let (normed, eps) = (norm.is_some(), norm.as_ref().map_or(0.0, |n| n.eps as f32));
    let (z, w) = match norm {
        Some(n) => (f32_contiguous(n.z), f32_contiguous(n.weight)),
        None => (unused(&q), unused(&q)),
    };
    let client = q.client.clone();
    let out = empty_device_dtype(client.clone(), q.device.clone(), [t_len, nv, dv].into(), DType::F32);
    let state_out = empty_device_dtype(client.clone(), q.device.clone(), [nv, dk, dv].into(), DType::F32);
    let units = dv.next_power_of_two();
    kernel::gated_delta_rule_kernel::launch::<R>(
        &client,
        CubeCount::Static(nv as u32, 1, 1),
        CubeDim::new_1d(units as u32),
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        gates.into_tensor_arg(),
        state.into_tensor_arg(),
        z.into_tensor_arg(),
        w.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        state_out.clone().into_tensor_arg(),
        dk,
        normed,
        units,
        eps.to_bits(),
        DType::F32.into(),
    );
    (tensor::<R, F, I, BT, 3>(out).cast(dtype), tensor(state_out))
}
