//! cubecl kernels of latent fusion: the RecursiveLinks' LayerNorm (fused with the residual sum and the
//! projection bias) and bias + exact GELU, each one pass over the rows instead of 4–7 tensor ops.
//! They compute in f32 whatever the activation dtype.

use burn::tensor::{DType, Tensor};
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement, ops::numeric::empty_device_dtype};
use cubecl::prelude::{CubeCount, CubeDim};

use crate::cube_common::{Cube, ELEM_UNITS, MAX_CUBES, ROW_UNITS, elementwise_cubes, f32_contiguous, tensor, unused};

mod kernel {
    use cubecl::prelude::*;

    use crate::cube_common::cube_reduce;

    /// Element `j` of row `row` of `a + residual + bias`.
    #[cube]
    fn summed<F: Float>(
        a: &Tensor<F>,
        r: &Tensor<F>,
        bias: &Tensor<F>,
        row: usize,
        j: usize,
        d: usize,
        #[comptime] has_residual: bool,
        #[comptime] has_bias: bool,
    ) -> F {
        let mut x = a[row * d + j];
        if has_residual {
            x += r[row * d + j];
        }
        if has_bias {
            x += bias[j];
        }
        x
    }

    #[cube(launch)]
    pub fn layer_norm_sum_kernel<F: Float>(
        a: &Tensor<F>,       // [T, D]
        r: &Tensor<F>,       // [T, D] residual (read only when has_residual)
        bias: &Tensor<F>,    // [D] (read only when has_bias)
        gamma: &Tensor<F>,   // [D]
        beta: &Tensor<F>,    // [D]
        out: &mut Tensor<F>, // [T, D]
        #[comptime] has_residual: bool,
        #[comptime] has_bias: bool,
        #[comptime] units: usize,
        #[comptime] eps_bits: u32,
        #[define(F)] _dtype: StorageType,
    ) {
        let u = UNIT_POS_X as usize;
        let rows = a.shape(0);
        let d = a.shape(1);
        let mut shared = SharedMemory::<F>::new(units);
        // One cube per row, striding over the rows past the grid.
        let mut row = CUBE_POS_X as usize;
        while row < rows {
            let mut s = F::new(0.0);
            let mut j = u;
            while j < d {
                s += summed(a, r, bias, row, j, d, has_residual, has_bias);
                j += units;
            }
            let mean = cube_reduce(&mut shared, s, false) / F::cast_from(d as u32);
            let mut sq = F::new(0.0);
            j = u;
            while j < d {
                let c = summed(a, r, bias, row, j, d, has_residual, has_bias) - mean;
                sq += c * c;
                j += units;
            }
            let var = cube_reduce(&mut shared, sq, false) / F::cast_from(d as u32);
            let inv = F::new(1.0) / F::sqrt(var + F::new(comptime!(f32::from_bits(eps_bits))));
            j = u;
            while j < d {
                let c = summed(a, r, bias, row, j, d, has_residual, has_bias) - mean;
                out[row * d + j] = c * inv * gamma[j] + beta[j];
                j += units;
            }
            row += CUBE_COUNT_X as usize;
        }
    }

    #[cube(launch)]
    pub fn bias_gelu_kernel<F: Float>(
        x: &Tensor<F>,       // [T, D]
        bias: &Tensor<F>,    // [D]
        out: &mut Tensor<F>, // [T, D]
        #[define(F)] _dtype: StorageType,
    ) {
        let d = x.shape(1);
        let n = x.shape(0) * d;
        let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
        let mut i = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
        while i < n {
            let v = x[i] + bias[i % d];
            out[i] = v * F::new(0.5) * (F::new(1.0) + F::erf(v * F::new(core::f32::consts::FRAC_1_SQRT_2)));
            i += step;
        }
    }
}

/// [`crate::link::layer_norm_sum`] as one kernel launch (a cube per row, up to [`MAX_CUBES`]).
pub fn layer_norm_sum<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    a: Tensor<Cube<R, F, I, BT>, 2>,
    residual: Option<Tensor<Cube<R, F, I, BT>, 2>>,
    bias: Option<Tensor<Cube<R, F, I, BT>, 1>>,
    gamma: Tensor<Cube<R, F, I, BT>, 1>,
    beta: Tensor<Cube<R, F, I, BT>, 1>,
    eps: f64,
) -> Tensor<Cube<R, F, I, BT>, 2> {
    let dtype = a.dtype();
    let [t, d] = a.dims();
    let (has_residual, has_bias) = (residual.is_some(), bias.is_some());
    let a = f32_contiguous(a);
    let client = a.client.clone();
    let r = residual.map_or_else(|| unused(&a), f32_contiguous);
    let bias = bias.map_or_else(|| unused(&a), f32_contiguous);
    let (gamma, beta) = (f32_contiguous(gamma), f32_contiguous(beta));
    let out = empty_device_dtype(client.clone(), a.device.clone(), [t, d].into(), DType::F32);
    if t > 0 {
        kernel::layer_norm_sum_kernel::launch::<R>(
            &client,
            CubeCount::Static(t.min(MAX_CUBES) as u32, 1, 1),
            CubeDim::new_1d(ROW_UNITS as u32),
            a.into_tensor_arg(),
            r.into_tensor_arg(),
            bias.into_tensor_arg(),
            gamma.into_tensor_arg(),
            beta.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            has_residual,
            has_bias,
            ROW_UNITS,
            (eps as f32).to_bits(),
            DType::F32.into(),
        );
    }
    tensor::<R, F, I, BT, 2>(out).cast(dtype)
}

/// [`crate::link::bias_gelu`] as one kernel launch.
pub fn bias_gelu<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    x: Tensor<Cube<R, F, I, BT>, 2>,
    bias: Tensor<Cube<R, F, I, BT>, 1>,
) -> Tensor<Cube<R, F, I, BT>, 2> {
    let dtype = x.dtype();
    let [t, d] = x.dims();
    let (x, bias) = (f32_contiguous(x), f32_contiguous(bias));
    let client = x.client.clone();
    let out = empty_device_dtype(client.clone(), x.device.clone(), [t, d].into(), DType::F32);
    if t * d > 0 {
        kernel::bias_gelu_kernel::launch::<R>(
            &client,
            elementwise_cubes(t * d),
            CubeDim::new_1d(ELEM_UNITS as u32),
            x.into_tensor_arg(),
            bias.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            DType::F32.into(),
        );
    }
    tensor::<R, F, I, BT, 2>(out).cast(dtype)
}
