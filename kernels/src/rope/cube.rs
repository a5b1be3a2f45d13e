//! cubecl kernel of [`crate::rope::reference`] and [`crate::rope::append_kv`]: one cube per
//! (position, head), computing in f32 from the projection's view read in place (any dtype, any
//! strides) and writing head-major, either a new tensor or a KV cache's rows (with the values
//! copied beside the keys in the same launch).

use burn::tensor::Tensor;
use burn_cubecl::{
    BoolElement, CubeRuntime, FloatElement, IntElement, ops::numeric::empty_device_dtype, tensor::CubeTensor,
};
use cubecl::prelude::{CubeCount, CubeDim};

use crate::cube_common::{Cube, HEAD_UNITS, MAX_CUBES, f32_contiguous, owned, tensor, unused};

pub(crate) mod kernel {
    use cubecl::prelude::*;

    use crate::cube_common::cube_reduce;

    /// `1/rms` of the head row at `base` of `x` (`hd` features, `step` apart), summed over the
    /// cube's `units` (every unit calls it); 1 without `norm`.
    #[cube]
    pub(crate) fn head_inv_rms<F: Float>(
        x: &Tensor<F>,
        base: usize,
        step: usize,
        hd: usize,
        shared: &mut SharedMemory<f32>,
        #[comptime] units: usize,
        #[comptime] norm: bool,
        #[comptime] eps_bits: u32,
    ) -> f32 {
        let mut inv = 1.0f32;
        if norm {
            let mut acc = 0.0f32;
            let mut j = UNIT_POS_X as usize;
            while j < hd {
                let v = f32::cast_from(x[base + j * step]);
                acc += v * v;
                j += units;
            }
            let mean_square = cube_reduce(shared, acc, false) / f32::cast_from(hd as u32);
            inv = 1.0f32 / f32::sqrt(mean_square + comptime!(f32::from_bits(eps_bits)));
        }
        inv
    }

    /// Feature `j` of that head row, times `inv` and (with `norm`) `scale[j]`, rotated with its
    /// partner by row `t` of `cos`, `sin` `[T, rot]` where `j < rot`: the rotation's output in f32.
    #[cube]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rotated<F: Float>(
        x: &Tensor<F>,
        base: usize,
        step: usize,
        j: usize,
        inv: f32,
        scale: &Tensor<f32>,
        cos: &Tensor<f32>,
        sin: &Tensor<f32>,
        t: usize,
        #[comptime] norm: bool,
    ) -> f32 {
        let (rot, half) = (cos.shape(1), cos.shape(1) / 2);
        let mut v = f32::cast_from(x[base + j * step]) * inv;
        if norm {
            v *= scale[j];
        }
        if j < rot {
            let mut p = j + half;
            if j >= half {
                p = j - half;
            }
            let mut partner = f32::cast_from(x[base + p * step]) * inv;
            if norm {
                partner *= scale[p];
            }
            if j < half {
                partner = -partner;
            }
            v = v * cos[t * rot + j] + partner * sin[t * rot + j];
        }
        v
    }

    #[cube(launch)]
    pub fn rope_heads_kernel<F: Float>(
        x: &Tensor<F>,              // [T, heads, width ≥ head_dim], any strides
        values: &Tensor<F>,         // [T, heads, head_dim], any strides (read only with `copy_values`)
        scale: &Tensor<f32>,        // [head_dim] (read only with `norm`)
        cos: &Tensor<f32>,          // [T, rot] contiguous
        sin: &Tensor<f32>,          // [T, rot] contiguous
        out: &mut Tensor<F>,        // [heads, ≥ at + T, head_dim] contiguous: rows at..at+T written
        values_out: &mut Tensor<F>, // like `out` (written only with `copy_values`)
        at: usize,
        #[comptime] units: usize,
        #[comptime] norm: bool,
        #[comptime] eps_bits: u32,
        #[comptime] copy_values: bool,
        #[define(F)] _dtype: StorageType,
    ) {
        let u = UNIT_POS_X as usize;
        let (len, heads, hd) = (x.shape(0), x.shape(1), out.shape(2));
        let rows = out.shape(1);
        let mut shared = SharedMemory::<f32>::new(units);
        let mut row = CUBE_POS_X as usize;
        while row < len * heads {
            let (t, h) = (row / heads, row % heads);
            let base = t * x.stride(0) + h * x.stride(1);
            let step = x.stride(2);
            let at_out = (h * rows + at + t) * hd;
            let inv = head_inv_rms(x, base, step, hd, &mut shared, units, norm, eps_bits);
            let mut j = u;
            while j < hd {
                out[at_out + j] = F::cast_from(rotated(x, base, step, j, inv, scale, cos, sin, t, norm));
                if copy_values {
                    values_out[at_out + j] = values[t * values.stride(0) + h * values.stride(1) + j * values.stride(2)];
                }
                j += units;
            }
            row += CUBE_COUNT_X as usize;
        }
    }
}

/// The f32 arguments of a launch: `cos`, `sin` and the norm's scale, with eps.
pub(crate) struct Tables<R: CubeRuntime> {
    pub(crate) cos: CubeTensor<R>,
    pub(crate) sin: CubeTensor<R>,
    pub(crate) scale: Option<(CubeTensor<R>, f64)>,
}

impl<R: CubeRuntime> Tables<R> {
    /// The tables and the norm's scale as contiguous f32 kernel arguments.
    pub(crate) fn new<F: FloatElement, I: IntElement, BT: BoolElement>(
        norm: Option<(Tensor<Cube<R, F, I, BT>, 1>, f64)>,
        cos: Tensor<Cube<R, F, I, BT>, 2>,
        sin: Tensor<Cube<R, F, I, BT>, 2>,
    ) -> Self {
        let scale = norm.map(|(scale, eps)| (f32_contiguous(scale), eps));
        Self { cos: f32_contiguous(cos), sin: f32_contiguous(sin), scale }
    }
}

/// Launches the kernel over `x` `[T, heads, width]` into rows `at..` of `out` `[heads, rows,
/// head_dim]`, copying `values` into `values_out` alongside when given.
fn launch<R: CubeRuntime>(
    x: CubeTensor<R>,
    tables: Tables<R>,
    out: &CubeTensor<R>,
    values: Option<(CubeTensor<R>, &CubeTensor<R>)>,
    at: usize,
) {
    let (t, heads) = (x.meta.shape()[0], x.meta.shape()[1]);
    if t * heads == 0 {
        return;
    }
    let dtype = out.dtype;
    let has_norm = tables.scale.is_some();
    let (scale, eps) = tables.scale.unwrap_or_else(|| (unused(&x), 0.0));
    let copy_values = values.is_some();
    let (values, values_out) = match values {
        Some((values, values_out)) => (values, values_out.clone()),
        None => (unused(&x), unused(&x)),
    };
    kernel::rope_heads_kernel::launch::<R>(
        &x.client.clone(),
        CubeCount::Static((t * heads).min(MAX_CUBES) as u32, 1, 1),
        CubeDim::new_1d(HEAD_UNITS as u32),
        x.into_tensor_arg(),
        values.into_tensor_arg(),
        scale.into_tensor_arg(),
        tables.cos.into_tensor_arg(),
        tables.sin.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        values_out.into_tensor_arg(),
        at,
        HEAD_UNITS,
        has_norm,
        (eps as f32).to_bits(),
        copy_values,
        dtype.into(),
    );
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
    let x = x.into_primitive().tensor();
    let out = empty_device_dtype(x.client.clone(), x.device.clone(), [heads, t, head_dim].into(), x.dtype);
    launch(x, Tables::new(norm, cos, sin), &out, None, 0);
    tensor(out)
}

/// Whether [`append_kv`] takes these operands: keys, values and caches of one dtype, contiguous caches.
pub fn fits<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    caches: &(Tensor<Cube<R, F, I, BT>, 3>, Tensor<Cube<R, F, I, BT>, 3>),
    k: &Tensor<Cube<R, F, I, BT>, 3>,
    v: &Tensor<Cube<R, F, I, BT>, 3>,
) -> bool {
    let dtype = caches.0.dtype();
    let contiguous = |c: &Tensor<Cube<R, F, I, BT>, 3>| c.clone().into_primitive().tensor().is_contiguous();
    [k.dtype(), v.dtype(), caches.1.dtype()].iter().all(|&d| d == dtype)
        && contiguous(&caches.0)
        && contiguous(&caches.1)
}

/// [`crate::rope::append_kv`] as one kernel launch, for operands that [`fits`]: the rotated keys and
/// the values written into the caches' rows `at..at + T` in place (a cache that shares its buffer
/// with another tensor is copied first, as burn's `slice_assign` does).
pub fn append_kv<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    (k_cache, v_cache): (Tensor<Cube<R, F, I, BT>, 3>, Tensor<Cube<R, F, I, BT>, 3>),
    k: Tensor<Cube<R, F, I, BT>, 3>,
    v: Tensor<Cube<R, F, I, BT>, 3>,
    norm: Option<(Tensor<Cube<R, F, I, BT>, 1>, f64)>,
    (cos, sin): (Tensor<Cube<R, F, I, BT>, 2>, Tensor<Cube<R, F, I, BT>, 2>),
    at: usize,
) -> (Tensor<Cube<R, F, I, BT>, 3>, Tensor<Cube<R, F, I, BT>, 3>) {
    let (k_cache, v_cache) = (owned(k_cache), owned(v_cache));
    let values = v.into_primitive().tensor();
    launch(k.into_primitive().tensor(), Tables::new(norm, cos, sin), &k_cache, Some((values, &v_cache)), at);
    (tensor(k_cache), tensor(v_cache))
}
