//! cubecl kernel of RMSNorm, alone or after a residual add: one cube per row, computing in f32 from
//! and to the tensors' own dtype (burn's norm is seven ops, and the add one more).

use burn::tensor::Tensor;
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement, ops::numeric::empty_device_dtype};
use cubecl::prelude::{CubeCount, CubeDim};

use crate::cube_common::{Cube, MAX_CUBES, ROW_UNITS, contiguous, f32_contiguous, tensor, unused};

mod kernel {
    use cubecl::prelude::*;

    use crate::cube_common::cube_reduce;

    /// RMSNorm of each row of `x`, or with `add` of `x + y` (written to `sum` too), computed in f32
    /// and written in `x`'s type.
    #[cube(launch)]
    pub fn rms_norm_kernel<F: Float>(
        x: &Tensor<F>,       // [rows, width] contiguous
        y: &Tensor<F>,       // x's shape (read only with `add`)
        scale: &Tensor<f32>, // [width]
        sum: &mut Tensor<F>, // x's shape: x + y (written only with `add`)
        out: &mut Tensor<F>, // x's shape
        #[comptime] units: usize,
        #[comptime] eps_bits: u32,
        #[comptime] add: bool,
        #[define(F)] _dtype: StorageType,
    ) {
        let u = UNIT_POS_X as usize;
        let width = x.shape(x.rank() - 1);
        let rows = x.len() / width;
        let mut shared = SharedMemory::<f32>::new(units);
        let mut row = CUBE_POS_X as usize;
        while row < rows {
            let base = row * width;
            let mut acc = 0.0f32;
            let mut j = u;
            while j < width {
                let mut v = f32::cast_from(x[base + j]);
                if add {
                    v += f32::cast_from(y[base + j]);
                    sum[base + j] = F::cast_from(v);
                }
                acc += v * v;
                j += units;
            }
            let mean_square = cube_reduce(&mut shared, acc, false) / f32::cast_from(width as u32);
            let inv = 1.0f32 / f32::sqrt(mean_square + comptime!(f32::from_bits(eps_bits)));
            // The sum again in f32 (`sum` holds it rounded to F).
            let mut j = u;
            while j < width {
                let mut v = f32::cast_from(x[base + j]);
                if add {
                    v += f32::cast_from(y[base + j]);
                }
                out[base + j] = F::cast_from(v * inv * scale[j]);
                j += units;
            }
            row += CUBE_COUNT_X as usize;
        }
    }
}

/// Launches the kernel on contiguous operands in their own dtype (the scale in f32): the norm of
/// `x` (plus `y` when given, whose sum is returned too), a cube per row up to [`MAX_CUBES`].
fn launch<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement, const D: usize>(
    x: Tensor<Cube<R, F, I, BT>, D>,
    y: Option<Tensor<Cube<R, F, I, BT>, D>>,
    scale: Tensor<Cube<R, F, I, BT>, 1>,
    eps: f64,
) -> (Option<Tensor<Cube<R, F, I, BT>, D>>, Tensor<Cube<R, F, I, BT>, D>) {
    let n = x.shape().num_elements();
    let rows = n / x.dims()[D - 1].max(1);
    let (x, scale) = (contiguous(x.into_primitive().tensor()), f32_contiguous(scale));
    let dtype = x.dtype;
    let add = y.is_some();
    let empty = || empty_device_dtype(x.client.clone(), x.device.clone(), x.meta.shape().clone(), dtype);
    let (y, sum) = match y {
        Some(y) => (contiguous(y.into_primitive().tensor()), empty()),
        None => (unused(&x), unused(&x)),
    };
    let out = empty();
    if n > 0 {
        kernel::rms_norm_kernel::launch::<R>(
            &x.client.clone(),
            CubeCount::Static(rows.min(MAX_CUBES) as u32, 1, 1),
            CubeDim::new_1d(ROW_UNITS as u32),
            x.into_tensor_arg(),
            y.into_tensor_arg(),
            scale.into_tensor_arg(),
            sum.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            ROW_UNITS,
            (eps as f32).to_bits(),
            add,
            dtype.into(),
        );
    }
    (add.then(|| tensor(sum)), tensor(out))
}

/// [`crate::norm::rms_norm`] as one kernel launch (in f32, read and written in `x`'s dtype).
pub fn rms_norm<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement, const D: usize>(
    x: Tensor<Cube<R, F, I, BT>, D>,
    scale: Tensor<Cube<R, F, I, BT>, 1>,
    eps: f64,
) -> Tensor<Cube<R, F, I, BT>, D> {
    launch(x, None, scale, eps).1
}

/// [`crate::norm::add_rms_norm`] as one kernel launch (in f32, read and written in `x`'s dtype).
pub fn add_rms_norm<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    x: Tensor<Cube<R, F, I, BT>, 2>,
    y: Tensor<Cube<R, F, I, BT>, 2>,
    scale: Tensor<Cube<R, F, I, BT>, 1>,
    eps: f64,
) -> (Tensor<Cube<R, F, I, BT>, 2>, Tensor<Cube<R, F, I, BT>, 2>) {
    if x.dims() != y.dims() || x.dtype() != y.dtype() {
        return crate::norm::add_rms_norm(x, y, scale, eps);
    }
    let (sum, out) = launch(x, Some(y), scale, eps);
    (sum.expect("asked for the sum"), out)
}
