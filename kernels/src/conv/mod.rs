//! Causal depthwise convolution followed by SiLU (the input mixing of Qwen3.5's Gated DeltaNet
//! layers), continuing from the last `K − 1` inputs: reference path.

use burn::tensor::{Tensor, backend::Backend};

use crate::Act;

pub(crate) mod cpu;
pub(crate) mod cube;

/// `silu(Σ_j w[j] ⊙ window[t + j])` for each token `t`, where `window = [state ‖ x]` `[K−1+T, C]`,
/// `x` `[T, C]`, `state` `[K−1, C]` (the previous inputs, oldest first) and `weight` `[K, C]` (row `j`
/// multiplies input `t − K + 1 + j`); returns it `[T, C]` and the new state (the window's last
/// `K − 1` rows).
pub fn causal_conv_silu<B: Backend>(
    x: Tensor<B, 2>,
    state: Tensor<B, 2>,
    weight: Tensor<B, 2>,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let t = x.dims()[0];
    let taps = weight.dims()[0];
    let window = Tensor::cat(vec![state, x], 0); // [K−1+T, C]
    let mixed = (0..taps)
        .map(|j| window.clone().narrow(0, j, t) * weight.clone().narrow(0, j, 1))
        .reduce(|a, b| a + b)
        .expect("a convolution has at least one tap");
    (crate::act::reference(mixed, Act::Silu, None), window.narrow(0, t, taps - 1))
}
