//! Causal softmax attention with GQA, optional q/k norms, output gate and sliding window, over a KV cache.

use burn::tensor::{Bool, DType, Tensor, TensorData, backend::Backend};

use rmas_kernels::{Act, RmasBackend};

use crate::config::{Config, LayerConfig};
use crate::error::Result;
use crate::nn::{Linear, Loader, RmsNorm, apply_rope, to_f32};

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
            o_proj: Linear::load(l, "o_proj", nh * hd, h, false)?,
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

    /// Attends `x` `[T, hidden]` at positions `start..start+T` to itself and the cache.
    pub fn forward(&self, x: Tensor<B, 2>, start: usize, rope: &(Tensor<B, 2>, Tensor<B, 2>), cache: &mut KvCache<B>) -> Tensor<B, 2> {
        let [t, _] = x.dims();
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let rep = nh / nkv;
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
        let (k_all, v_all) = cache.append(k, v.swap_dims(0, 1));
        let mut k_len = start + t;
        let (mut k_all, mut v_all) = (k_all, v_all);
        // A single row with a window only needs the window's keys.
        if let (1, Some(w)) = (t, self.window)
            && k_len > w
        {
            k_all = k_all.narrow(1, k_len - w, w);
            v_all = v_all.narrow(1, k_len - w, w);
            k_len = w;
        }
        // GQA without copying K/V: query heads of one KV group become rows, [nkv, rep·T, hd].
        let q = q.reshape([nkv, rep * t, hd]);
        let scores = to_f32(q.matmul(k_all.swap_dims(1, 2))) * self.scale; // [nkv, rep·T, L]
        let scores = if t > 1 {
            let mask = self.mask(start, t, k_len, rep, &scores.device());
            scores.mask_fill(mask, f32::NEG_INFINITY)
        } else {
            scores
        };
        let probs = B::softmax_last(scores).cast(v_all.dtype());
        let o = probs.matmul(v_all).reshape([nh, t, hd]).swap_dims(0, 1).reshape([t, nh * hd]);
        let o = match gate {
            Some(g) => B::activate(g, Act::Sigmoid, Some(o)),
            None => o,
        };
        self.o_proj.forward(o)
    }

    /// `true` where query `start+i` may not see key `j`: `[1, rep·T, L]`, bottom-right aligned causal + window.
    fn mask(&self, start: usize, t: usize, k_len: usize, rep: usize, device: &B::Device) -> Tensor<B, 3, Bool> {
        let mut m = Vec::with_capacity(rep * t * k_len);
        for _ in 0..rep {
            for i in 0..t {
                let p = start + i;
                m.extend((0..k_len).map(|j| j > p || self.window.is_some_and(|w| j + w <= p)));
            }
        }
        Tensor::from_data(TensorData::new(m, [1, rep * t, k_len]), device)
    }
}
