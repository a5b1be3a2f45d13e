//! Softmax over the last axis (attention probabilities); reference path.

use burn::tensor::{Tensor, activation::softmax, backend::Backend};

pub(crate) mod cpu;
pub(crate) mod cube;

/// Softmax of `x` over its last axis.
pub fn reference<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    softmax(x, D - 1)
}
