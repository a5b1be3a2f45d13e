//! Conversions shared by the cubecl kernels' launchers.

use burn::tensor::{Tensor, TensorPrimitive};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement, kernel::into_contiguous, tensor::CubeTensor};

/// The CubeBackend of runtime `R`.
pub(crate) type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;

/// A contiguous f32 copy of `x` (no copy when it already is one) for a kernel argument.
pub(crate) fn f32_contiguous<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement, const D: usize>(
    x: Tensor<Cube<R, F, I, BT>, D>,
) -> CubeTensor<R> {
    into_contiguous(crate::gdn::f32_of(x).into_primitive().tensor())
}

/// A kernel's float output as a tensor.
pub(crate) fn tensor<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement, const D: usize>(
    out: CubeTensor<R>,
) -> Tensor<Cube<R, F, I, BT>, D> {
    Tensor::from_primitive(TensorPrimitive::Float(out))
}
