//! cubecl kernels of the activations (times their gate), the attention softmax and RMSNorm: one pass
//! (the activations and softmax in the tensors' own dtype, RMSNorm in f32) instead of burn's several
//! ops (its sigmoid alone is five, the norm seven).

use burn::tensor::{DType, Tensor};
use burn_cubecl::{
    BoolElement, CubeRuntime, FloatElement, IntElement, kernel::into_contiguous, ops::numeric::empty_device_dtype,
};
use cubecl::prelude::{CubeCount, CubeDim};

use crate::Act;
use crate::cube::{Cube, ELEM_UNITS, MAX_CUBES, ROW_UNITS, elementwise_cubes, f32_contiguous, tensor, unused};

mod kernel {
    use cubecl::prelude::*;

    use crate::cube::cube_reduce;

    /// `act(x)` for the activation code `act` (see [`super::code`]).
    #[cube]
    fn activation<F: Float>(x: F, #[comptime] act: u32) -> F {
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
        x: &Tensor<F>,       // any shape, contiguous
        by: &Tensor<F>,      // x's shape (read only when gated)
        out: &mut Tensor<F>, // x's shape
        #[comptime] act: u32,
        #[comptime] gated: bool,
        #[define(F)] _dtype: StorageType,
    ) {
        let n = x.len();
        let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
        let mut i = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
        while i < n {
            let y = activation::<F>(x[i], act);
            if gated {
                out[i] = y * by[i];
            } else {
                out[i] = y;
            }
            i += step;
        }
    }

    /// The maximum (or with `squares` the sum of squares) of `x[base..base + width]` over the cube.
    #[cube]
    fn row_reduce<F: Float>(
        x: &Tensor<F>,
        base: usize,
        width: usize,
        shared: &mut SharedMemory<F>,
        #[comptime] units: usize,
        #[comptime] squares: bool,
    ) -> F {
        let mut acc = F::min_value();
        if squares {
            acc = F::new(0.0);
        }
        let mut j = UNIT_POS_X as usize;
        while j < width {
            let v = x[base + j];
            if squares {
                acc += v * v;
            } else {
                acc = max(acc, v);
            }
            j += units;
        }
        cube_reduce(shared, acc, comptime!(!squares))
    }

    #[cube(launch)]
    pub fn softmax_kernel<F: Float>(
        x: &Tensor<F>,       // [rows, width] contiguous
        out: &mut Tensor<F>, // [rows, width]
        #[comptime] units: usize,
        #[define(F)] _dtype: StorageType,
    ) {
        let u = UNIT_POS_X as usize;
        let width = x.shape(x.rank() - 1);
        let rows = x.len() / width;
        let mut shared = SharedMemory::<F>::new(units);
        let mut row = CUBE_POS_X as usize;
        while row < rows {
            let base = row * width;
            let m = row_reduce(x, base, width, &mut shared, units, false);
            let mut sum = F::new(0.0);
            let mut j = u;
            while j < width {
                let e = F::exp(x[base + j] - m);
                out[base + j] = e;
                sum += e;
                j += units;
            }
            let scale = F::new(1.0) / cube_reduce(&mut shared, sum, false);
            j = u;
            while j < width {
                out[base + j] *= scale;
                j += units;
            }
            row += CUBE_COUNT_X as usize;
        }
    }

    #[cube(launch)]
    pub fn rms_norm_kernel<F: Float>(
        x: &Tensor<F>,       // [rows, width] contiguous
        scale: &Tensor<F>,   // [width]
        out: &mut Tensor<F>, // [rows, width]
        #[comptime] units: usize,
        #[comptime] eps_bits: u32,
        #[define(F)] _dtype: StorageType,
    ) {
        let u = UNIT_POS_X as usize;
        let width = x.shape(x.rank() - 1);
        let rows = x.len() / width;
        let mut shared = SharedMemory::<F>::new(units);
        let mut row = CUBE_POS_X as usize;
        while row < rows {
            let base = row * width;
            let mean_square = row_reduce(x, base, width, &mut shared, units, true) / F::cast_from(width as u32);
            let inv = F::new(1.0) / F::sqrt(mean_square + F::new(comptime!(f32::from_bits(eps_bits))));
            let mut j = u;
            while j < width {
                out[base + j] = x[base + j] * inv * scale[j];
                j += units;
            }
            row += CUBE_COUNT_X as usize;
        }
    }
}

/// The kernel's code for `act`.
fn code(act: Act) -> u32 {
    match act {
        Act::Silu => 0,
        Act::Sigmoid => 1,
        Act::GeluTanh => 2,
    }
}

/// [`crate::act::reference`] as one kernel launch, in `x`'s dtype.
pub fn activate<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement, const D: usize>(
    x: Tensor<Cube<R, F, I, BT>, D>,
    act: Act,
    by: Option<Tensor<Cube<R, F, I, BT>, D>>,
) -> Tensor<Cube<R, F, I, BT>, D> {
    if by.as_ref().is_some_and(|b| b.dims() != x.dims() || b.dtype() != x.dtype()) {
        return crate::act::reference(x, act, by);
    }
    let (dtype, n) = (x.dtype(), x.shape().num_elements());
    let x = into_contiguous(x.into_primitive().tensor());
    let gated = by.is_some();
    let by = by.map_or_else(|| unused(&x), |b| into_contiguous(b.into_primitive().tensor()));
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

/// Softmax over the last axis as one kernel launch (one cube per row), in `x`'s dtype.
pub fn softmax<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement, const D: usize>(
    x: Tensor<Cube<R, F, I, BT>, D>,
) -> Tensor<Cube<R, F, I, BT>, D> {
    let (dtype, n) = (x.dtype(), x.shape().num_elements());
    let rows = n / x.dims()[D - 1].max(1);
    let x = into_contiguous(x.into_primitive().tensor());
    let out = empty_device_dtype(x.client.clone(), x.device.clone(), x.meta.shape().clone(), dtype);
    if n > 0 {
        kernel::softmax_kernel::launch::<R>(
            &x.client.clone(),
            CubeCount::Static(rows.min(MAX_CUBES) as u32, 1, 1),
            CubeDim::new_1d(ROW_UNITS as u32),
            x.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            ROW_UNITS,
            dtype.into(),
        );
    }
    tensor(out)
}

/// [`crate::norm::rms_norm`] as one kernel launch (a cube per row, up to [`MAX_CUBES`]) in f32.
pub fn rms_norm<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement, const D: usize>(
    x: Tensor<Cube<R, F, I, BT>, D>,
    scale: Tensor<Cube<R, F, I, BT>, 1>,
    eps: f64,
) -> Tensor<Cube<R, F, I, BT>, D> {
    let (dtype, n) = (x.dtype(), x.shape().num_elements());
    let rows = n / x.dims()[D - 1].max(1);
    let (x, scale) = (f32_contiguous(x), f32_contiguous(scale));
    let out = empty_device_dtype(x.client.clone(), x.device.clone(), x.meta.shape().clone(), DType::F32);
    if n > 0 {
        kernel::rms_norm_kernel::launch::<R>(
            &x.client.clone(),
            CubeCount::Static(rows.min(MAX_CUBES) as u32, 1, 1),
            CubeDim::new_1d(ROW_UNITS as u32),
            x.into_tensor_arg(),
            scale.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            ROW_UNITS,
            (eps as f32).to_bits(),
            DType::F32.into(),
        );
    }
    tensor::<R, F, I, BT, D>(out).cast(dtype)
}
