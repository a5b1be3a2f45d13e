//! Support shared by the cubecl kernels (`<op>/cube.rs`): their launchers' conversions and the
//! cube functions several kernels use.

use burn::tensor::{DType, Tensor, TensorPrimitive};
use burn_cubecl::{
    BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement, kernel::into_contiguous,
    ops::numeric::empty_device_dtype, tensor::CubeTensor,
};
use cubecl::prelude::*;

use crate::PackedOut;

/// Units per cube of the row kernels (a power of two, for [`cube_reduce`]).
pub(crate) const ROW_UNITS: usize = 256;
/// Units per cube of the kernels that take one attention head row at a time (the rotations, and
/// attention, which norms and rotates its queries as the rotations do): one count, so that a head's
/// norm sums in the same order in both and their bits agree.
pub(crate) const HEAD_UNITS: usize = 64;
/// Units per cube of the element-wise kernels.
pub(crate) const ELEM_UNITS: usize = 256;
/// Most cubes of the element-wise and row kernels, which stride over the rest (a dimension
/// of the launch grid is limited to 65535 cubes).
pub(crate) const MAX_CUBES: usize = 4096;

/// Cubes of an element-wise kernel over `n` elements.
pub(crate) fn elementwise_cubes(n: usize) -> CubeCount {
    CubeCount::Static(n.div_ceil(ELEM_UNITS).clamp(1, MAX_CUBES) as u32, 1, 1)
}

/// The CubeBackend of runtime `R`.
pub(crate) type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;

/// A contiguous f32 copy of `x` (no copy when it already is one) for a kernel argument.
pub(crate) fn f32_contiguous<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement, const D: usize>(
    x: Tensor<Cube<R, F, I, BT>, D>,
) -> CubeTensor<R> {
    contiguous(crate::f32_of(x).into_primitive().tensor())
}

/// `x` as a contiguous kernel argument. A view that breaks contiguity only in size-1 dims (a decode
/// step's row sliced out of a wider projection: `[1, n]` with a row stride above `n`) gets dense
/// strides without a copy; anything else is copied.
pub(crate) fn contiguous<R: CubeRuntime>(mut x: CubeTensor<R>) -> CubeTensor<R> {
    if !x.is_contiguous() {
        let shape: Vec<usize> = x.meta.shape().iter().copied().collect();
        let mut dense = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            dense[d] = dense[d + 1] * shape[d + 1];
        }
        let only_unit_dims_differ =
            shape.iter().zip(x.meta.strides().iter()).zip(&dense).all(|((&n, &s), &c)| n == 1 || s == c);
        if only_unit_dims_differ {
            for (d, stride) in dense.into_iter().enumerate() {
                x.meta.strides_mut()[d] = stride;
            }
        }
    }
    into_contiguous(x)
}

/// `x` as a kernel's in-place output (a KV cache, a pack of outputs): its own contiguous buffer, a
/// copy where it shares one with another tensor (as burn's `slice_assign` does) or is a strided view.
pub(crate) fn owned<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement, const D: usize>(
    x: Tensor<Cube<R, F, I, BT>, D>,
) -> CubeTensor<R> {
    let x = x.into_primitive().tensor();
    if x.can_mut() && x.is_contiguous() { x } else { into_contiguous(x.copy()) }
}

/// A per-sequence kernel's `[T, a, b]` output in `dtype`: its rows of `into`'s pack (owned, see
/// [`owned`]) and their first row, or a new tensor and row 0.
pub(crate) fn output_rows<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    into: Option<PackedOut<Cube<R, F, I, BT>>>,
    [t, a, b]: [usize; 3],
    dtype: DType,
    like: &CubeTensor<R>,
) -> (CubeTensor<R>, usize) {
    let Some(PackedOut { pack, at }) = into else {
        return (empty_device_dtype(like.client.clone(), like.device.clone(), [t, a, b].into(), dtype), 0);
    };
    let ([rows, pa, pb], pack_dtype) = (pack.dims(), pack.dtype());
    assert!(
        at + t <= rows && [pa, pb] == [a, b] && pack_dtype == dtype,
        "rows {at}..{} of [{a}, {b}] {dtype:?} into a [{rows}, {pa}, {pb}] {pack_dtype:?} pack",
        at + t
    );
    (owned(pack), at)
}

/// A kernel's float output as a tensor.
pub(crate) fn tensor<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement, const D: usize>(
    out: CubeTensor<R>,
) -> Tensor<Cube<R, F, I, BT>, D> {
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// A one-element f32 buffer for a kernel input that is absent and never read (a binding must not
/// alias another one).
pub(crate) fn unused<R: CubeRuntime>(like: &CubeTensor<R>) -> CubeTensor<R> {
    empty_device_dtype(like.client.clone(), like.device.clone(), [1].into(), DType::F32)
}

/// The offset in `t` (any strides) of the `i`-th element in row-major order of `t`'s shape.
#[cube]
pub(crate) fn strided_offset<F: Float>(t: &cubecl::prelude::Tensor<F>, i: usize) -> usize {
    let mut rem = i;
    let mut at = 0usize;
    let mut d = t.rank();
    while d > 0 {
        d -= 1;
        let n = t.shape(d);
        at += (rem % n) * t.stride(d);
        rem /= n;
    }
    at
}

/// Sum (or with `max` the maximum) of every unit's `value`: a tree reduction in shared memory over a
/// power-of-two cube.
#[cube]
pub(crate) fn cube_reduce<F: Float>(shared: &mut SharedMemory<F>, value: F, #[comptime] max: bool) -> F {
    let u = UNIT_POS_X as usize;
    shared[u] = value;
    sync_cube();
    let mut stride = (CUBE_DIM_X / 2) as usize;
    while stride > 0 {
        if u < stride {
            let other = shared[u + stride];
            if max {
                shared[u] = cubecl::prelude::max(shared[u], other);
            } else {
                shared[u] += other;
            }
        }
        sync_cube();
        stride /= 2;
    }
    let total = shared[0];
    sync_cube();
    total
}

/// The maximum of `x[base..base + width]` over the cube.
#[cube]
pub(crate) fn row_max<F: Float>(
    x: &cubecl::prelude::Tensor<F>,
    base: usize,
    width: usize,
    shared: &mut SharedMemory<F>,
    #[comptime] units: usize,
) -> F {
    let mut acc = F::min_value();
    let mut j = UNIT_POS_X as usize;
    while j < width {
        acc = max(acc, x[base + j]);
        j += units;
    }
    cube_reduce(shared, acc, true)
}
