//! cubecl kernel of the causal depthwise convolution + SiLU: one grid-stride pass that writes each
//! output and the new state, instead of a concatenation, K products, K − 1 sums and the SiLU.

use burn::tensor::Tensor;
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement, ops::numeric::empty_device_dtype};
use cubecl::prelude::CubeDim;

use crate::cube_common::{Cube, ELEM_UNITS, contiguous, elementwise_cubes, tensor};

pub(crate) mod kernel {
    use cubecl::prelude::*;

    /// Element `(r, ch)` of the window `[state ‖ x]`.
    #[cube]
    pub(crate) fn window<F: Float>(x: &Tensor<F>, state: &Tensor<F>, r: usize, ch: usize) -> F {
        let lag = state.shape(0);
        let c = x.shape(1);
        if r < lag { state[r * c + ch] } else { x[(r - lag) * c + ch] }
    }

    /// Output `(t, ch)`: channel `ch`'s taps over window rows `t..t + K`, then SiLU, in `F` (the
    /// delta-rule kernel computes its inputs with it, so that both give the same bits).
    #[cube]
    pub(crate) fn conv_silu_at<F: Float>(
        x: &Tensor<F>,
        state: &Tensor<F>,
        weight: &Tensor<F>,
        t: usize,
        ch: usize,
    ) -> F {
        let c = x.shape(1);
        let mut acc = F::new(0.0);
        for j in 0..weight.shape(0) {
            acc += weight[j * c + ch] * window(x, state, t + j, ch);
        }
        acc / (F::new(1.0) + F::exp(-acc))
    }

    #[cube(launch)]
    pub fn causal_conv_silu_kernel<F: Float>(
        x: &Tensor<F>,             // [T, C]
        state: &Tensor<F>,         // [K−1, C]
        weight: &Tensor<F>,        // [K, C]
        out: &mut Tensor<F>,       // [T, C]
        state_out: &mut Tensor<F>, // [K−1, C]
        #[define(F)] _dtype: StorageType,
    ) {
        let t_len = x.shape(0);
        let c = x.shape(1);
        let outputs = t_len * c;
        let n = outputs + state.len();
        let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
        let mut i = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
        while i < n {
            if i < outputs {
                out[i] = conv_silu_at(x, state, weight, i / c, i % c);
            } else {
                // Row r of the new state is window row T + r.
                let e = i - outputs;
                state_out[e] = window(x, state, t_len + e / c, e % c);
            }
            i += step;
        }
    }
}

/// [`crate::conv::causal_conv_silu`] as one kernel launch in `x`'s dtype (inputs of one dtype, at
/// least two taps; the reference path otherwise).
pub fn causal_conv_silu<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    x: Tensor<Cube<R, F, I, BT>, 2>,
    state: Tensor<Cube<R, F, I, BT>, 2>,
    weight: Tensor<Cube<R, F, I, BT>, 2>,
) -> (Tensor<Cube<R, F, I, BT>, 2>, Tensor<Cube<R, F, I, BT>, 2>) {
    let ([t, c], [lag, _]) = (x.dims(), state.dims());
    let dtype = x.dtype();
    if lag == 0 || t == 0 || state.dtype() != dtype || weight.dtype() != dtype {
        return crate::conv::causal_conv_silu(x, state, weight);
    }
    let [x, state, weight] = [x, state, weight].map(|x| contiguous(x.into_primitive().tensor()));
    let (client, device) = (x.client.clone(), x.device.clone());
    let out = empty_device_dtype(client.clone(), device.clone(), [t, c].into(), dtype);
    let state_out = empty_device_dtype(client.clone(), device, [lag, c].into(), dtype);
    kernel::causal_conv_silu_kernel::launch::<R>(
        &client,
        elementwise_cubes((t + lag) * c),
        CubeDim::new_1d(ELEM_UNITS as u32),
        x.into_tensor_arg(),
        state.into_tensor_arg(),
        weight.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        state_out.clone().into_tensor_arg(),
        dtype.into(),
    );
    (tensor(out), tensor(state_out))
}
