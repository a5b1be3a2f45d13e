//! Weight products on cubecl backends in strict f32 (docs/numerics.md, "Strict f32"): cubek's
//! default matmul uses tensor cores where the GPU has them, which compute f32 products in TF32
//! (10-bit mantissa); the conformance suite needs the CPU's tolerances on CUDA, so in strict mode
//! f32 products run cubek's naive kernel (plain f32 FMA per output) instead.

use std::sync::atomic::{AtomicU8, Ordering};

use burn::tensor::{DType, Tensor, TensorPrimitive};
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement, ops::numeric::empty_device_dtype};
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems};
use cubek::matmul::launch::Strategy;
use cubek::std::InputBinding;

use crate::cube_common::Cube;

/// 0: not read yet, 1: off, 2: on.
static STRICT: AtomicU8 = AtomicU8::new(0);

/// Turns strict-f32 products on or off for the whole process (the suite turns it on for CUDA;
/// `RMAS_STRICT_F32=1` does the same for any program).
pub fn set_strict_f32(on: bool) {
    STRICT.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Whether f32 weight products avoid TF32 (`RMAS_STRICT_F32=1`, or [`set_strict_f32`]).
pub fn strict_f32() -> bool {
    match STRICT.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var("RMAS_STRICT_F32").is_ok_and(|v| v == "1" || v == "true");
            set_strict_f32(on);
            on
        }
        state => state == 2,
    }
}

/// Whether products of `dtype` activations run strict: f32 ones, with the mode on.
pub fn strict_for(dtype: DType) -> bool {
    dtype == DType::F32 && strict_f32()
}

/// `a·bᵀ` for a `b` stored `[N, K]` (a layer's `[out, in]` weight or a vocabulary matrix) through
/// [`strict_matmul`] where [`strict_for`] `a`'s dtype; `None` elsewhere (the caller's usual product).
pub fn strict_product<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    a: Tensor<Cube<R, F, I, BT>, 2>,
    b: Tensor<Cube<R, F, I, BT>, 2>,
) -> Option<Tensor<Cube<R, F, I, BT>, 2>> {
    strict_for(a.dtype()).then(|| strict_matmul(a, b.transpose())).flatten()
}

/// `a·b` `[M, N]` for f32 `a` `[M, K]` and `b` `[K, N]` (any strides, e.g. a weight's transposed
/// view) with cubek's naive kernel: f32 multiply-adds only. `None` where cubek refuses the shapes.
pub fn strict_matmul<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    a: Tensor<Cube<R, F, I, BT>, 2>,
    b: Tensor<Cube<R, F, I, BT>, 2>,
) -> Option<Tensor<Cube<R, F, I, BT>, 2>> {
    let ([m, _], [_, n]) = (a.dims(), b.dims());
    let (a, b) = (a.into_primitive().tensor(), b.into_primitive().tensor());
    let out = empty_device_dtype(a.client.clone(), a.device.clone(), [m, n].into(), DType::F32);
    let f32_type = || DType::F32.into();
    let mut dtypes =
        MatmulElems::from_globals(&MatmulGlobalElems { lhs: f32_type(), rhs: f32_type(), out: f32_type() });
    let client = out.client.clone();
    let (lhs, rhs) = (InputBinding::new(a.binding(), f32_type()), InputBinding::new(b.binding(), f32_type()));
    cubek::matmul::launch::launch_ref(&Strategy::Naive, &client, lhs, rhs, out.clone().binding(), &mut dtypes).ok()?;
    Some(Tensor::from_primitive(TensorPrimitive::Float(out)))
}
