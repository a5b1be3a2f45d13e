//! cubecl kernel for the gated delta rule: one cube per value head, one unit per value column `j`,
//! which keeps its state column `S[:, j]` (dk f32 values) in registers across all T tokens. It serves
//! decode (T = 1) and prefill alike, computes the exact recurrence, and replaces ~10 tensor ops per token.

use burn::tensor::{DType, Tensor};
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement, ops::numeric::empty_device_dtype};
use cubecl::prelude::{CubeCount, CubeDim};

use crate::cube::{Cube, f32_contiguous, tensor};

mod kernel {
use cubecl::prelude::*;

#[cube(launch)]
pub fn gated_delta_rule_kernel<F: Float>(
    q: &Tensor<F>,             // [nv, T, dk], l2-normed and scaled
    k: &Tensor<F>,             // [nv, T, dk], l2-normed
    v: &Tensor<F>,             // [nv, T, dv]
    g: &Tensor<F>,             // [nv, T] log-decay
    beta: &Tensor<F>,          // [nv, T]
    state: &Tensor<F>,         // [nv, dk, dv]
    out: &mut Tensor<F>,       // [nv, T, dv]
    state_out: &mut Tensor<F>, // [nv, dk, dv]
    #[comptime] dk: usize,
    #[define(F)] _dtype: StorageType,
) {
    let h = CUBE_POS_X as usize;
    let j = UNIT_POS_X as usize;
    let t_len = q.shape(1);
    let dv = v.shape(2);
    if j < dv {
        let mut s = Array::<F>::new(dk);
        for i in 0..dk {
            s[i] = state[(h * dk + i) * dv + j];
        }
        for t in 0..t_len {
            let row = h * t_len + t;
            let decay = F::exp(g[row]);
            let mut kv = F::new(0.0);
            for i in 0..dk {
                s[i] *= decay;
                kv += s[i] * k[row * dk + i];
            }
            let delta = beta[row] * (v[row * dv + j] - kv);
            let mut o = F::new(0.0);
            for i in 0..dk {
                s[i] += k[row * dk + i] * delta;
                o += s[i] * q[row * dk + i];
            }
            out[row * dv + j] = o;
        }
        for i in 0..dk {
            state_out[(h * dk + i) * dv + j] = s[i];
        }
    }
}
}

/// Launches the kernel on contiguous f32 copies of the inputs; returns `o` (input dtype) and the f32 state.
pub fn gated_delta_rule<R, F, I, BT>(
    q: Tensor<Cube<R, F, I, BT>, 3>,
    k: Tensor<Cube<R, F, I, BT>, 3>,
    v: Tensor<Cube<R, F, I, BT>, 3>,
    g: Tensor<Cube<R, F, I, BT>, 2>,
    beta: Tensor<Cube<R, F, I, BT>, 2>,
    state: Tensor<Cube<R, F, I, BT>, 3>,
) -> (Tensor<Cube<R, F, I, BT>, 3>, Tensor<Cube<R, F, I, BT>, 3>)
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let dtype = v.dtype();
    let [nv, t_len, dk] = q.dims();
    let dv = v.dims()[2];
    let (q, k, v, state) = (f32_contiguous(q), f32_contiguous(k), f32_contiguous(v), f32_contiguous(state));
    let (g, beta) = (f32_contiguous(g), f32_contiguous(beta));
    let client = q.client.clone();
    let out = empty_device_dtype(client.clone(), q.device.clone(), [nv, t_len, dv].into(), DType::F32);
    let state_out = empty_device_dtype(client.clone(), q.device.clone(), [nv, dk, dv].into(), DType::F32);
    kernel::gated_delta_rule_kernel::launch::<R>(
        &client,
        CubeCount::Static(nv as u32, 1, 1),
        CubeDim::new_1d(dv as u32),
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        g.into_tensor_arg(),
        beta.into_tensor_arg(),
        state.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        state_out.clone().into_tensor_arg(),
        dk,
        DType::F32.into(),
    );
    (tensor::<R, F, I, BT, 3>(out).cast(dtype), tensor(state_out))
}
