//! Building blocks shared by every family and the RecursiveLinks: linear layers, RMSNorm and
//! LayerNorm, rotary tables, MLP. Like the models, they are plain structs of tensors built by a
//! loader, not burn `Module`s (docs/extending.md, "Models are plain structs").

use std::path::Path;
use std::sync::Arc;

use burn::tensor::{DType, Int, Tensor, TensorData, backend::Backend};

pub(crate) use rmas_kernels::cat_rows;
use rmas_kernels::quant::{BLOCK, BlockFormat, QuantMatrix};
use rmas_kernels::{Product, RmasBackend, Rows};

use crate::config::{Activation, NormKind, RopeConfig, RopeScaling};
use crate::error::Result;
use crate::traffic::upload;
use crate::weights::Weights;

/// Which weights are held as quantized blocks (docs/quantization.md). Only on backends whose
/// products take blocks ([`RmasBackend::QUANTIZED_PRODUCTS`]); elsewhere every weight is dense.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Blocks {
    /// Every weight dequantized to the compute dtype at load.
    Dense,
    /// Weights a GGUF file stores in a block format stay in it; the rest are dense.
    #[default]
    Stored,
    /// As `Stored`, and every other layer weight is quantized at load to this format; the
    /// embedding and LM head to Q8_0. RecursiveLinks, norms and recurrent states stay f32.
    Quantize(BlockFormat),
}

/// How a model's weights are held: compute dtype and quantized blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Precision {
    /// The compute dtype of activations and dense weights.
    pub dtype: DType,
    /// Which weights are blocks.
    pub blocks: Blocks,
    /// Where [`Blocks::Quantize`] keeps its results for the next load of the same checkpoint
    /// ([`crate::quant_cache`]); `None`: quantize at every load.
    pub cache: Option<Arc<Path>>,
}

impl Precision {
    /// `dtype` and `blocks`, with no quantization cache.
    pub fn new(dtype: DType, blocks: Blocks) -> Self {
        Self { dtype, blocks, cache: None }
    }
}

impl From<DType> for Precision {
    fn from(dtype: DType) -> Self {
        Self::new(dtype, Blocks::Stored)
    }
}

/// Loading context: weights, name prefix, device and precision.
pub struct Loader<'a, B: Backend> {
    pub weights: &'a Weights,
    pub prefix: String,
    pub device: &'a B::Device,
    pub dtype: DType,
    pub blocks: Blocks,
}

impl<'a, B: Backend> Loader<'a, B> {
    /// A loader for the names below `prefix.`.
    pub fn at(&self, prefix: impl std::fmt::Display) -> Self {
        Self {
            weights: self.weights,
            prefix: format!("{}{prefix}.", self.prefix),
            device: self.device,
            dtype: self.dtype,
            blocks: self.blocks,
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

impl<B: RmasBackend> Loader<'_, B> {
    /// `prefix + name` `[rows, cols]` as quantized blocks where [`Blocks`] and the backend say so
    /// (`quantize`: the format of [`Blocks::Quantize`] to make them in); `None` where it stays dense.
    fn blocks(
        &self,
        name: &str,
        [rows, cols]: [usize; 2],
        quantize: Option<BlockFormat>,
    ) -> Result<Option<QuantMatrix>> {
        if !B::QUANTIZED_PRODUCTS || self.blocks == Blocks::Dense {
            return Ok(None);
        }
        let name = format!("{}{name}", self.prefix);
        if let Some(stored) = self.weights.blocks(&name, [rows, cols])? {
            return Ok(Some(stored));
        }
        match quantize {
            Some(format) if cols.is_multiple_of(BLOCK) => {
                let values = self.weights.data(&name, &[rows, cols])?;
                let values = values.as_slice::<f32>().expect("weights are read as f32");
                let matrix = QuantMatrix::quantize(format, values, rows, cols);
                if let Some(matrix) = &matrix {
                    self.weights.note_quantized(&name, matrix);
                }
                Ok(matrix)
            }
            _ => Ok(None),
        }
    }

    /// The format [`Blocks::Quantize`] gives layer weights.
    fn layer_format(&self) -> Option<BlockFormat> {
        match self.blocks {
            Blocks::Quantize(format) => Some(format),
            _ => None,
        }
    }
}

/// A layer's weight: a dense tensor in the backend's layout, or quantized blocks in `[out, in]`.
#[derive(Clone, Debug)]
enum Weight<B: Backend> {
    /// `[out, in]` or `[in, out]`, as the backend keeps it ([`RmasBackend::WEIGHTS_OUT_IN`]).
    Dense(Tensor<B, 2>),
    /// `[out, in]` blocks on the host, multiplied by [`RmasBackend::quant_matmul`].
    Blocks(Arc<QuantMatrix>),
}

/// Linear layer `x·Wᵀ + b`. A dense weight is kept in the backend's layout ([`RmasBackend::WEIGHTS_OUT_IN`]):
/// HF's `[out, in]` on the GPU backends, transposed once at load to `[in, out]` on the CPU.
#[derive(Clone, Debug)]
pub struct Linear<B: Backend> {
    weight: Weight<B>,
    pub bias: Option<Tensor<B, 1>>,
}

impl<B: RmasBackend> Linear<B> {
    /// A layer from its weight in the checkpoints' `[out, in]` layout (given as host data, transposed
    /// there when the backend wants `[in, out]`) and optional bias `[out]`.
    pub fn from_hf(weight: TensorData, bias: Option<Tensor<B, 1>>, device: &B::Device) -> Self {
        let weight = if B::WEIGHTS_OUT_IN { weight } else { crate::weights::transpose_host(weight) };
        Self { weight: Weight::Dense(Tensor::from_data(weight, device)), bias }
    }

    /// The weight in the checkpoints' `[out, in]` layout (a view); `None` when it is held as blocks.
    pub fn hf_weight(&self) -> Option<Tensor<B, 2>> {
        match &self.weight {
            Weight::Dense(w) if B::WEIGHTS_OUT_IN => Some(w.clone()),
            Weight::Dense(w) => Some(w.clone().transpose()),
            Weight::Blocks(_) => None,
        }
    }

    /// The quantized blocks, when the weight is held so.
    pub fn blocks(&self) -> Option<&QuantMatrix> {
        match &self.weight {
            Weight::Blocks(m) => Some(m),
            Weight::Dense(_) => None,
        }
    }

    /// The axis of a dense weight that indexes outputs.
    fn out_axis() -> usize {
        if B::WEIGHTS_OUT_IN { 0 } else { 1 }
    }

    /// Input width.
    pub fn in_dim(&self) -> usize {
        match &self.weight {
            Weight::Dense(w) => w.dims()[1 - Self::out_axis()],
            Weight::Blocks(m) => m.cols(),
        }
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        match &self.weight {
            Weight::Dense(w) => w.dims()[Self::out_axis()],
            Weight::Blocks(m) => m.rows(),
        }
    }

    /// Loads `name.weight` (and `name.bias` when `bias`): as blocks where the loader's [`Blocks`] say so.
    pub fn load(l: &Loader<B>, name: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        let name_w = format!("{name}.weight");
        let weight = match l.blocks(&name_w, [d_out, d_in], l.layer_format())? {
            Some(blocks) => Weight::Blocks(Arc::new(blocks)),
            None => {
                let name_w = format!("{}{name_w}", l.prefix);
                Weight::Dense(match B::WEIGHTS_OUT_IN {
                    true => l.weights.tensor(&name_w, [d_out, d_in], l.device, l.dtype)?,
                    false => l.weights.tensor_transposed(&name_w, &[d_out, d_in], l.device, l.dtype)?,
                })
            }
        };
        let bias = if bias { Some(l.tensor(&format!("{name}.bias"), [d_out])?) } else { None };
        Ok(Self { weight, bias })
    }

    /// Loads the layers `names` (each `[out_i, in]`, with `.bias` when `bias`) as one layer whose
    /// output is theirs side by side, `[T, Σ out_i]`: one product where the model had several (the
    /// q/k/v projections, gate/up, the Gated DeltaNet input projections; docs/performance.md).
    pub fn load_fused(l: &Loader<B>, names: &[(&str, usize)], d_in: usize, bias: bool) -> Result<Self> {
        let parts =
            names.iter().map(|&(name, d_out)| Self::load(l, name, d_in, d_out, bias)).collect::<Result<Vec<_>>>()?;
        Ok(Self::concat(parts))
    }

    /// The layers `parts` (same input width) as one whose output is theirs side by side. Blocks stay
    /// blocks when every part is; a mix (a GGUF file storing one projection as f32) becomes dense.
    pub fn concat(parts: Vec<Self>) -> Self {
        let biases: Option<Vec<_>> = parts.iter().map(|p| p.bias.clone()).collect();
        let bias = biases.map(|b| Tensor::cat(b, 0));
        if parts.iter().all(|p| p.blocks().is_some()) {
            let matrices = parts.into_iter().map(|p| match p.weight {
                Weight::Blocks(m) => Arc::unwrap_or_clone(m),
                Weight::Dense(_) => unreachable!("every part is blocks"),
            });
            let weight = QuantMatrix::concat(matrices.collect()).expect("layers of one input width");
            return Self { weight: Weight::Blocks(Arc::new(weight)), bias };
        }
        let device = parts.iter().find_map(|p| match &p.weight {
            Weight::Dense(w) => Some((w.device(), w.dtype())),
            Weight::Blocks(_) => None,
        });
        let dense = |p: Self| match (p.weight, &device) {
            (Weight::Dense(w), _) => w,
            (Weight::Blocks(m), Some((device, dtype))) => {
                let hf = TensorData::new(m.dequantize(), [m.rows(), m.cols()]);
                let hf = if B::WEIGHTS_OUT_IN { hf } else { crate::weights::transpose_host(hf) };
                Tensor::from_data(hf, (device, *dtype))
            }
            (Weight::Blocks(_), None) => unreachable!("not every part is blocks, so one is dense"),
        };
        let weight = Tensor::cat(parts.into_iter().map(dense).collect(), Self::out_axis());
        Self { weight: Weight::Dense(weight), bias }
    }

    /// Reorders the outputs from `groups × parts × width` to `parts × groups × width` (HF's gated
    /// attention interleaves each head's query and gate rows; regrouped, each is one slice).
    pub fn regroup_outputs(self, groups: usize, parts: usize, width: usize) -> Self {
        let (d_in, d_out) = (self.in_dim(), self.out_dim());
        let weight = match self.weight {
            Weight::Dense(w) if B::WEIGHTS_OUT_IN => {
                Weight::Dense(w.reshape([groups, parts, width * d_in]).swap_dims(0, 1).reshape([d_out, d_in]))
            }
            Weight::Dense(w) => {
                Weight::Dense(w.reshape([d_in, groups, parts, width]).swap_dims(1, 2).reshape([d_in, d_out]))
            }
            Weight::Blocks(m) => {
                // Output row (p, g, i) of the result is row (g, p, i) of the stored weight.
                let order: Vec<usize> = (0..parts)
                    .flat_map(|p| (0..groups).flat_map(move |g| (0..width).map(move |i| (g * parts + p) * width + i)))
                    .collect();
                Weight::Blocks(Arc::new(m.select_rows(&order)))
            }
        };
        let bias = self.bias.map(|b| b.reshape([groups, parts, width]).swap_dims(0, 1).reshape([d_out]));
        Self { weight, bias }
    }

    /// `x·Wᵀ` for `x` `[T, in]`, without the bias (for stages that fuse it into what follows).
    pub fn product(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.product_rows(x, Rows::Sequence)
    }

    fn product_rows(&self, x: Tensor<B, 2>, rows: Rows) -> Tensor<B, 2> {
        match &self.weight {
            Weight::Dense(w) => B::linear_matmul(x, w.clone(), rows),
            Weight::Blocks(m) => B::quant_matmul(x, m, rows),
        }
    }

    /// Keeps block weights only as their copy on `device` ([`QuantMatrix::released_to`]).
    pub fn release_to(&mut self, device: &B::Device) {
        if let Weight::Blocks(m) = &mut self.weight {
            *m = Arc::new(m.released_to::<B>(device));
        }
    }

    /// `x·Wᵀ + b` for `x` `[T, in]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let t = x.dims()[0];
        self.forward_packed(x, &[t])
    }

    /// `x·Wᵀ + b` for packed rows `[ΣT, in]` of sequences of `lens` rows ([`packed_product`]).
    pub fn forward_packed(&self, x: Tensor<B, 2>, lens: &[usize]) -> Tensor<B, 2> {
        let kind = match self.weight {
            Weight::Dense(_) => Product::Linear,
            Weight::Blocks(_) => Product::Quant,
        };
        let y = packed_product::<B>(x, lens, kind, |x, rows| self.product_rows(x, rows));
        match &self.bias {
            Some(b) => y + b.clone().unsqueeze::<2>(),
            None => y,
        }
    }

    /// `act(gate) ⊙ value` `[ΣT, out/2]` of packed rows for a gated MLP's `gate ‖ value` layer: a dense
    /// weight without bias through [`RmasBackend::gated_matmul`] (one launch for a decode step on the
    /// GPU backends), else [`Self::forward_packed`], then [`RmasBackend::activate`].
    pub fn forward_gated(&self, x: Tensor<B, 2>, lens: &[usize], act: Activation) -> Tensor<B, 2> {
        if let (Weight::Dense(w), None) = (&self.weight, &self.bias) {
            return packed_product::<B>(x, lens, Product::Gated, |x, rows| B::gated_matmul(x, w.clone(), act, rows));
        }
        let y = self.forward_packed(x, lens); // [ΣT, 2·n]
        let n = y.dims()[1] / 2;
        B::activate(y.clone().narrow(1, 0, n), act, Some(y.narrow(1, n, n)))
    }
}

/// A weight product (`kind`) of packed sequences' rows, each sequence's rows as they would be alone
/// (docs/batching.md, "Batch invariance"). Where the backend switches algorithm by row count
/// ([`RmasBackend::per_row_limit`]), runs of short sequences (decode steps) go through its per-row
/// path together and each longer sequence (a prompt) is multiplied by itself; elsewhere all rows
/// go in one product.
pub fn packed_product<B: RmasBackend>(
    x: Tensor<B, 2>,
    lens: &[usize],
    kind: Product,
    product: impl Fn(Tensor<B, 2>, Rows) -> Tensor<B, 2>,
) -> Tensor<B, 2> {
    let Some(limit) = B::per_row_limit(kind).filter(|_| lens.len() > 1) else { return product(x, Rows::Sequence) };
    if lens.iter().all(|&t| t <= limit) {
        return product(x, Rows::PerRow);
    }
    let mut parts = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < lens.len() {
        let short = lens[i] <= limit;
        let run = match short {
            true => lens[i..].iter().take_while(|&&t| t <= limit).count(),
            false => 1,
        };
        let rows: usize = lens[i..i + run].iter().sum();
        let slice = x.clone().narrow(0, start, rows); // [rows, in]
        parts.push(product(slice, if short { Rows::PerRow } else { Rows::Sequence }));
        (start, i) = (start + rows, i + run);
    }
    cat_rows(parts)
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

/// A `[V, H]` vocabulary matrix (token embedding or LM head): dense in row blocks, each small enough
/// for one device buffer (WebGPU caps a binding, often at 128 MiB–2 GiB; a 248k-row embedding exceeds
/// it), or quantized blocks on the host where the backend multiplies them.
#[derive(Clone, Debug)]
pub enum VocabMatrix<B: Backend> {
    /// Row blocks `[block_rows, H]` (the last may be shorter).
    Dense { blocks: Vec<Tensor<B, 2>>, block_rows: usize },
    /// The whole matrix as quantized blocks; looked-up rows are decoded, uploaded to `device` and
    /// cast to `dtype`.
    Blocks { matrix: Arc<QuantMatrix>, device: B::Device, dtype: DType },
}

impl<B: RmasBackend> VocabMatrix<B> {
    /// Loads `name` `[v, h]`: as quantized blocks where the loader's [`Blocks`] say so (Q8_0 when
    /// quantized at load), else dense in blocks of at most `max_bytes` each (in the compute dtype).
    pub fn load(l: &Loader<B>, name: &str, [v, h]: [usize; 2], max_bytes: u64) -> Result<Self> {
        let format = l.layer_format().map(|_| BlockFormat::Q8_0);
        if let Some(matrix) = l.blocks(name, [v, h], format)? {
            return Ok(Self::Blocks { matrix: Arc::new(matrix), device: l.device.clone(), dtype: l.dtype });
        }
        let row_bytes = (h * l.dtype.size()).max(1) as u64;
        let block_rows = (max_bytes / row_bytes).clamp(1, v.max(1) as u64) as usize;
        let name = format!("{}{name}", l.prefix);
        let blocks = (0..v)
            .step_by(block_rows)
            .map(|r| {
                Ok(Tensor::from_data(l.weights.rows(&name, &[v, h], r..(r + block_rows).min(v))?, (l.device, l.dtype)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::Dense { blocks, block_rows })
    }

    /// Splits a matrix `[V, H]` into dense blocks of `block_rows` rows.
    pub fn from_tensor(m: Tensor<B, 2>, block_rows: usize) -> Self {
        let v = m.dims()[0];
        let block_rows = block_rows.clamp(1, v.max(1));
        let blocks = (0..v).step_by(block_rows).map(|r| m.clone().slice(r..(r + block_rows).min(v))).collect();
        Self::Dense { blocks, block_rows }
    }

    /// The quantized blocks, when the matrix is held so.
    pub fn blocks(&self) -> Option<&QuantMatrix> {
        match self {
            Self::Blocks { matrix, .. } => Some(matrix),
            Self::Dense { .. } => None,
        }
    }

    /// How many device buffers the matrix is held in (0 for host blocks).
    pub fn num_blocks(&self) -> usize {
        match self {
            Self::Dense { blocks, .. } => blocks.len(),
            Self::Blocks { .. } => 0,
        }
    }

    /// Keeps blocks only as their copy on `device` ([`QuantMatrix::released_to`]), where row indices
    /// are exact in f32 (below 2^24 rows, as every vocabulary is), which the device lookup takes.
    pub fn release_to(&mut self, device: &B::Device) {
        if let Self::Blocks { matrix, .. } = self
            && matrix.rows() < 1 << f32::MANTISSA_DIGITS
        {
            *matrix = Arc::new(matrix.released_to::<B>(device));
        }
    }

    /// The rows `ids` (all `< V`), `[T, H]`.
    pub fn rows(&self, ids: &[u32]) -> Tensor<B, 2> {
        let (blocks, block_rows) = match self {
            Self::Dense { blocks, block_rows } => (blocks, *block_rows),
            Self::Blocks { matrix, device, dtype } => {
                let rows = if matrix.on_host() {
                    let rows = matrix.dequantize_rows(ids.iter().map(|&i| i as usize));
                    upload::<B, 2, burn::tensor::Float>(TensorData::new(rows, [ids.len(), matrix.cols()]), device)
                } else {
                    // The row indices as f32 values (exact: see `release_to`), gathered on the device.
                    let ids: Vec<f32> = ids.iter().map(|&i| i as f32).collect();
                    let n = ids.len();
                    let ids = upload::<B, 1, burn::tensor::Float>(TensorData::new(ids, [n]), device);
                    B::device_rows(&matrix.on_device::<B>(device), ids)
                }; // [T, H] f32
                return if rows.dtype() == *dtype { rows } else { rows.cast(*dtype) };
            }
        };
        let device = blocks[0].device();
        let index = |v: Vec<i64>| upload::<B, 1, Int>(TensorData::new(v.clone(), [v.len()]), &device);
        if blocks.len() == 1 {
            return blocks[0].clone().select(0, index(ids.iter().map(|&i| i as i64).collect()));
        }
        // Gather per block, then put the rows back in the order of `ids`.
        let (mut parts, mut order) = (Vec::new(), Vec::new());
        for (b, block) in blocks.iter().enumerate() {
            let (at, local): (Vec<usize>, Vec<i64>) = ids
                .iter()
                .enumerate()
                .filter(|(_, id)| **id as usize / block_rows == b)
                .map(|(p, id)| (p, (*id as usize % block_rows) as i64))
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

    /// `h·Mᵀ` `[ΣT, V]` for packed rows `h` `[ΣT, H]` of sequences of `lens` rows ([`packed_product`]).
    pub fn logits(&self, h: Tensor<B, 2>, lens: &[usize]) -> Tensor<B, 2> {
        let kind = match self {
            Self::Dense { .. } => Product::Vocab,
            Self::Blocks { .. } => Product::Quant,
        };
        packed_product::<B>(h, lens, kind, |h, rows| match self {
            Self::Dense { blocks, .. } => {
                let parts: Vec<_> = blocks.iter().map(|m| B::vocab_logits(h.clone(), m.clone(), rows)).collect();
                if parts.len() == 1 { parts.into_iter().next().expect("one block") } else { Tensor::cat(parts, 1) }
            }
            Self::Blocks { matrix, .. } => B::quant_matmul(h, matrix, rows),
        })
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

    /// Adds the pending residual branch `branch` to `x` (when there is one) and normalises the sum `[T, dim]`:
    /// returns (new residual stream, normed), one kernel on cubecl backends.
    pub fn forward_residual(&self, x: Tensor<B, 2>, branch: Option<Tensor<B, 2>>) -> (Tensor<B, 2>, Tensor<B, 2>)
    where
        B: RmasBackend,
    {
        match branch {
            Some(y) => B::add_rms_norm(x, y, self.scale.clone(), self.eps),
            None => (x.clone(), self.forward(x)),
        }
    }

    /// The (effective scale, eps) pair the fused kernels take.
    pub fn parts(&self) -> (Tensor<B, 1>, f64) {
        (self.scale.clone(), self.eps)
    }
}

/// Gated MLP: `down(act(gate(x)) ⊙ up(x))`, with gate and up as one product.
#[derive(Clone, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_up: Linear<B>, // gate_proj ‖ up_proj: [hidden, 2·inter]
    pub down: Linear<B>,
    pub act: Activation,
}

impl<B: RmasBackend> Mlp<B> {
    /// Loads `gate_proj`, `up_proj`, `down_proj` below `l`.
    pub fn load(l: &Loader<B>, hidden: usize, inter: usize, act: Activation, bias: bool) -> Result<Self> {
        Ok(Self {
            gate_up: Linear::load_fused(l, &[("gate_proj", inter), ("up_proj", inter)], hidden, bias)?,
            down: Linear::load(l, "down_proj", inter, hidden, bias)?,
            act,
        })
    }

    /// Applies the MLP to packed rows `[ΣT, hidden]` of sequences of `lens` rows.
    pub fn forward(&self, x: Tensor<B, 2>, lens: &[usize]) -> Tensor<B, 2> {
        self.down.forward_packed(self.gate_up.forward_gated(x, lens, self.act), lens) // [ΣT, inter] in between
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

    /// Divides each inverse frequency by its factor: how llama.cpp's GGUF files carry Llama 3's rope
    /// scaling (a `rope_freqs` tensor of `dim/2` factors; `1/factor` of HF's blend per frequency).
    pub fn with_freq_factors(mut self, factors: &[f32]) -> std::result::Result<Self, String> {
        if factors.len() != self.inv_freq.len() {
            return Err(format!("{} rope frequency factors for {} frequencies", factors.len(), self.inv_freq.len()));
        }
        if let Some(bad) = factors.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
            return Err(format!("rope frequency factor {bad} (expected finite and positive)"));
        }
        self.inv_freq.iter_mut().zip(factors).for_each(|(f, d)| *f /= d);
        Ok(self)
    }

    /// `cos`, `sin` tables `[T, dim]` for positions `start..start+T`, in f32.
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
        let make = |v: Vec<f32>| upload(TensorData::new(v, [len, self.dim]), device);
        (make(cos), make(sin))
    }
}

/// Views of `lens[i]` consecutive rows each of packed `[ΣT, …]` rows, in order (what
/// [`cat_rows`] undoes).
pub fn split_rows<B: Backend, const D: usize>(packed: Tensor<B, D>, lens: &[usize]) -> Vec<Tensor<B, D>> {
    let mut start = 0;
    lens.iter()
        .map(|&len| {
            let rows = packed.clone().narrow(0, start, len);
            start += len;
            rows
        })
        .collect()
}
