//! Custom compute for rmas: each operation has a tensor-op reference path (every backend) and,
//! where it pays, a cubecl kernel for the `CubeBackend` runtimes (CUDA, wgpu/Vulkan, WebGPU) and a
//! one-pass CPU body for ndarray. One folder per operation holds the matrix:
//!
//! | op | `mod.rs` (reference) | `cube.rs` | `cpu.rs` |
//! |---|---|---|---|
//! | `act` (activation × gate) | yes | yes | yes |
//! | `attn` (causal attention; the queries' norm + RoPE and the output gate around it) | yes | yes | yes / reference |
//! | `conv` (GDN causal conv + SiLU) | yes | yes | yes |
//! | `gdn` (gated delta rule + gated norm; the GDN conv before it) | yes | yes | yes / reference |
//! | `linear` (weight products, logits) | yes | burn's matmul | yes |
//! | `link` (latent fusion: LayerNorm of sums, bias+GELU) | yes | yes | reference |
//! | `norm` (RMSNorm, residual add + RMSNorm) | yes | yes | yes / reference |
//! | `quant` (products over block-quantized weights) | dequantize + matmul | yes | yes |
//! | `rope` (q/k norm + RoPE + head-major transpose; keys into the KV cache) | yes | yes | yes |
//! | `softmax` | yes | yes | yes |
//! | `topk` (each row's largest values and ids, for sampling) | host form, for tests | yes | no (host rows) |
//!
//! `cube_common.rs` and `cpu_common.rs` hold what several kernels or bodies share; `fusion.rs`
//! registers the cube kernels on burn's fusion backend. How to add one: docs/extending.md.
#![recursion_limit = "256"]

pub mod act;
pub mod attn;
pub mod conv;
mod cpu_common;
mod cube_common;
#[cfg(feature = "fusion")]
mod fusion;
pub mod gdn;
pub mod linear;
pub mod link;
pub mod norm;
pub mod quant;
pub mod rope;
pub mod softmax;
pub mod topk;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

pub use act::Act;
pub use gdn::{DeltaRule, GatedNorm};
pub use linear::{Product, Rows};

/// Runs `job` on a thread of the CPU bodies' pool (rayon's), so that each parallel region starts
/// from a worker: the caller's thread takes part in it instead of handing it over and sleeping until
/// it ends (two context switches per region, thousands of regions per decode step on the CPU).
pub fn on_cpu_pool<R: Send>(job: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| job())
}

/// `x` in f32 (no cast when it already is): the one cast-to-f32 helper of the workspace.
pub fn f32_of<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if x.dtype() == DType::F32 { x } else { x.cast(DType::F32) }
}

/// Concatenates per-sequence results along their first dim (one part is returned as it is).
pub fn cat_rows<B: Backend, const D: usize>(mut parts: Vec<Tensor<B, D>>) -> Tensor<B, D> {
    match parts.len() {
        1 => parts.pop().expect("one part"),
        _ => Tensor::cat(parts, 0),
    }
}

/// Rows `at..` of a packed call's output `pack` `[ΣT, a, b]`, which one sequence's kernel writes its
/// `[T, a, b]` share into ([`RmasBackend::per_sequence`]).
pub struct PackedOut<B: Backend> {
    /// The output so far: the shares before this one written.
    pub pack: Tensor<B, 3>,
    /// This share's first row.
    pub at: usize,
}

impl<B: Backend> PackedOut<B> {
    /// `o` `[T, a, b]` written at its rows (the reference bodies' write).
    pub fn write(self, o: Tensor<B, 3>) -> Tensor<B, 3> {
        let t = o.dims()[0];
        self.pack.slice_assign(burn::tensor::s![self.at..self.at + t], o)
    }
}

/// `o`, or `o` written into its rows of `into` when given.
pub fn written<B: Backend>(o: Tensor<B, 3>, into: Option<PackedOut<B>>) -> Tensor<B, 3> {
    match into {
        Some(into) => into.write(o),
        None => o,
    }
}

/// Backends rmas can run on: every custom operation has a default (reference) body.
pub trait RmasBackend: Backend {
    /// Gated delta rule over `T` tokens for every value head, then `norm` when given; returns `o`
    /// `[T, nv, dv]` in `v`'s dtype and the new f32 state; see [`gdn::reference`].
    fn gated_delta_rule(
        x: DeltaRule<Self>,
        norm: Option<GatedNorm<Self>>,
    ) -> (burn::Tensor<Self, 3>, burn::Tensor<Self, 3>) {
        gdn::reference(x, norm)
    }

    /// A Gated DeltaNet's mixer after its input product: [`Self::causal_conv_silu`] of the raw
    /// projection `x.qkv` with `conv` (state, weight), then [`Self::gated_delta_rule`] over it;
    /// returns `o` (written into its rows of `into` when given), the state and the new conv state
    /// (one kernel on cubecl backends); see [`gdn::conv_delta_rule`].
    #[allow(clippy::type_complexity)]
    fn conv_delta_rule(
        x: DeltaRule<Self>,
        conv: (burn::Tensor<Self, 2>, burn::Tensor<Self, 2>),
        norm: Option<GatedNorm<Self>>,
        into: Option<PackedOut<Self>>,
    ) -> (burn::Tensor<Self, 3>, burn::Tensor<Self, 3>, burn::Tensor<Self, 2>) {
        let (o, state, conv_state) = gdn::conv_delta_rule(x, conv, norm);
        (written(o, into), state, conv_state)
    }

    /// Causal depthwise convolution of `x` `[T, C]` after `state` `[K−1, C]`, then SiLU; returns it
    /// and the new state; see [`conv::causal_conv_silu`].
    fn causal_conv_silu(
        x: burn::Tensor<Self, 2>,
        state: burn::Tensor<Self, 2>,
        weight: burn::Tensor<Self, 2>,
    ) -> (burn::Tensor<Self, 2>, burn::Tensor<Self, 2>) {
        conv::causal_conv_silu(x, state, weight)
    }

    /// `act(x)`, times `by` (same shape) when given; see [`act::reference`].
    fn activate<const D: usize>(
        x: burn::Tensor<Self, D>,
        act: Act,
        by: Option<burn::Tensor<Self, D>>,
    ) -> burn::Tensor<Self, D> {
        act::reference(x, act, by)
    }

    /// Causal attention of `q` `[nh, T, hd]` over the first `keys` rows of `k`, `v` `[nkv, ≥ keys, hd]`
    /// (a cache and its length: no copy of its used rows); see [`attn::reference`].
    fn causal_attention(
        q: burn::Tensor<Self, 3>,
        k: burn::Tensor<Self, 3>,
        v: burn::Tensor<Self, 3>,
        keys: usize,
        scale: f64,
        window: Option<usize>,
    ) -> burn::Tensor<Self, 3> {
        attn::reference(q, k.narrow(1, 0, keys), v.narrow(1, 0, keys), scale, window)
    }

    /// Attention of one sequence's raw queries `q` over the first `keys` rows of its cache `k`,
    /// `v`: the queries normed and rotated, attended, gated; returns `[T, nh, hd]`, or `into` with
    /// it written at its rows (one kernel on cubecl backends where it can); see [`attn::attend`].
    #[allow(clippy::too_many_arguments)]
    fn attend(
        q: attn::Queries<Self>,
        k: burn::Tensor<Self, 3>,
        v: burn::Tensor<Self, 3>,
        keys: usize,
        scale: f64,
        window: Option<usize>,
        into: Option<PackedOut<Self>>,
    ) -> burn::Tensor<Self, 3> {
        written(attn::attend(q, k, v, keys, scale, window), into)
    }

    /// Softmax over the last axis (attention probabilities).
    fn softmax_last<const D: usize>(x: burn::Tensor<Self, D>) -> burn::Tensor<Self, D> {
        softmax::reference(x)
    }

    /// RMSNorm of `x` over its last axis with the effective weight `scale`; see [`norm::rms_norm`].
    fn rms_norm<const D: usize>(
        x: burn::Tensor<Self, D>,
        scale: burn::Tensor<Self, 1>,
        eps: f64,
    ) -> burn::Tensor<Self, D> {
        norm::rms_norm(x, scale, eps)
    }

    /// `x + y` `[rows, width]` and its RMSNorm with `scale`, as (sum, normed); see [`norm::add_rms_norm`].
    fn add_rms_norm(
        x: burn::Tensor<Self, 2>,
        y: burn::Tensor<Self, 2>,
        scale: burn::Tensor<Self, 1>,
        eps: f64,
    ) -> (burn::Tensor<Self, 2>, burn::Tensor<Self, 2>) {
        norm::add_rms_norm(x, y, scale, eps)
    }

    /// Per head of `x` `[T, heads, width]`: its first `head_dim` features RMSNormed (with `norm`),
    /// rotated by `cos`/`sin` `[T, rot]`, returned `[heads, T, head_dim]`; see [`rope::reference`].
    fn rope_heads(
        x: burn::Tensor<Self, 3>,
        head_dim: usize,
        norm: Option<(burn::Tensor<Self, 1>, f64)>,
        cos: burn::Tensor<Self, 2>,
        sin: burn::Tensor<Self, 2>,
    ) -> burn::Tensor<Self, 3> {
        rope::reference(x, head_dim, norm, cos, sin)
    }

    /// Writes a sequence's keys, normed and rotated as [`Self::rope_heads`] does, and its values into
    /// rows `at..` of its KV cache (keys, values); see [`rope::append_kv`].
    fn append_kv(
        caches: (burn::Tensor<Self, 3>, burn::Tensor<Self, 3>),
        k: burn::Tensor<Self, 3>,
        v: burn::Tensor<Self, 3>,
        norm: Option<(burn::Tensor<Self, 1>, f64)>,
        table: (burn::Tensor<Self, 2>, burn::Tensor<Self, 2>),
        at: usize,
    ) -> (burn::Tensor<Self, 3>, burn::Tensor<Self, 3>) {
        rope::append_kv(caches, k, v, norm, table, at)
    }

    /// LayerNorm of `a + residual + bias` per row; see [`link::layer_norm_sum`].
    fn layer_norm_sum(
        a: burn::Tensor<Self, 2>,
        residual: Option<burn::Tensor<Self, 2>>,
        bias: Option<burn::Tensor<Self, 1>>,
        gamma: burn::Tensor<Self, 1>,
        beta: burn::Tensor<Self, 1>,
        eps: f64,
    ) -> burn::Tensor<Self, 2> {
        link::layer_norm_sum(a, residual, bias, gamma, beta, eps)
    }

    /// Exact GELU of `x + bias`; see [`link::bias_gelu`].
    fn bias_gelu(x: burn::Tensor<Self, 2>, bias: burn::Tensor<Self, 1>) -> burn::Tensor<Self, 2> {
        link::bias_gelu(x, bias)
    }

    /// `f` over each sequence's share of a packed call (its attention, its convolution and delta
    /// rule: `rows` each, in packing order), their `[rows, a, b]` outputs packed as `[ΣT, a, b]`
    /// of `out` (`[a, b]`, dtype, device). Here the sequences run one after another, as a device
    /// queues them anyway, each writing its rows of one output ([`PackedOut`]) instead of the
    /// outputs being concatenated after (a copy per sequence); the CPU runs them at once on its
    /// thread pool (docs/batching.md, "Packed outputs").
    fn per_sequence<T: Send>(
        items: Vec<(usize, T)>,
        out: ([usize; 2], DType, &Self::Device),
        f: impl Fn(T, Option<PackedOut<Self>>) -> burn::Tensor<Self, 3> + Sync + Send,
    ) -> burn::Tensor<Self, 3> {
        if let [_] = items.as_slice() {
            let (_, item) = items.into_iter().next().expect("one item");
            return f(item, None);
        }
        let ([a, b], dtype, device) = out;
        let rows = items.iter().map(|(rows, _)| rows).sum();
        let mut pack = burn::Tensor::empty([rows, a, b], (device, dtype));
        let mut at = 0;
        for (rows, item) in items {
            pack = f(item, Some(PackedOut { pack, at }));
            at += rows;
        }
        pack
    }

    /// The largest tensor, in bytes, one device buffer can hold.
    fn max_buffer_bytes(_device: &Self::Device) -> u64 {
        u64::MAX
    }

    /// Memory the device can still give, in bytes, where the backend knows it.
    fn available_bytes(_device: &Self::Device) -> Option<u64> {
        None
    }

    /// Bytes of device memory held by live tensors, where the runtime reports it (cubecl does).
    fn memory_in_use(_device: &Self::Device) -> Option<u64> {
        None
    }

    /// Whether [`Self::top_values`] computes on this backend: not where the logits are host memory
    /// already (the CPU), for which reading a whole row and selecting on the host is the cheaper path.
    const DEVICE_TOP_K: bool = false;

    /// Each row's `m` largest values of `x` `[n, L]`, largest first (the lower id first among
    /// equals), then their column ids as f32: `[n, 2m]`, computed on the device so that sampling
    /// reads back `2m` values per row instead of `L` ([`topk`]). `None` where this backend does not
    /// ([`Self::DEVICE_TOP_K`]) or the sizes do not fit ([`topk::fits`]).
    fn top_values(_x: burn::Tensor<Self, 2>, _m: usize) -> Option<burn::Tensor<Self, 2>> {
        None
    }

    /// Whether layer weights stay in HF's `[out, in]` layout and multiply as `x·wᵀ` (a column-major
    /// right operand, what GPU matrix-vector kernels want) rather than being transposed once at load
    /// to `[in, out]` (what the CPU's streaming product wants); docs/performance.md, "Weight layout".
    const WEIGHTS_OUT_IN: bool = false;

    /// Row counts up to which this backend's `product` takes a per-row path (a decode step) instead of
    /// its many-row algorithm; `None` where the algorithm does not change with the count. Packed
    /// sequences of up to this many rows are multiplied together with [`Rows::PerRow`], so that
    /// each gets the rows it would get alone (docs/batching.md, "Batch invariance").
    fn per_row_limit(_product: Product) -> Option<usize> {
        None
    }

    /// `x·Wᵀ` `[M, N]` for activations `x` `[M, K]` and a layer's weight `w` in this backend's layout:
    /// `[N, K]` when [`Self::WEIGHTS_OUT_IN`], else `[K, N]`.
    fn linear_matmul(x: burn::Tensor<Self, 2>, w: burn::Tensor<Self, 2>, _rows: Rows) -> burn::Tensor<Self, 2> {
        linear::reference(x, w, Self::WEIGHTS_OUT_IN)
    }

    /// `h·mᵀ` `[T, V]` for hidden states `h` `[T, H]` and a vocabulary matrix `m` `[V, H]`.
    fn vocab_logits(h: burn::Tensor<Self, 2>, m: burn::Tensor<Self, 2>, _rows: Rows) -> burn::Tensor<Self, 2> {
        linear::logits_reference(h, m)
    }

    /// `act(gate) ⊙ value` `[M, N]` for `x` `[M, K]` and a gated MLP's dense weight `w` (`gate_proj ‖
    /// up_proj`, `2N` outputs, in this backend's layout): [`Self::linear_matmul`], then
    /// [`Self::activate`] on its two halves.
    fn gated_matmul(x: burn::Tensor<Self, 2>, w: burn::Tensor<Self, 2>, act: Act, rows: Rows) -> burn::Tensor<Self, 2> {
        product_then_activate::<Self>(x, w, act, rows)
    }

    /// Whether [`Self::quant_matmul`] multiplies the blocks themselves; where not, the model loaders
    /// keep weights dense (a GGUF file's blocks are dequantized on load).
    const QUANTIZED_PRODUCTS: bool = false;

    /// Whether those products read a device copy in the GPU layout ([`quant::QuantMatrix::on_device`],
    /// [`quant::BlockFormat::device_bits_per_weight`]) rather than the blocks as stored.
    const BLOCKS_ON_DEVICE: bool = false;

    /// `x·wᵀ` `[M, N]` for activations `x` `[M, K]` and block-quantized weights `w` `[N, K]`, in f32:
    /// [`Self::device_quant_matmul`] over `w`'s device copy where [`Self::BLOCKS_ON_DEVICE`]; else the
    /// reference, which decodes `w` whole and multiplies.
    fn quant_matmul(x: burn::Tensor<Self, 2>, w: &quant::QuantMatrix, rows: Rows) -> burn::Tensor<Self, 2> {
        if Self::BLOCKS_ON_DEVICE {
            let blocks = w.on_device::<Self>(&x.device());
            return Self::device_quant_matmul(x, &blocks, rows);
        }
        dense_product(x, w.dequantize(), [w.rows(), w.cols()])
    }

    /// [`Self::quant_matmul`] over a matrix already on this backend's device
    /// ([`quant::QuantMatrix::on_device`]). The reference reads the copy back, decodes it on the
    /// host and multiplies.
    fn device_quant_matmul(
        x: burn::Tensor<Self, 2>,
        w: &quant::DeviceBlocks<Self>,
        _rows: Rows,
    ) -> burn::Tensor<Self, 2> {
        dense_product(x, w.dequantize(), [w.rows(), w.cols])
    }

    /// Rows `ids` `[T]` (row indices as f32 values, all `< rows`) of a matrix on this backend's
    /// device, decoded: `[T, K]` f32 (the embedding lookups of a matrix whose host blocks were
    /// released, [`quant::QuantMatrix::released_to`]). The reference reads the copy back, decodes it
    /// on the host and selects.
    fn device_rows(w: &quant::DeviceBlocks<Self>, ids: burn::Tensor<Self, 1>) -> burn::Tensor<Self, 2> {
        let data = burn::tensor::TensorData::new(w.dequantize(), [w.rows(), w.cols]);
        Tensor::<Self, 2>::from_data(data, (&ids.device(), DType::F32)).select(0, ids.int())
    }
}

/// [`RmasBackend::gated_matmul`] as two calls: the product `[M, 2N]`, then the activation of its first
/// half times its second.
fn product_then_activate<B: RmasBackend>(x: Tensor<B, 2>, w: Tensor<B, 2>, act: Act, rows: Rows) -> Tensor<B, 2> {
    let y = B::linear_matmul(x, w, rows); // [M, 2N]
    let n = y.dims()[1] / 2;
    B::activate(y.clone().narrow(1, 0, n), act, Some(y.narrow(1, n, n)))
}

/// `x·wᵀ` for `w` `[rows, cols]` given as row-major host values: uploaded in `x`'s dtype, multiplied.
fn dense_product<B: Backend>(x: Tensor<B, 2>, w: Vec<f32>, shape: [usize; 2]) -> Tensor<B, 2> {
    let dense = Tensor::<B, 2>::from_data(burn::tensor::TensorData::new(w, shape), (&x.device(), x.dtype()));
    linear::reference(x, dense, true)
}

/// The CPU backend: weight products stream the weights instead of copying them; attention runs by
/// query blocks over the causal keys only; the delta rule runs its recurrence and the convolution,
/// activations, softmax, RMSNorm and the rotations run in one pass, on the thread pool.
impl RmasBackend for burn::backend::NdArray {
    /// The sequences run as tasks of one parallel region, each one's own regions nested in it: a
    /// decode step of eight sequences no longer hands the cores over (wakes and parks the workers)
    /// a few times per sequence and layer. Each sequence's work, and so its bits, is unchanged.
    /// Here each output is its own array, concatenated after (a copy of host memory).
    fn per_sequence<T: Send>(
        items: Vec<(usize, T)>,
        _out: ([usize; 2], DType, &Self::Device),
        f: impl Fn(T, Option<PackedOut<Self>>) -> burn::Tensor<Self, 3> + Sync + Send,
    ) -> burn::Tensor<Self, 3> {
        use rayon::prelude::*;
        cat_rows(items.into_par_iter().map(|(_, item)| f(item, None)).collect())
    }

    fn gated_delta_rule(
        x: DeltaRule<Self>,
        norm: Option<GatedNorm<Self>>,
    ) -> (burn::Tensor<Self, 3>, burn::Tensor<Self, 3>) {
        gdn::cpu::gated_delta_rule(x, norm)
    }

    fn causal_conv_silu(
        x: burn::Tensor<Self, 2>,
        state: burn::Tensor<Self, 2>,
        weight: burn::Tensor<Self, 2>,
    ) -> (burn::Tensor<Self, 2>, burn::Tensor<Self, 2>) {
        conv::cpu::causal_conv_silu(x, state, weight)
    }

    fn activate<const D: usize>(
        x: burn::Tensor<Self, D>,
        act: Act,
        by: Option<burn::Tensor<Self, D>>,
    ) -> burn::Tensor<Self, D> {
        act::cpu::activate(x, act, by)
    }

    fn causal_attention(
        q: burn::Tensor<Self, 3>,
        k: burn::Tensor<Self, 3>,
        v: burn::Tensor<Self, 3>,
        keys: usize,
        scale: f64,
        window: Option<usize>,
    ) -> burn::Tensor<Self, 3> {
        attn::cpu::causal_attention(q, k, v, keys, scale, window)
    }

    fn softmax_last<const D: usize>(x: burn::Tensor<Self, D>) -> burn::Tensor<Self, D> {
        softmax::cpu::softmax(x)
    }

    fn rms_norm<const D: usize>(
        x: burn::Tensor<Self, D>,
        scale: burn::Tensor<Self, 1>,
        eps: f64,
    ) -> burn::Tensor<Self, D> {
        norm::cpu::rms_norm(x, scale, eps)
    }

    fn rope_heads(
        x: burn::Tensor<Self, 3>,
        head_dim: usize,
        norm: Option<(burn::Tensor<Self, 1>, f64)>,
        cos: burn::Tensor<Self, 2>,
        sin: burn::Tensor<Self, 2>,
    ) -> burn::Tensor<Self, 3> {
        rope::cpu::rope_heads(x, head_dim, norm, cos, sin)
    }

    fn append_kv(
        caches: (burn::Tensor<Self, 3>, burn::Tensor<Self, 3>),
        k: burn::Tensor<Self, 3>,
        v: burn::Tensor<Self, 3>,
        norm: Option<(burn::Tensor<Self, 1>, f64)>,
        table: (burn::Tensor<Self, 2>, burn::Tensor<Self, 2>),
        at: usize,
    ) -> (burn::Tensor<Self, 3>, burn::Tensor<Self, 3>) {
        rope::cpu::append_kv(caches, k, v, norm, table, at)
    }

    fn per_row_limit(product: Product) -> Option<usize> {
        match product {
            Product::Linear | Product::Gated => None, // register tiles at every row count
            Product::Vocab => Some(linear::cpu::STREAM_ROWS),
            Product::Quant => Some(quant::cpu::DOT_ROWS),
        }
    }

    fn linear_matmul(x: burn::Tensor<Self, 2>, w: burn::Tensor<Self, 2>, rows: Rows) -> burn::Tensor<Self, 2> {
        linear::cpu::linear(x, w, rows)
    }

    fn vocab_logits(h: burn::Tensor<Self, 2>, m: burn::Tensor<Self, 2>, rows: Rows) -> burn::Tensor<Self, 2> {
        linear::cpu::logits(h, m, rows)
    }

    const QUANTIZED_PRODUCTS: bool = true;

    fn quant_matmul(x: burn::Tensor<Self, 2>, w: &quant::QuantMatrix, rows: Rows) -> burn::Tensor<Self, 2> {
        quant::cpu::matmul(x, w, rows)
    }

    /// The host's `MemAvailable` (Linux).
    fn available_bytes(_device: &Self::Device) -> Option<u64> {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    }
}

/// CUDA, wgpu/Vulkan and WebGPU: the delta rule (with its gated norm and the GDN convolution before it),
/// attention, activations, softmax, RMSNorm (with the residual add), RoPE (with the q/k norms) and
/// the latent-fusion stages run as cubecl kernels.
impl<R, F, I, BT> RmasBackend for burn_cubecl::CubeBackend<R, F, I, BT>
where
    R: burn_cubecl::CubeRuntime,
    F: burn_cubecl::FloatElement,
    I: burn_cubecl::IntElement,
    BT: burn_cubecl::BoolElement,
{
    fn gated_delta_rule(
        x: DeltaRule<Self>,
        norm: Option<GatedNorm<Self>>,
    ) -> (burn::Tensor<Self, 3>, burn::Tensor<Self, 3>) {
        gdn::cube::gated_delta_rule(x, norm)
    }

    fn conv_delta_rule(
        x: DeltaRule<Self>,
        conv: (burn::Tensor<Self, 2>, burn::Tensor<Self, 2>),
        norm: Option<GatedNorm<Self>>,
        into: Option<PackedOut<Self>>,
    ) -> (burn::Tensor<Self, 3>, burn::Tensor<Self, 3>, burn::Tensor<Self, 2>) {
        if gdn::cube::fits(&x, &conv) {
            return gdn::cube::conv_delta_rule(x, conv, norm, into);
        }
        let (o, state, conv_state) = gdn::conv_delta_rule(x, conv, norm);
        (written(o, into), state, conv_state)
    }

    fn causal_conv_silu(
        x: burn::Tensor<Self, 2>,
        state: burn::Tensor<Self, 2>,
        weight: burn::Tensor<Self, 2>,
    ) -> (burn::Tensor<Self, 2>, burn::Tensor<Self, 2>) {
        conv::cube::causal_conv_silu(x, state, weight)
    }

    fn activate<const D: usize>(
        x: burn::Tensor<Self, D>,
        act: Act,
        by: Option<burn::Tensor<Self, D>>,
    ) -> burn::Tensor<Self, D> {
        act::cube::activate(x, act, by)
    }

    fn causal_attention(
        q: burn::Tensor<Self, 3>,
        k: burn::Tensor<Self, 3>,
        v: burn::Tensor<Self, 3>,
        keys: usize,
        scale: f64,
        window: Option<usize>,
    ) -> burn::Tensor<Self, 3> {
        // A narrowed cubecl tensor is a view of the cache, not a copy.
        attn::cube::causal_attention(q, k.narrow(1, 0, keys), v.narrow(1, 0, keys), scale, window)
    }

    fn attend(
        q: attn::Queries<Self>,
        k: burn::Tensor<Self, 3>,
        v: burn::Tensor<Self, 3>,
        keys: usize,
        scale: f64,
        window: Option<usize>,
        into: Option<PackedOut<Self>>,
    ) -> burn::Tensor<Self, 3> {
        let (k, v) = (k.narrow(1, 0, keys), v.narrow(1, 0, keys));
        match attn::cube::attend_fits(&q, &k, &v) {
            true => attn::cube::attend(q, k, v, scale, window, into),
            false => written(attn::attend(q, k, v, keys, scale, window), into),
        }
    }

    fn softmax_last<const D: usize>(x: burn::Tensor<Self, D>) -> burn::Tensor<Self, D> {
        softmax::cube::softmax(x)
    }

    fn rms_norm<const D: usize>(
        x: burn::Tensor<Self, D>,
        scale: burn::Tensor<Self, 1>,
        eps: f64,
    ) -> burn::Tensor<Self, D> {
        norm::cube::rms_norm(x, scale, eps)
    }

    fn add_rms_norm(
        x: burn::Tensor<Self, 2>,
        y: burn::Tensor<Self, 2>,
        scale: burn::Tensor<Self, 1>,
        eps: f64,
    ) -> (burn::Tensor<Self, 2>, burn::Tensor<Self, 2>) {
        norm::cube::add_rms_norm(x, y, scale, eps)
    }

    fn rope_heads(
        x: burn::Tensor<Self, 3>,
        head_dim: usize,
        norm: Option<(burn::Tensor<Self, 1>, f64)>,
        cos: burn::Tensor<Self, 2>,
        sin: burn::Tensor<Self, 2>,
    ) -> burn::Tensor<Self, 3> {
        rope::cube::rope_heads(x, head_dim, norm, cos, sin)
    }

    fn append_kv(
        caches: (burn::Tensor<Self, 3>, burn::Tensor<Self, 3>),
        k: burn::Tensor<Self, 3>,
        v: burn::Tensor<Self, 3>,
        norm: Option<(burn::Tensor<Self, 1>, f64)>,
        table: (burn::Tensor<Self, 2>, burn::Tensor<Self, 2>),
        at: usize,
    ) -> (burn::Tensor<Self, 3>, burn::Tensor<Self, 3>) {
        match rope::cube::fits(&caches, &k, &v) {
            true => rope::cube::append_kv(caches, k, v, norm, table, at),
            false => rope::append_kv(caches, k, v, norm, table, at),
        }
    }

    fn layer_norm_sum(
        a: burn::Tensor<Self, 2>,
        residual: Option<burn::Tensor<Self, 2>>,
        bias: Option<burn::Tensor<Self, 1>>,
        gamma: burn::Tensor<Self, 1>,
        beta: burn::Tensor<Self, 1>,
        eps: f64,
    ) -> burn::Tensor<Self, 2> {
        link::cube::layer_norm_sum(a, residual, bias, gamma, beta, eps)
    }

    fn bias_gelu(x: burn::Tensor<Self, 2>, bias: burn::Tensor<Self, 1>) -> burn::Tensor<Self, 2> {
        link::cube::bias_gelu(x, bias)
    }

    const WEIGHTS_OUT_IN: bool = true;

    /// The quantized and gated products switch from their rows kernels to a matmul past
    /// [`quant::cpu::DOT_ROWS`] rows ([`quant::cube::matmul`], [`linear::cube::gated_product`]); the
    /// other dense ones run one matmul, whose tiles round alike at every row count only in strict f32
    /// (docs/batching.md, "Batch invariance").
    fn per_row_limit(product: Product) -> Option<usize> {
        matches!(product, Product::Quant | Product::Gated).then_some(quant::cpu::DOT_ROWS)
    }

    const DEVICE_TOP_K: bool = true;

    fn top_values(x: burn::Tensor<Self, 2>, m: usize) -> Option<burn::Tensor<Self, 2>> {
        let [n, len] = x.dims();
        topk::fits(n, len, m).then(|| topk::cube::top(x, m))
    }

    /// `x·wᵀ` through burn's matmul, or cubek's plain-f32 kernel in strict-f32 mode.
    fn linear_matmul(x: burn::Tensor<Self, 2>, w: burn::Tensor<Self, 2>, _rows: Rows) -> burn::Tensor<Self, 2> {
        linear::cube::strict_product(x.clone(), w.clone()).unwrap_or_else(|| linear::reference(x, w, true))
    }

    /// `h·mᵀ` through burn's matmul, or cubek's plain-f32 kernel in strict-f32 mode.
    fn vocab_logits(h: burn::Tensor<Self, 2>, m: burn::Tensor<Self, 2>, _rows: Rows) -> burn::Tensor<Self, 2> {
        linear::cube::strict_product(h.clone(), m.clone()).unwrap_or_else(|| linear::logits_reference(h, m))
    }

    /// One launch of the gated rows kernel for a decode step's rows (or [`Rows::PerRow`] ones); a
    /// product and the activation kernel for more.
    fn gated_matmul(x: burn::Tensor<Self, 2>, w: burn::Tensor<Self, 2>, act: Act, rows: Rows) -> burn::Tensor<Self, 2> {
        linear::cube::gated_product(x.clone(), w.clone(), act, rows)
            .unwrap_or_else(|| product_then_activate::<Self>(x, w, act, rows))
    }

    const QUANTIZED_PRODUCTS: bool = true;

    const BLOCKS_ON_DEVICE: bool = true;

    fn device_quant_matmul(
        x: burn::Tensor<Self, 2>,
        w: &quant::DeviceBlocks<Self>,
        rows: Rows,
    ) -> burn::Tensor<Self, 2> {
        quant::cube::matmul(x, w, rows)
    }

    fn device_rows(w: &quant::DeviceBlocks<Self>, ids: burn::Tensor<Self, 1>) -> burn::Tensor<Self, 2> {
        quant::cube::lookup_rows(w, ids)
    }

    /// The runtime's largest memory page: on wgpu/WebGPU the device's `max_storage_buffer_binding_size`.
    fn max_buffer_bytes(device: &Self::Device) -> u64 {
        R::client(device).properties().memory.max_page_size
    }

    /// cubecl's count of bytes in live allocations (padding and reserved pages not included).
    fn memory_in_use(device: &Self::Device) -> Option<u64> {
        R::client(device).memory_usage().ok().map(|m| m.bytes_in_use)
    }
}
