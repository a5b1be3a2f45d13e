//! cubecl kernel of [`crate::rope::reference`]: one cube per (position, head), in f32, reading the
//! projection's view in place and writing head-major.

use burn::tensor::{DType, Tensor};
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement, ops::numeric::empty_device_dtype};
use cubecl::prelude::{CubeCount, CubeDim};

use crate::cube_common::{Cube, MAX_CUBES, ROW_UNITS, f32_contiguous, tensor, unused};

mod kernel {
    use cubecl::prelude::*;

    use crate::cube_common::cube_reduce;

    #[cube(launch)]
    pub fn rope_heads_kernel<F: Float>(
        x: &Tensor<F>,       // [T, heads, width ≥ head_dim], any strides
        scale: &Tensor<F>,   // [head_dim] (read only with `norm`)
        cos: &Tensor<F>,     // [T, rot] contiguous
        sin: &Tensor<F>,     // [T, rot] contiguous
        out: &mut Tensor<F>, // [heads, T, head_dim] contiguous
        #[comptime] units: usize,
        #[comptime] norm: bool,
        #[comptime] eps_bits: u32,
        #[define(F)] _dtype: StorageType,
    ) {
        let u = UNIT_POS_X as usize;
        let (len, heads, hd) = (out.shape(1), out.shape(0), out.shape(2));
        let (rot, half) = (cos.shape(1), cos.shape(1) / 2);
        let mut shared = SharedMemory::<F>::new(units);
        let mut row = CUBE_POS_X as usize;
        while row < len * heads {
            let (t, h) = (row / heads, row % heads);
            let base = t * x.stride(0) + h * x.stride(1);
            let step = x.stride(2);
            let mut inv = F::new(1.0);
            if norm {
                let mut acc = F::new(0.0);
                let mut j = u;
                while j < hd {
                    let v = x[base + j * step];
                    acc += v * v;
                    j += units;
                }
                let mean_square = cube_reduce(&mut shared, acc, false) / F::cast_from(hd as u32);
                inv = F::new(1.0) / F::sqrt(mean_square + F::new(comptime!(f32::from_bits(eps_bits))));
            }
            let mut j = u;
            while j < hd {
                let mut v = x[base + j * step] * inv;
                if norm {
                    v *= scale[j];
                }
                if j < rot {
                    let mut p = j + half;
                    if j >= half {
                        p = j - half;
                    }
                    let mut partner = x[base + p * step] * inv;
                    if norm {
                        partner *= scale[p];
                    }
                    if j < half {
                        partner = -partner;
                    }
                    v = v * cos[t * rot + j] + partner * sin[t * rot + j];
                }
                out[(h * len + t) * hd + j] = v;
                j += units;
            }
            row += CUBE_COUNT_X as usize;
        }
    }
}

/// [`crate::rope::reference`] as one kernel launch (a cube per position and head, up to [`MAX_CUBES`]).
pub fn rope_heads<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    x: Tensor<Cube<R, F, I, BT>, 3>,
    head_dim: usize,
    norm: Option<(Tensor<Cube<R, F, I, BT>, 1>, f64)>,
    cos: Tensor<Cube<R, F, I, BT>, 2>,
    sin: Tensor<Cube<R, F, I, BT>, 2>,
) -> Tensor<Cube<R, F, I, BT>, 3> {
    let [t, heads, _] = x.dims();
    let dtype = x.dtype();
    // The view stays in place in f32; another dtype is converted once (a contiguous f32 copy).
    let x = if dtype == DType::F32 { x.into_primitive().tensor() } else { f32_contiguous(x) };
    let (cos, sin) = (f32_contiguous(cos), f32_contiguous(sin));
    let has_norm = norm.is_some();
    let (scale, eps) = match norm {
        Some((scale, eps)) => (f32_contiguous(scale), eps),
        None => (unused(&x), 0.0),
    };
    let out = empty_device_dtype(x.client.clone(), x.device.clone(), [heads, t, head_dim].into(), DType::F32);
    if t * heads > 0 {
        kernel::rope_heads_kernel::launch::<R>(
            &x.client.clone(),
            CubeCount::Static((t * heads).min(MAX_CUBES) as u32, 1, 1),
            CubeDim::new_1d(ROW_UNITS as u32),
            x.into_tensor_arg(),
            scale.into_tensor_arg(),
            cos.into_tensor_arg(),
            sin.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            ROW_UNITS,
            has_norm,
            (eps as f32).to_bits(),
            DType::F32.into(),
        );
    }
    tensor::<R, F, I, BT, 3>(out).cast(dtype)
}
