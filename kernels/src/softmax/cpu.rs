//! Softmax over the last axis on the CPU: one pass per row group.

use burn::backend::NdArray;
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use crate::cpu_common::{softmax_row, standard, tensor, wide};

/// Softmax over the last axis in one pass per row group, with the vectorising `exp`.
pub fn softmax<const D: usize>(x: Tensor<NdArray, D>) -> Tensor<NdArray, D> {
    if x.dtype() != DType::F32 {
        return burn::tensor::activation::softmax(x, D - 1);
    }
    let width = x.dims()[D - 1];
    let mut x = standard(x);
    x.as_slice_mut()
        .expect("standard layout")
        .par_chunks_mut(width)
        .with_min_len(16)
        .for_each(|row| wide(|| softmax_row(row)));
    tensor(Ok(x))
}
