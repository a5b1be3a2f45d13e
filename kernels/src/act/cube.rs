//! cubecl kernel of the activations (times their gate): one pass in the tensors' own dtype instead
//! of burn's several ops (its sigmoid alone is five).

use burn::tensor::Tensor;
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement, ops::numeric::empty_device_dtype};
use cubecl::prelude::CubeDim;

use crate::Act;
use crate::cube_common::{Cube, ELEM_UNITS, elementwise_cubes, tensor, unused};

pub(crate) mod kernel {
    use cubecl::prelude::*;

    use crate::cube_common::strided_offset;

    /// `act(x)` for the activation code `act` (see [`super::code`]).
    #[cube]
    pub(crate) fn activation<F: Float>(x: F, #[comptime] act: u32) -> F {
        // Each is m(x)·σ(s(x)): silu x·σ(x), sigmoid σ(x), gelu-tanh x·σ(2·√(2/π)·(x + 0.044715·x³)).
        let mut m = x;
        if comptime!(act == 1) {
            m = F::new(1.0);
        }
        let mut s = x;
        if comptime!(act == 2) {
            s = F::new(2.0 * 0.797_884_6) * (x + F::new(0.044715) * x * x * x);
        }
        m / (F::new(1.0) + F::exp(-s))
    }

    #[cube(launch)]
    pub fn activate_kernel<F: Float>(
        x: &Tensor<F>,       // any shape, any strides (views of a wider projection need no copy)
        by: &Tensor<F>,      // x's shape, any strides (read only when gated)
        out: &mut Tensor<F>, // x's shape, contiguous
        #[comptime] act: u32,
        #[comptime] gated: bool,
        #[define(F)] _dtype: StorageType,
    ) {
        let mut n = 1usize;
        for d in 0..out.rank() {
            n *= out.shape(d);
        }
        let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
        let mut i = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
        while i < n {
            let y = activation::<F>(x[strided_offset(x, i)], act);
            if gated {
                out[i] = y * by[strided_offset(by, i)];
            } else {
                out[i] = y;
            }
            i += step;
        }
    }
}

/// The kernel's code for `act`.
pub(crate) fn code(act: Act) -> u32 {
    match act {
        Act::Silu => 0,
        Act::Sigmoid => 1,
        Act::GeluTanh => 2,
    }
}

/// [`crate::act::reference`] as one kernel launch, in `x`'s dtype, reading strided views in place.
pub fn activate<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement, const D: usize>(
    x: Tensor<Cube<R, F, I, BT>, D>,
    act: Act,
    by: Option<Tensor<Cube<R, F, I, BT>, D>>,
) -> Tensor<Cube<R, F, I, BT>, D> {
    if by.as_ref().is_some_and(|b| b.dims() != x.dims() || b.dtype() != x.dtype()) {
        return crate::act::reference(x, act, by);
    }
    let (dtype, n) = (x.dtype(), x.shape().num_elements());
    let x = x.into_primitive().tensor();
    let gated = by.is_some();
    let by = by.map_or_else(|| unused(&x), |b| b.into_primitive().tensor());
    let out = empty_device_dtype(x.client.clone(), x.device.clone(), x.meta.shape().clone(), dtype);
    if n > 0 {
        kernel::activate_kernel::launch::<R>(
            &x.client.clone(),
            elementwise_cubes(n),
            CubeDim::new_1d(ELEM_UNITS as u32),
            x.into_tensor_arg(),
            by.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            code(act),
            gated,
            dtype.into(),
        );
    }
    tensor(out)
}
