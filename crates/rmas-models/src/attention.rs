//! Causal softmax attention with GQA, optional q/k norms, output gate and sliding window, over a KV cache.

use burn::tensor::{DType, Tensor, backend::Backend};

use rmas_kernels::{Act, RmasBackend};

use crate::config::{Config, LayerConfig};
use crate::error::Result;
use crate::nn::{Linear, Loader, RmsNorm, apply_rope};

/// Keys and values of one attention layer, preallocated to the cache capacity.
#[derive(Clone, Debug)]
pub struct KvCache<B: Backend> {
    k: Tensor<B, 3>, // [nkv, capacity, head_dim]
    v: Tensor<B, 3>, // [nkv, capacity, head_dim]
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `capacity` positions.
    pub fn new(num_kv_heads: usize, capacity: usize, head_dim: usize, device: &B::Device, dtype: DType) -> Self {
        let zeros = || Tensor::zeros([num_kv_heads, capacity, head_dim], (device, dtype));
        Self { k: zeros(), v: zeros(), len: 0 }
    }

    /// Appends `[nkv, T, hd]` keys/values and returns everything cached so far.
    fn append(&mut self, k: Tensor<B, 3>, v: Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let [h, t, d] = k.dims();
        let (s, e) = (self.len, self.len + t);
        self.k.inplace(|c| c.slice_assign([0..h, s..e, 0..d], k));
        self.v.inplace(|c| c.slice_assign([0..h, s..e, 0..d], v));
        self.len = e;
        (self.k.clone().narrow(1, 0, e), self.v.clone().narrow(1, 0, e))
    }
}

/// One attention block (`self_attn.*`).
#[derive(Clone, Debug)]
pub struct Attention<B: Backend> {
    q_proj: Linear<B>,
    k_proj: Linear<B>,
    v_proj: Linear<B>,
    o_proj: Linear<B>,
    q_norm: Option<RmsNorm<B>>,
    k_norm: Option<RmsNorm<B>>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    gated: bool,
    scale: f64,
    window: Option<usize>,
}

impl<B: RmasBackend> Attention<B> {
    /// Loads `q_proj`, `k_proj`, `v_proj`, `o_proj` (and q/k norms) below `l`.
    pub fn load(l: &Loader<B>, c: &Config, layer: &LayerConfig) -> Result<Self> {
        let (h, nh, nkv, hd) = (c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim);
        let q_out = if c.attn_output_gate { 2 * nh * hd } else { nh * hd };
        let norm = |name: &str| RmsNorm::load(l, name, hd, c.norm, c.rms_norm_eps);
        Ok(Self {
            q_proj: Linear::load(l, "q_proj", h, q_out, c.qkv_bias)?,
            k_proj: Linear::load(l, "k_proj", h, nkv * hd, c.qkv_bias)?,
            v_proj: Linear::load(l, "v_proj", h, nkv * hd, c.qkv_bias)?,
            o_proj: Linear::load(l, "o_proj", nh * hd, h, c.o_bias)?,
            q_norm: if c.qk_norm { Some(norm("q_norm")?) } else { None },
            k_norm: if c.qk_norm { Some(norm("k_norm")?) } else { None },
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
            gated: c.attn_output_gate,
            scale: c.attn_scale,
            window: layer.window,
        })
    }

    /// Attends `x` `[T, hidden]` (the positions after the cache's) to itself and the cache.
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        rope: &(Tensor<B, 2>, Tensor<B, 2>),
        cache: &mut KvCache<B>,
    ) -> Tensor<B, 2> {
        let [t, _] = x.dims();
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q = self.q_proj.forward(x.clone());
        let (q, gate) = if self.gated {
            let qg = q.reshape([t, nh, 2 * hd]); // per head: hd query rows then hd gate rows
            (qg.clone().narrow(2, 0, hd), Some(qg.narrow(2, hd, hd).reshape([t, nh * hd])))
        } else {
            (q.reshape([t, nh, hd]), None)
        };
        let k = self.k_proj.forward(x.clone()).reshape([t, nkv, hd]);
        let v = self.v_proj.forward(x).reshape([t, nkv, hd]);
        let (q, k) = match (&self.q_norm, &self.k_norm) {
            (Some(qn), Some(kn)) => (qn.forward(q), kn.forward(k)),
            _ => (q, k),
        };
        let q = apply_rope(q, &rope.0, &rope.1).swap_dims(0, 1); // [nh, T, hd]
        let k = apply_rope(k, &rope.0, &rope.1).swap_dims(0, 1); // [nkv, T, hd]
        let (k_all, v_all) = cache.append(k, v.swap_dims(0, 1)); // [nkv, L, hd]
        let o = B::causal_attention(q, k_all, v_all, self.scale, self.window); // [nh, T, hd]
        let o = o.swap_dims(0, 1).reshape([t, nh * hd]);
        let o = match gate {
            Some(g) => B::activate(g, Act::Sigmoid, Some(o)),
            None => o,
        };
        self.o_proj.forward(o)
    }
}
