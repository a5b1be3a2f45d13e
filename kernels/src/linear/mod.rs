//! Weight products: a linear layer's `x·w` and the vocabulary logits `h·mᵀ`; reference paths.

use burn::tensor::{Tensor, backend::Backend};

pub(crate) mod cpu;

/// `x·w` for activations `x` `[M, K]` and a layer's weight stored `[K, N]`.
pub fn reference<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
    x.matmul(w)
}

/// `h·mᵀ` `[T, V]` for hidden states `h` `[T, H]` and a vocabulary matrix `m` `[V, H]`.
pub fn logits_reference<B: Backend>(h: Tensor<B, 2>, m: Tensor<B, 2>) -> Tensor<B, 2> {
    // `(m·hᵀ)ᵀ` keeps the [V, H] matrix contiguous on the matmul's left.
    m.matmul(h.transpose()).transpose()
}
