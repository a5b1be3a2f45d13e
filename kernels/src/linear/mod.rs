//! Weight products: a linear layer's `x·Wᵀ` and the vocabulary logits `h·mᵀ`; reference paths.

use burn::tensor::{Tensor, backend::Backend};

pub(crate) mod cpu;
pub mod cube;

/// `x·Wᵀ` for activations `x` `[M, K]` and a layer's weight `w` stored `[N, K]` (HF's layout, multiplied
/// through a transposed view) when `out_in`, else stored transposed `[K, N]`.
pub fn reference<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>, out_in: bool) -> Tensor<B, 2> {
    if out_in { x.matmul(w.transpose()) } else { x.matmul(w) }
}

/// `h·mᵀ` `[T, V]` for hidden states `h` `[T, H]` and a vocabulary matrix `m` `[V, H]`.
pub fn logits_reference<B: Backend>(h: Tensor<B, 2>, m: Tensor<B, 2>) -> Tensor<B, 2> {
    // `(m·hᵀ)ᵀ` keeps the [V, H] matrix contiguous on the matmul's left.
    m.matmul(h.transpose()).transpose()
}
