//! cubecl kernel of the softmax over the last axis (attention probabilities): one cube per row in
//! the tensor's own dtype.

use burn::tensor::Tensor;
use burn_cubecl::{
    BoolElement, CubeRuntime, FloatElement, IntElement, kernel::into_contiguous, ops::numeric::empty_device_dtype,
};
use cubecl::prelude::{CubeCount, CubeDim};

use crate::cube_common::{Cube, MAX_CUBES, ROW_UNITS, tensor};

mod kernel {
    use cubecl::prelude::*;

    use crate::cube_common::{cube_reduce, row_max};

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
            let m = row_max(x, base, width, &mut shared, units);
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
