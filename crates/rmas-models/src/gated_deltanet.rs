//! Qwen3.5's Gated DeltaNet mixer (`linear_attn.*`); the rest of Qwen3.5 is the shared decoder.

use burn::tensor::{DType, Tensor, backend::Backend};
use rmas_kernels::{DeltaRule, GatedNorm, RmasBackend};

use crate::config::{Config, GdnConfig};
use crate::error::Result;
use crate::nn::{Linear, Loader, split_rows};

/// Recurrent state of one Gated DeltaNet layer.
#[derive(Clone, Debug)]
pub struct DeltaState<B: Backend> {
    conv: Tensor<B, 2>, // [K−1, conv_dim]: the last pre-conv inputs, oldest first
    ssm: Tensor<B, 3>,  // [nv, dk, dv], always f32
}

impl<B: Backend> DeltaState<B> {
    /// A zero state.
    pub fn new(c: &GdnConfig, device: &B::Device, dtype: DType) -> Self {
        Self {
            conv: Tensor::zeros([c.conv_kernel - 1, c.conv_dim()], (device, dtype)),
            ssm: Tensor::zeros([c.num_value_heads, c.key_head_dim, c.value_head_dim], (device, DType::F32)),
        }
    }
}

/// One Gated DeltaNet block.
#[derive(Clone, Debug)]
pub struct GatedDeltaNet<B: Backend> {
    in_proj: Linear<B>, // in_proj_qkv ‖ in_proj_z ‖ in_proj_a ‖ in_proj_b: [hidden, conv_dim + value_dim + 2·nv]
    conv: Tensor<B, 2>, // [K, conv_dim]: row j multiplies input t−K+1+j
    decay: Tensor<B, 2>, // f32 [2, nv]: dt_bias, then −exp(A_log)
    norm: Tensor<B, 1>, // f32 [dv], plain (not zero-centred)
    out_proj: Linear<B>,
    cfg: GdnConfig,
    eps: f64,
}

impl<B: RmasBackend> GatedDeltaNet<B> {
    /// The weight products: the fused input projection and the output one.
    pub fn linears(&self) -> [&Linear<B>; 2] {
        [&self.in_proj, &self.out_proj]
    }

    /// [`Self::linears`], mutable.
    pub fn linears_mut(&mut self) -> [&mut Linear<B>; 2] {
        [&mut self.in_proj, &mut self.out_proj]
    }

    /// Loads `linear_attn.*` below `l`.
    pub fn load(l: &Loader<B>, c: &Config, cfg: GdnConfig) -> Result<Self> {
        let (h, nv, k) = (c.hidden_size, cfg.num_value_heads, cfg.conv_kernel);
        let f32_tensor =
            |name: &str, n: usize| l.weights.tensor::<B, 1>(&format!("{}{name}", l.prefix), [n], l.device, DType::F32);
        let parts =
            [("in_proj_qkv", cfg.conv_dim()), ("in_proj_z", cfg.value_dim()), ("in_proj_a", nv), ("in_proj_b", nv)];
        Ok(Self {
            in_proj: Linear::load_fused(l, &parts, h, false)?,
            conv: l.weights.tensor_transposed(
                &format!("{}conv1d.weight", l.prefix),
                &[cfg.conv_dim(), 1, k],
                l.device,
                l.dtype,
            )?,
            decay: Tensor::stack(vec![f32_tensor("dt_bias", nv)?, f32_tensor("A_log", nv)?.exp().neg()], 0),
            norm: f32_tensor("norm.weight", cfg.value_head_dim)?,
            out_proj: Linear::load(l, "out_proj", cfg.value_dim(), h, false)?,
            cfg,
            eps: c.rms_norm_eps,
        })
    }

    /// Mixes packed rows `x` `[ΣT, hidden]`: `rows` holds each sequence's row count and state, in
    /// packing order; projections run once on all rows, the convolution and the delta rule per sequence.
    pub fn forward(&self, x: Tensor<B, 2>, rows: Vec<(usize, &mut DeltaState<B>)>) -> Tensor<B, 2> {
        let [n, _] = x.dims();
        let c = &self.cfg;
        let (nv, dv, conv_dim, value_dim) = (c.num_value_heads, c.value_head_dim, c.conv_dim(), c.value_dim());
        let lens: Vec<usize> = rows.iter().map(|(len, _)| *len).collect();
        let y = self.in_proj.forward_packed(x, &lens); // [ΣT, conv_dim + value_dim + 2·nv]: qkv ‖ z ‖ a ‖ b
        let (conv, decay, norm_weight, eps) = (&self.conv, &self.decay, &self.norm, self.eps);
        let (device, dtype) = (y.device(), y.dtype());
        let shares: Vec<_> = lens.iter().copied().zip(split_rows(y, &lens).into_iter().zip(rows)).collect(); // each [T, conv_dim + value_dim + 2·nv]
        let o = B::per_sequence(shares, ([nv, dv], dtype, &device), |(y, (_, state)), into| {
            // Views of the one product: q ‖ k ‖ v [T, conv_dim] before the causal depthwise conv (+
            // SiLU, over [conv state ‖ qkv]), the gates' raw inputs a ‖ b [T, 2·nv] and the norm's gate z [T, nv·dv].
            let qkv = y.clone().narrow(1, 0, conv_dim);
            let ab = y.clone().narrow(1, conv_dim + value_dim, 2 * nv);
            let z = y.narrow(1, conv_dim, value_dim);
            let norm = GatedNorm { z, weight: norm_weight.clone(), eps };
            let rule = DeltaRule { qkv, ab, decay: decay.clone(), state: state.ssm.clone() };
            let (o, ssm, conv_state) = B::conv_delta_rule(rule, (state.conv.clone(), conv.clone()), Some(norm), into);
            (state.ssm, state.conv) = (ssm, conv_state);
            o // [T, nv, dv] normed, in qkv's dtype (or the pack so far)
        }); // [ΣT, nv, dv]
        self.out_proj.forward_packed(o.reshape([n, nv * dv]), &lens)
    }
}
