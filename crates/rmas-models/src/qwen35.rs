//! Qwen3.5's Gated DeltaNet mixer (`linear_attn.*`); the rest of Qwen3.5 is the shared decoder.

use burn::tensor::{DType, Tensor, backend::Backend};
use rmas_kernels::{Act, DeltaRule, GatedNorm, RmasBackend};

use crate::config::{Config, GdnConfig};
use crate::error::Result;
use crate::nn::{Linear, Loader, to_f32};

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
    in_proj_qkv: Linear<B>,
    in_proj_z: Linear<B>,
    in_proj_b: Linear<B>,
    in_proj_a: Linear<B>,
    conv: Tensor<B, 2>,      // [K, conv_dim]: row j multiplies input t−K+1+j
    neg_decay: Tensor<B, 1>, // −exp(A_log), f32 [nv]
    dt_bias: Tensor<B, 1>,   // f32 [nv]
    norm: Tensor<B, 1>,      // f32 [dv], plain (not zero-centred)
    out_proj: Linear<B>,
    cfg: GdnConfig,
    eps: f64,
}

impl<B: RmasBackend> GatedDeltaNet<B> {
    /// Loads `linear_attn.*` below `l`.
    pub fn load(l: &Loader<B>, c: &Config, cfg: GdnConfig) -> Result<Self> {
        let (h, nv, k) = (c.hidden_size, cfg.num_value_heads, cfg.conv_kernel);
        let f32_tensor = |name: &str, n: usize| {
            l.weights.tensor::<B, 1>(&format!("{}{name}", l.prefix), [n], l.device, DType::F32)
        };
        let conv: Tensor<B, 3> = l.tensor("conv1d.weight", [cfg.conv_dim(), 1, k])?;
        Ok(Self {
            in_proj_qkv: Linear::load(l, "in_proj_qkv", h, cfg.conv_dim(), false)?,
            in_proj_z: Linear::load(l, "in_proj_z", h, cfg.value_dim(), false)?,
            in_proj_b: Linear::load(l, "in_proj_b", h, nv, false)?,
            in_proj_a: Linear::load(l, "in_proj_a", h, nv, false)?,
            conv: conv.reshape([cfg.conv_dim(), k]).transpose(),
            neg_decay: f32_tensor("A_log", nv)?.exp().neg(),
            dt_bias: f32_tensor("dt_bias", nv)?,
            norm: f32_tensor("norm.weight", cfg.value_head_dim)?,
            out_proj: Linear::load(l, "out_proj", cfg.value_dim(), h, false)?,
            cfg,
            eps: c.rms_norm_eps,
        })
    }

    /// Mixes `x` `[T, hidden]`, continuing from and updating `state`.
    pub fn forward(&self, x: Tensor<B, 2>, state: &mut DeltaState<B>) -> Tensor<B, 2> {
        let [t, _] = x.dims();
        let c = &self.cfg;
        let (nk, nv, dk, dv, k_taps) = (c.num_key_heads, c.num_value_heads, c.key_head_dim, c.value_head_dim, c.conv_kernel);

        // Causal depthwise conv over [conv state ‖ qkv].
        let qkv = self.in_proj_qkv.forward(x.clone()); // [T, conv_dim]
        let window = Tensor::cat(vec![state.conv.clone(), qkv], 0); // [K−1+T, conv_dim]
        let mixed = (0..k_taps)
            .map(|j| window.clone().narrow(0, j, t) * self.conv.clone().narrow(0, j, 1))
            .reduce(|a, b| a + b)
            .expect("conv kernel has at least one tap");
        state.conv = window.narrow(0, t, k_taps - 1);
        let u = B::activate(mixed, Act::Silu, None);

        let heads = |x: Tensor<B, 2>, n: usize, d: usize| x.reshape([t, n, d]);
        let q = heads(u.clone().narrow(1, 0, c.key_dim()), nk, dk);
        let k = heads(u.clone().narrow(1, c.key_dim(), c.key_dim()), nk, dk);
        let v = heads(u.narrow(1, 2 * c.key_dim(), c.value_dim()), nv, dv);
        // Value head h reads key head h / (nv/nk).
        let rep = nv / nk;
        let repeat = |x: Tensor<B, 3>| {
            if rep == 1 { x } else { x.unsqueeze_dim::<4>(2).expand([t, nk, rep, dk]).reshape([t, nv, dk]) }
        };
        let l2 = |x: Tensor<B, 3>| {
            let x = to_f32(x);
            x.clone() * (x.powi_scalar(2).sum_dim(2) + 1e-6).sqrt().recip()
        };
        let q = l2(repeat(q)) * (dk as f64).powf(-0.5);
        let k = l2(repeat(k));

        // Gates head-major and contiguous, [nv, T]: burn 0.21's cubecl reshape mis-strides views such as
        // a transposed [nv, 1], so they must not be transposes of [T, nv].
        let beta = to_f32(B::activate(self.in_proj_b.forward_features_first(x.clone()), Act::Sigmoid, None));
        let a = to_f32(self.in_proj_a.forward_features_first(x.clone())) + self.dt_bias.clone().unsqueeze_dim::<2>(1);
        let g = softplus(a) * self.neg_decay.clone().unsqueeze_dim::<2>(1); // log-decay ≤ 0

        let z = self.in_proj_z.forward(x).reshape([t, nv, dv]);
        let norm = GatedNorm { z, weight: self.norm.clone(), eps: self.eps };
        let (o, ssm) = B::gated_delta_rule(DeltaRule { q, k, v, g, beta, state: state.ssm.clone() }, Some(norm));
        state.ssm = ssm;
        self.out_proj.forward(o.reshape([t, nv * dv])) // o: [T, nv, dv] normed, in v's dtype
    }
}

/// `log(1 + eˣ)` without overflow: `max(x, 0) + log1p(e^{−|x|})`.
fn softplus<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    x.clone().clamp_min(0.0) + x.abs().neg().exp().log1p()
}
