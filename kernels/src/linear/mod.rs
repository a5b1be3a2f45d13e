//! Weight products: a linear layer's `x·Wᵀ` and the vocabulary logits `h·mᵀ`; reference paths.

use burn::tensor::{Tensor, backend::Backend};

pub(crate) mod cpu;
pub mod cube;

/// Which of the backend's weight products a call is ([`crate::RmasBackend::per_row_limit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    /// A layer's dense weight ([`crate::RmasBackend::linear_matmul`]).
    Linear,
    /// A dense vocabulary matrix ([`crate::RmasBackend::vocab_logits`]).
    Vocab,
    /// Quantized blocks ([`crate::RmasBackend::quant_matmul`]).
    Quant,
    /// A dense gated-MLP weight and its activation ([`crate::RmasBackend::gated_matmul`]).
    Gated,
}

/// What a weight product may assume of its activation rows (docs/batching.md, "Batch invariance").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// Rows of one sequence: the backend's fastest algorithm for their count.
    Sequence,
    /// Rows of several sequences that each would take the per-row path alone
    /// ([`crate::RmasBackend::per_row_limit`]): that path for every row, whatever their count.
    PerRow,
}

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
