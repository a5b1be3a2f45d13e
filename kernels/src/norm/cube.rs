//! cubecl kernel of RMSNorm: one cube per row, in f32 (burn's norm is seven ops).

use burn::tensor::{DType, Tensor};
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement, ops::numeric::empty_device_dtype};
use cubecl::prelude::{CubeCount, CubeDim};

use crate::cube_common::{Cube, MAX_CUBES, ROW_UNITS, f32_contiguous, tensor};

mod kernel {
    use cubecl::prelude::*;

    use crate::cube_common::row_reduce;

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
