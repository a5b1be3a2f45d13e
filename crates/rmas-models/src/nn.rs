//! Building blocks shared by every family and the RecursiveLinks: linear layers, RMSNorm and
//! LayerNorm, rotary tables, MLP. Like the models, they are plain structs of tensors built by a
//! loader, not burn `Module`s (docs/extending.md, "Models are plain structs").

use burn::tensor::{DType, Int, Tensor, TensorData, backend::Backend};

use rmas_kernels::RmasBackend;

use crate::config::{Activation, NormKind, RopeConfig, RopeScaling};
use crate::error::Result;
use crate::weights::Weights;

/// Loading context: weights, name prefix, device and compute dtype.
pub struct Loader<'a, B: Backend> {
    pub weights: &'a Weights,
    pub prefix: String,
    pub device: &'a B::Device,
    pub dtype: DType,
}

impl<'a, B: Backend> Loader<'a, B> {
    /// A loader for the names below `prefix.`.
    pub fn at(&self, prefix: impl std::fmt::Display) -> Self {
        Self {
            weights: self.weights,
            prefix: format!("{}{prefix}.", self.prefix),
            device: self.device,
            dtype: self.dtype,
        }
    }
    /// Loads `prefix + name` with the given shape in the compute dtype.
    pub fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        self.weights.tensor(&format!("{}{name}", self.prefix), shape, self.device, self.dtype)
    }
    /// Loads an optional tensor (absent → `None`).
    pub fn optional<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Option<Tensor<B, D>>> {
        if self.weights.contains(&format!("{}{name}", self.prefix)) {
            self.tensor(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Linear layer; the HF weight `[out, in]` is stored transposed, `[in, out]`, so `x·Wᵀ` is a plain matmul.
#[derive(Clone, Debug)]
pub struct Linear<B: Backend> {
    pub weight_t: Tensor<B, 2>,
    pub bias: Option<Tensor<B, 1>>,
}

impl<B: Backend> Linear<B> {
    /// A layer from its transposed weight `[in, out]` and optional bias `[out]`.
    pub fn new(weight_t: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Self {
        Self { weight_t, bias }
    }

    /// Input width.
    pub fn in_dim(&self) -> usize {
        self.weight_t.dims()[0]
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.weight_t.dims()[1]
    }

    /// Loads `name.weight` (and `name.bias` when `bias`).
    pub fn load(l: &Loader<B>, name: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        let weight_t =
            l.weights.tensor_transposed(&format!("{}{name}.weight", l.prefix), &[d_out, d_in], l.device, l.dtype)?;
        let bias = if bias { Some(l.tensor(&format!("{name}.bias"), [d_out])?) } else { None };
        Ok(Self { weight_t, bias })
    }

    /// `W·xᵀ + b` as `[out, T]` (contiguous, features first) for `x` `[T, in]`.
    pub fn forward_features_first(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let y = self.weight_t.clone().transpose().matmul(x.transpose());
        match &self.bias {
            Some(b) => y + b.clone().unsqueeze_dim::<2>(1),
            None => y,
        }
    }

    /// `x·Wᵀ` for `x` `[T, in]`, without the bias (for stages that fuse it into what follows).
    pub fn product(&self, x: Tensor<B, 2>) -> Tensor<B, 2>
    where
        B: RmasBackend,
    {
        B::linear_matmul(x, self.weight_t.clone())
    }

    /// `x·Wᵀ + b` for `x` `[T, in]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2>
    where
        B: RmasBackend,
    {
        let y = self.product(x);
        match &self.bias {
            Some(b) => y + b.clone().unsqueeze::<2>(),
            None => y,
        }
    }
}

/// A LayerNorm as `torch.nn.LayerNorm` computes it (biased variance, scale and shift `[D]`).
#[derive(Clone, Debug)]
pub struct LayerNorm<B: Backend> {
    /// Scale `[D]`.
    pub weight: Tensor<B, 1>,
    /// Shift `[D]`.
    pub bias: Tensor<B, 1>,
    /// Added to the variance.
    pub eps: f64,
}

impl<B: RmasBackend> LayerNorm<B> {
    /// LayerNorm of `a + residual + bias` per row `[T, D]` (one fused kernel on cubecl backends).
    pub fn forward_sum(
        &self,
        a: Tensor<B, 2>,
        residual: Option<Tensor<B, 2>>,
        bias: Option<Tensor<B, 1>>,
    ) -> Tensor<B, 2> {
        B::layer_norm_sum(a, residual, bias, self.weight.clone(), self.bias.clone(), self.eps)
    }
}

/// A `[V, H]` vocabulary matrix (token embedding or LM head) in row blocks, each small enough for
/// one device buffer (WebGPU caps a binding, often at 128 MiB–2 GiB; a 248k-row embedding exceeds it).
#[derive(Clone, Debug)]
pub struct VocabMatrix<B: Backend> {
    blocks: Vec<Tensor<B, 2>>, // each [block_rows, H], the last may be shorter
    block_rows: usize,
}

impl<B: Backend> VocabMatrix<B> {
    /// Loads `name` `[v, h]` in blocks of at most `max_bytes` each (in the compute dtype).
    pub fn load(l: &Loader<B>, name: &str, [v, h]: [usize; 2], max_bytes: u64) -> Result<Self> {
        let row_bytes = (h * l.dtype.size()).max(1) as u64;
        let block_rows = (max_bytes / row_bytes).clamp(1, v.max(1) as u64) as usize;
        let name = format!("{}{name}", l.prefix);
        let blocks = (0..v)
            .step_by(block_rows)
            .map(|r| {
                Ok(Tensor::from_data(l.weights.rows(&name, &[v, h], r..(r + block_rows).min(v))?, (l.device, l.dtype)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { blocks, block_rows })
    }

    /// Splits a matrix `[V, H]` into blocks of `block_rows` rows.
    pub fn from_tensor(m: Tensor<B, 2>, block_rows: usize) -> Self {
        let v = m.dims()[0];
        let block_rows = block_rows.clamp(1, v.max(1));
        let blocks = (0..v).step_by(block_rows).map(|r| m.clone().slice(r..(r + block_rows).min(v))).collect();
        Self { blocks, block_rows }
    }

    /// How many blocks the matrix is held in.
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// The rows `ids` (all `< V`), `[T, H]`.
    pub fn rows(&self, ids: &[u32]) -> Tensor<B, 2> {
        let device = self.blocks[0].device();
        let index = |v: Vec<i64>| Tensor::<B, 1, Int>::from_data(TensorData::new(v.clone(), [v.len()]), &device);
        if self.blocks.len() == 1 {
            return self.blocks[0].clone().select(0, index(ids.iter().map(|&i| i as i64).collect()));
        }
        // Gather per block, then put the rows back in the order of `ids`.
        let (mut parts, mut order) = (Vec::new(), Vec::new());
        for (b, block) in self.blocks.iter().enumerate() {
            let (at, local): (Vec<usize>, Vec<i64>) = ids
                .iter()
                .enumerate()
                .filter(|(_, id)| **id as usize / self.block_rows == b)
                .map(|(p, id)| (p, (*id as usize % self.block_rows) as i64))
                .unzip();
            if !at.is_empty() {
                parts.push(block.clone().select(0, index(local)));
                order.extend(at);
            }
        }
        let mut inverse = vec![0i64; ids.len()];
        for (k, p) in order.into_iter().enumerate() {
            inverse[p] = k as i64;
        }
        Tensor::cat(parts, 0).select(0, index(inverse)) // [T, H] in block order → in `ids` order
    }

    /// `h·Mᵀ` `[T, V]` for `h` `[T, H]`.
    pub fn logits(&self, h: Tensor<B, 2>) -> Tensor<B, 2>
    where
        B: RmasBackend,
    {
        let parts: Vec<_> = self.blocks.iter().map(|m| B::vocab_logits(h.clone(), m.clone())).collect();
        if parts.len() == 1 { parts.into_iter().next().expect("one block") } else { Tensor::cat(parts, 1) }
    }
}

/// RMSNorm over the last dimension, computed in f32 and cast back after the weight multiply
/// ([`RmasBackend::rms_norm`]).
#[derive(Clone, Debug)]
pub struct RmsNorm<B: Backend> {
    /// The effective scale: `w` or `1 + w` (zero-centred norms are folded at load).
    pub scale: Tensor<B, 1>,
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// Loads `name.weight` of width `dim`.
    pub fn load(l: &Loader<B>, name: &str, dim: usize, kind: NormKind, eps: f64) -> Result<Self> {
        let w = l.weights.tensor::<B, 1>(&format!("{}{name}.weight", l.prefix), [dim], l.device, DType::F32)?;
        let scale = match kind {
            NormKind::Plain => w,
            NormKind::ZeroCentred => w + 1.0,
        };
        Ok(Self { scale, eps })
    }

    /// Normalises `x` `[.., dim]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D>
    where
        B: RmasBackend,
    {
        B::rms_norm(x, self.scale.clone(), self.eps)
    }
}

/// Gated MLP: `down(act(gate(x)) ⊙ up(x))`.
#[derive(Clone, Debug)]
pub struct Mlp<B: Backend> {
    pub gate: Linear<B>,
    pub up: Linear<B>,
    pub down: Linear<B>,
    pub act: Activation,
}

impl<B: RmasBackend> Mlp<B> {
    /// Loads `gate_proj`, `up_proj`, `down_proj` below `l`.
    pub fn load(l: &Loader<B>, hidden: usize, inter: usize, act: Activation, bias: bool) -> Result<Self> {
        Ok(Self {
            gate: Linear::load(l, "gate_proj", hidden, inter, bias)?,
            up: Linear::load(l, "up_proj", hidden, inter, bias)?,
            down: Linear::load(l, "down_proj", inter, hidden, bias)?,
            act,
        })
    }

    /// Applies the MLP to `[T, hidden]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let g = self.gate.forward(x.clone());
        self.down.forward(B::activate(g, self.act, Some(self.up.forward(x))))
    }
}

/// Rotary embedding: inverse frequencies of one table (rotate-half over the first `dim` features).
#[derive(Clone, Debug)]
pub struct Rope {
    inv_freq: Vec<f32>,
    /// Factor on cos and sin (YaRN's attention factor, else 1).
    scale: f32,
    pub dim: usize,
}

impl Rope {
    /// Builds the (scaled) inverse frequencies like HF, in f32.
    pub fn new(cfg: &RopeConfig) -> Self {
        let (half, dim) = (cfg.dim / 2, cfg.dim as f32);
        let pos_freq = |i: usize| (cfg.theta as f32).powf((2 * i) as f32 / dim);
        let mut scale = 1.0;
        let inv_freq = match cfg.scaling {
            RopeScaling::None => (0..half).map(|i| 1.0 / pos_freq(i)).collect(),
            RopeScaling::Linear { factor } => (0..half).map(|i| 1.0 / pos_freq(i) / factor as f32).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_positions } => {
                let (factor, low, high, orig) =
                    (factor as f32, low_freq_factor as f32, high_freq_factor as f32, original_max_positions as f32);
                (0..half)
                    .map(|i| {
                        let base = 1.0 / pos_freq(i);
                        let wavelen = 2.0 * std::f32::consts::PI / base;
                        if wavelen > orig / low {
                            base / factor
                        } else if wavelen < orig / high {
                            base
                        } else {
                            let s = (orig / wavelen - low) / (high - low);
                            (1.0 - s) * base / factor + s * base
                        }
                    })
                    .collect()
            }
            RopeScaling::Yarn { factor, beta_fast, beta_slow, original_max_positions, truncate, attention_factor } => {
                scale = attention_factor as f32;
                // Feature index (of `dim`) at which a wave turns `rotations` times over the original context, in f64.
                let dim = cfg.dim as f64;
                let correction = |rotations: f64| {
                    dim * (original_max_positions / (rotations * 2.0 * std::f64::consts::PI)).ln()
                        / (2.0 * cfg.theta.ln())
                };
                let (low, high) = (correction(beta_fast), correction(beta_slow));
                let (low, high) = if truncate { (low.floor(), high.ceil()) } else { (low, high) };
                let (low, high) = (low.max(0.0), high.min(dim - 1.0));
                let high = if low == high { high + 0.001 } else { high };
                (0..half)
                    .map(|i| {
                        let extrapolation = 1.0 - ((i as f32 - low as f32) / (high - low) as f32).clamp(0.0, 1.0);
                        let p = pos_freq(i);
                        1.0 / (factor as f32 * p) * (1.0 - extrapolation) + 1.0 / p * extrapolation
                    })
                    .collect()
            }
        };
        Self { inv_freq, scale, dim: cfg.dim }
    }

    /// `cos`, `sin` tables `[T, dim]` for positions `start..start+T`.
    pub fn tables<B: Backend>(&self, start: usize, len: usize, device: &B::Device) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(len * self.dim);
        let mut sin = Vec::with_capacity(len * self.dim);
        for p in start..start + len {
            for _ in 0..2 {
                for f in &self.inv_freq {
                    let angle = p as f32 * f;
                    cos.push(angle.cos() * self.scale);
                    sin.push(angle.sin() * self.scale);
                }
            }
        }
        debug_assert_eq!(cos.len(), len * 2 * half);
        let make = |v: Vec<f32>| Tensor::from_data(burn::tensor::TensorData::new(v, [len, self.dim]), device);
        (make(cos), make(sin))
    }
}

/// Applies rotate-half RoPE to the first `cos.dims()[1]` features of `x` `[T, heads, head_dim]`.
pub fn apply_rope<B: Backend>(x: Tensor<B, 3>, cos: &Tensor<B, 2>, sin: &Tensor<B, 2>) -> Tensor<B, 3> {
    let [t, heads, head_dim] = x.dims();
    let rot = cos.dims()[1];
    let half = rot / 2;
    let dtype = x.dtype();
    let r = x.clone().narrow(2, 0, rot);
    let rotated = Tensor::cat(vec![r.clone().narrow(2, half, half).neg(), r.clone().narrow(2, 0, half)], 2);
    let (c, s) = (cos.clone().cast(dtype).unsqueeze_dim::<3>(1), sin.clone().cast(dtype).unsqueeze_dim::<3>(1)); // [T, 1, rot]
    let r = r * c + rotated * s;
    if rot == head_dim { r } else { Tensor::cat(vec![r, x.narrow(2, rot, head_dim - rot)], 2) }
        .reshape([t, heads, head_dim])
}
