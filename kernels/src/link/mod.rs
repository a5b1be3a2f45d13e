//! Reference paths of the latent-fusion operations (the RecursiveLinks' normalisation and activation
//! stages around their matmuls), for every backend.

use burn::tensor::{Tensor, activation::gelu, backend::Backend};

pub(crate) mod cube;

/// LayerNorm over each row of `a + residual + bias` (`[T, D]`, biased variance, as `torch.nn.LayerNorm`).
pub fn layer_norm_sum<B: Backend>(
    a: Tensor<B, 2>,
    residual: Option<Tensor<B, 2>>,
    bias: Option<Tensor<B, 1>>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, 2> {
    let mut x = a;
    if let Some(r) = residual {
        x = x + r;
    }
    if let Some(b) = bias {
        x = x + b.unsqueeze_dim(0);
    }
    let (var, mean) = x.clone().var_mean_bias(1);
    (x - mean) / (var + eps).sqrt() * gamma.unsqueeze_dim(0) + beta.unsqueeze_dim(0)
}

/// Exact (erf) GELU of `x + bias` (`[T, D]`, bias `[D]`).
pub fn bias_gelu<B: Backend>(x: Tensor<B, 2>, bias: Tensor<B, 1>) -> Tensor<B, 2> {
    gelu(x + bias.unsqueeze_dim(0))
}
