//! The activations (times a gate) on the CPU: one parallel pass.

use burn::backend::NdArray;
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use crate::Act;
use crate::cpu_common::{ELEMENTWISE_CHUNK, standard, tensor, values, wide};

/// `act(x)·by` in one parallel pass over f32 arrays of equal shapes (burn's sigmoid takes five),
/// in place when `x` is not shared.
pub fn activate<const D: usize>(x: Tensor<NdArray, D>, act: Act, by: Option<Tensor<NdArray, D>>) -> Tensor<NdArray, D> {
    if by.as_ref().is_some_and(|b| b.dims() != x.dims()) || x.dtype() != DType::F32 {
        return crate::act::reference(x, act, by);
    }
    let mut x = standard(x);
    let by = by.map(standard);
    let by = by.as_ref().map(values);
    let values = x.as_slice_mut().expect("standard layout");
    values.par_chunks_mut(ELEMENTWISE_CHUNK).enumerate().for_each(|(c, chunk)| {
        let start = c * ELEMENTWISE_CHUNK;
        wide(|| act.apply(chunk, by.map(|b| &b[start..start + chunk.len()])));
    });
    tensor(Ok(x))
}
