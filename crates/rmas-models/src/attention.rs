//! Causal softmax attention with GQA, optional q/k norms, output gate and sliding window, over a KV cache.

use burn::tensor::{DType, Tensor, backend::Backend};

use rmas_kernels::RmasBackend;
use rmas_kernels::attn::Queries;

use crate::config::{Config, LayerConfig};
use crate::error::Result;
use crate::nn::{Linear, Loader, RmsNorm};

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
}

impl<B: RmasBackend> KvCache<B> {
    /// Appends one sequence's keys (`[T, nkv, width]`, normed with `norm` and rotated by `rope`
    /// `[T, rot]` on the way in) and values (`[T, nkv, hd]`); returns the whole cache `[nkv,
    /// capacity, hd]` (shared, not copied) with the number of rows now filled.
    fn append(
        &mut self,
        k: Tensor<B, 3>,
        v: Tensor<B, 3>,
        norm: Option<(Tensor<B, 1>, f64)>,
        rope: (Tensor<B, 2>, Tensor<B, 2>),
    ) -> (Tensor<B, 3>, Tensor<B, 3>, usize) {
        let (s, e) = (self.len, self.len + v.dims()[0]);
        // Taken out (as `Tensor::inplace` does), so that the caches' buffers are written in place.
        let take = |t: &mut Tensor<B, 3>| std::mem::replace(t, Tensor::empty([0; 3], &v.device()));
        let caches = (take(&mut self.k), take(&mut self.v));
        (self.k, self.v) = B::append_kv(caches, k, v, norm, rope, s);
        self.len = e;
        (self.k.clone(), self.v.clone(), e)
    }
}

/// One attention block (`self_attn.*`).
#[derive(Clone, Debug)]
pub struct Attention<B: Backend> {
    qkv_proj: Linear<B>, // queries ‖ (gates) ‖ keys ‖ values: [hidden, (1|2)·nh·hd + 2·nkv·hd]
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
    /// The weight products: the fused input projection and the output one.
    pub fn linears(&self) -> [&Linear<B>; 2] {
        [&self.qkv_proj, &self.o_proj]
    }

    /// [`Self::linears`], mutable.
    pub fn linears_mut(&mut self) -> [&mut Linear<B>; 2] {
        [&mut self.qkv_proj, &mut self.o_proj]
    }

    /// Loads `q_proj`, `k_proj`, `v_proj`, `o_proj` (and q/k norms) below `l`.
    pub fn load(l: &Loader<B>, c: &Config, layer: &LayerConfig) -> Result<Self> {
        let (h, nh, nkv, hd) = (c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim);
        let q_out = if c.attn_output_gate { 2 * nh * hd } else { nh * hd };
        let norm = |name: &str| RmsNorm::load(l, name, hd, c.norm, c.rms_norm_eps);
        let q_proj = Linear::load(l, "q_proj", h, q_out, c.qkv_bias)?;
        // HF interleaves each head's query and gate rows; regrouped, queries and gates are two slices.
        let q_proj = if c.attn_output_gate { q_proj.regroup_outputs(nh, 2, hd) } else { q_proj };
        Ok(Self {
            qkv_proj: Linear::concat(vec![
                q_proj,
                Linear::load(l, "k_proj", h, nkv * hd, c.qkv_bias)?,
                Linear::load(l, "v_proj", h, nkv * hd, c.qkv_bias)?,
            ]),
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

    /// Attends packed rows `x` `[ΣT, hidden]`; `rows` holds each sequence's row count, cache and
    /// rotary tables at its positions, in packing order. The projections run once on all rows;
    /// each sequence's keys are normed and rotated on their way into its cache (one kernel with
    /// the values' write), and its queries normed, rotated, attended to itself and its own cache
    /// and gated in one call ([`RmasBackend::attend`]) that writes its rows of the packed output
    /// (docs/batching.md).
    pub fn forward(&self, x: Tensor<B, 2>, rows: Vec<AttentionRow<'_, B>>) -> Tensor<B, 2> {
        let [n, _] = x.dims();
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q_heads = if self.gated { 2 * nh } else { nh }; // queries, then (regrouped at load) gates
        let slots = q_heads + 2 * nkv;
        let lens: Vec<usize> = rows.iter().map(|r| r.len).collect();
        let qkv = self.qkv_proj.forward_packed(x, &lens).reshape([n, slots, hd]); // [ΣT, slots, hd]; the slices below are views
        let (q_norm, k_norm) = (self.q_norm.as_ref().map(RmsNorm::parts), self.k_norm.as_ref().map(RmsNorm::parts));
        let (device, dtype) = (qkv.device(), qkv.dtype());
        let q = qkv.clone().narrow(1, 0, nh); // [ΣT, nh, hd], normed and rotated by `attend`
        let gate = self.gated.then(|| qkv.clone().narrow(1, nh, nh)); // [ΣT, nh, hd]
        let k = qkv.clone().narrow(1, q_heads, nkv); // [ΣT, nkv, hd], normed and rotated into each cache
        let v = qkv.narrow(1, q_heads + nkv, nkv); // [ΣT, nkv, hd]
        let (scale, window) = (self.scale, self.window);
        let starts = lens.iter().scan(0, |at, &len| Some(std::mem::replace(at, *at + len)));
        let shares: Vec<_> = lens.iter().copied().zip(starts.zip(rows)).collect();
        let o = B::per_sequence(shares, ([nh, hd], dtype, &device), |(start, row), into| {
            let AttentionRow { len, cache, rope: (cos, sin) } = row;
            let rows = |t: &Tensor<B, 3>| t.clone().narrow(0, start, len); // [T, ·, hd]
            let (k_all, v_all, keys) = cache.append(rows(&k), rows(&v), k_norm.clone(), (cos.clone(), sin.clone())); // [nkv, capacity, hd], `keys` filled
            let queries = Queries { q: rows(&q), norm: q_norm.clone(), cos, sin, gate: gate.as_ref().map(rows) };
            B::attend(queries, k_all, v_all, keys, scale, window, into)
        }); // [ΣT, nh, hd]
        self.o_proj.forward_packed(o.reshape([n, nh * hd]), &lens)
    }
}

/// One sequence's share of a packed attention call.
pub struct AttentionRow<'a, B: Backend> {
    /// Its number of rows in the packed input.
    pub len: usize,
    /// Its keys and values.
    pub cache: &'a mut KvCache<B>,
    /// The rotary tables (`cos`, `sin`, each `[T, rot_dim]`) at its positions.
    pub rope: (Tensor<B, 2>, Tensor<B, 2>),
}
