//! The custom operations on burn's fusion backend: each call is queued on the fusion stream as one
//! opaque operation that runs the inner backend's body (the cubecl kernel) when the stream executes,
//! so fused element-wise chains end before it and start again after it.

use std::sync::Arc;

use burn::tensor::{DType, Shape, Tensor, TensorMetadata, TensorPrimitive, ops::FloatTensor};
use burn_fusion::{
    Fusion, FusionBackend, FusionRuntime, FusionTensor,
    stream::{Operation, OperationStreams},
};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};

use crate::attn::Queries;
use crate::quant::{DeviceBlocks, DevicePart};
use crate::{Act, DeltaRule, GatedNorm, PackedOut, RmasBackend};

/// The inner backend's body of one queued operation: its inputs to its outputs, in order.
type Body<B> = Arc<dyn Fn(Vec<FloatTensor<B>>) -> Vec<FloatTensor<B>> + Send + Sync>;

/// One queued custom operation: its tensors as the stream knows them, and the body that computes it.
struct Custom<B: FusionBackend> {
    desc: CustomOpIr,
    body: Body<B>,
}

impl<B: FusionBackend> std::fmt::Debug for Custom<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Custom").field("desc", &self.desc).finish_non_exhaustive()
    }
}

impl<B: FusionBackend> Operation<B::FusionRuntime> for Custom<B> {
    fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
        let inputs = self.desc.inputs.iter().map(|x| handles.get_float_tensor::<B>(x)).collect();
        for (ir, out) in self.desc.outputs.iter().zip((self.body)(inputs)) {
            assert!(
                out.shape() == ir.shape && out.dtype() == ir.dtype,
                "{}: the body returned {:?} {:?} where {:?} {:?} was declared",
                self.desc.id,
                out.shape(),
                out.dtype(),
                ir.shape,
                ir.dtype
            );
            handles.register_float_tensor::<B>(&ir.id, out);
        }
    }
}

/// Queues `body` over `inputs` as the operation `name` whose outputs have the shapes and dtypes
/// `outputs`; returns those outputs (not yet computed).
fn queue<B: FusionBackend, const N: usize>(
    name: &'static str,
    inputs: Vec<FusionTensor<B::FusionRuntime>>,
    outputs: [(Shape, DType); N],
    body: impl Fn(Vec<FloatTensor<B>>) -> Vec<FloatTensor<B>> + Send + Sync + 'static,
) -> [FusionTensor<B::FusionRuntime>; N] {
    let client = inputs.first().expect("a custom operation has inputs").client.clone();
    let streams = OperationStreams::with_inputs(&inputs);
    let outputs = outputs.map(|(shape, dtype)| TensorIr::uninit(client.create_empty_handle(), shape, dtype));
    let inputs: Vec<TensorIr> = inputs.into_iter().map(FusionTensor::into_ir).collect();
    let desc = CustomOpIr::new(name, &inputs, &outputs);
    let queued =
        client.register(streams, OperationIr::Custom(desc.clone()), Custom::<B> { desc, body: Arc::new(body) });
    queued.try_into().unwrap_or_else(|_| unreachable!("the stream returns one tensor per declared output"))
}

/// A float tensor's primitive.
fn raw<B: burn::tensor::backend::Backend, const D: usize>(x: Tensor<B, D>) -> FloatTensor<B> {
    x.into_primitive().tensor()
}

/// A float primitive as a tensor of rank `D`.
fn wrap<B: burn::tensor::backend::Backend, const D: usize>(x: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

/// The next of a body's inputs, as a tensor of rank `D`.
fn take<B: burn::tensor::backend::Backend, const D: usize>(
    inputs: &mut impl Iterator<Item = FloatTensor<B>>,
) -> Tensor<B, D> {
    wrap(inputs.next().expect("a body gets every declared input"))
}

/// An operation of `x` and the device copy `blocks` (fusion tensors), queued as one whose body gets
/// `x` and the copy over the inner backend's tensors.
fn queue_over_blocks<B: FusionBackend, const D: usize>(
    name: &'static str,
    x: Tensor<Fusion<B>, D>,
    blocks: &DeviceBlocks<Fusion<B>>,
    out: (Shape, DType),
    body: impl Fn(Tensor<B, D>, &DeviceBlocks<B>) -> Tensor<B, 2> + Send + Sync + 'static,
) -> Tensor<Fusion<B>, 2> {
    let layout: Vec<_> = blocks.parts.iter().map(|p| (p.format, p.rows)).collect();
    let mut inputs = vec![raw(x)];
    for p in &blocks.parts {
        inputs.extend([raw(p.words.clone()), raw(p.groups.clone())]);
    }
    let cols = blocks.cols;
    let [out] = queue::<B, 1>(name, inputs, [out], move |inputs| {
        let mut inputs = inputs.into_iter();
        let x = take(&mut inputs);
        let parts = layout
            .iter()
            .map(|&(format, rows)| DevicePart { format, rows, words: take(&mut inputs), groups: take(&mut inputs) })
            .collect();
        vec![raw(body(x, &DeviceBlocks { cols, parts }))]
    });
    wrap(out)
}

/// `into`'s pack as the last of an operation's inputs. Returns the output's shape (the pack's, else
/// the sequence's own `share`) and the pack's row, which the body passes on.
fn packed_input<B: FusionBackend>(
    into: Option<PackedOut<Fusion<B>>>,
    share: [usize; 3],
    inputs: &mut Vec<FloatTensor<Fusion<B>>>,
) -> (Shape, Option<usize>) {
    match into {
        Some(PackedOut { pack, at }) => {
            let shape = pack.shape();
            inputs.push(raw(pack));
            (shape, Some(at))
        }
        None => (share.into(), None),
    }
}

/// A shape-preserving operation of `x` and `extra` (which the body reads after `x`, in order).
fn map_like<B: FusionBackend, const D: usize>(
    name: &'static str,
    x: Tensor<Fusion<B>, D>,
    extra: Vec<FloatTensor<Fusion<B>>>,
    body: impl Fn(Tensor<B, D>, &mut std::vec::IntoIter<FloatTensor<B>>) -> Tensor<B, D> + Send + Sync + 'static,
) -> Tensor<Fusion<B>, D> {
    let like = (x.shape(), x.dtype());
    let inputs = std::iter::once(raw(x)).chain(extra).collect();
    let [out] = queue::<B, 1>(name, inputs, [like], move |inputs| {
        let mut inputs = inputs.into_iter();
        let x = take(&mut inputs);
        vec![raw(body(x, &mut inputs))]
    });
    wrap(out)
}

/// The fusion backend over a cubecl backend: every custom operation runs the inner backend's kernel.
impl<B: FusionBackend + RmasBackend> RmasBackend for Fusion<B> {
    const WEIGHTS_OUT_IN: bool = B::WEIGHTS_OUT_IN;

    const DEVICE_TOP_K: bool = B::DEVICE_TOP_K;

    /// Queued as one operation whose body is the inner backend's [`RmasBackend::top_values`].
    fn top_values(x: Tensor<Self, 2>, m: usize) -> Option<Tensor<Self, 2>> {
        let [n, len] = x.dims();
        if !B::DEVICE_TOP_K || !crate::topk::fits(n, len, m) {
            return None;
        }
        let [out] = queue::<B, 1>("rmas.top_values", vec![raw(x)], [([n, 2 * m].into(), DType::F32)], move |inputs| {
            let mut x = inputs.into_iter();
            vec![raw(B::top_values(take(&mut x), m).expect("the inner backend has device top values of these sizes"))]
        });
        Some(wrap(out))
    }

    const QUANTIZED_PRODUCTS: bool = B::QUANTIZED_PRODUCTS;

    const BLOCKS_ON_DEVICE: bool = B::BLOCKS_ON_DEVICE;

    /// The inner backend's: its products are the ones that run.
    fn per_row_limit(product: crate::Product) -> Option<usize> {
        B::per_row_limit(product)
    }

    /// Queued as one operation whose body is the inner backend's
    /// [`RmasBackend::device_quant_matmul`] ([`queue_over_blocks`]).
    fn device_quant_matmul(x: Tensor<Self, 2>, blocks: &DeviceBlocks<Self>, rows: crate::Rows) -> Tensor<Self, 2> {
        let out = ([x.dims()[0], blocks.rows()].into(), x.dtype());
        queue_over_blocks::<B, 2>("rmas.quant_matmul", x, blocks, out, move |x, w| B::device_quant_matmul(x, w, rows))
    }

    /// Queued as one operation whose body is the inner backend's [`RmasBackend::device_rows`].
    fn device_rows(blocks: &DeviceBlocks<Self>, ids: Tensor<Self, 1>) -> Tensor<Self, 2> {
        let out = ([ids.dims()[0], blocks.cols].into(), DType::F32);
        queue_over_blocks::<B, 1>("rmas.quant_rows", ids, blocks, out, |ids, w| B::device_rows(w, ids))
    }

    fn linear_matmul(x: Tensor<Self, 2>, w: Tensor<Self, 2>, rows: crate::Rows) -> Tensor<Self, 2> {
        if !crate::linear::cube::strict_for(x.dtype()) {
            return crate::linear::reference(x, w, Self::WEIGHTS_OUT_IN);
        }
        let n = w.dims()[if Self::WEIGHTS_OUT_IN { 0 } else { 1 }];
        let out = ([x.dims()[0], n].into(), x.dtype());
        let [out] = queue::<B, 1>("rmas.linear_matmul", vec![raw(x), raw(w)], [out], move |inputs| {
            let mut x = inputs.into_iter();
            vec![raw(B::linear_matmul(take(&mut x), take(&mut x), rows))]
        });
        wrap(out)
    }

    /// A decode step's rows (or [`crate::Rows::PerRow`] ones) queued as one operation whose body is the
    /// inner backend's [`RmasBackend::gated_matmul`] (one launch); more rows as this backend's product,
    /// then its activation.
    fn gated_matmul(x: Tensor<Self, 2>, w: Tensor<Self, 2>, act: Act, rows: crate::Rows) -> Tensor<Self, 2> {
        let m = x.dims()[0];
        if rows == crate::Rows::Sequence && B::per_row_limit(crate::Product::Gated).is_none_or(|limit| m > limit) {
            return crate::product_then_activate::<Self>(x, w, act, rows);
        }
        let n = w.dims()[if Self::WEIGHTS_OUT_IN { 0 } else { 1 }] / 2;
        let out = ([m, n].into(), x.dtype());
        let [out] = queue::<B, 1>("rmas.gated_matmul", vec![raw(x), raw(w)], [out], move |inputs| {
            let mut x = inputs.into_iter();
            vec![raw(B::gated_matmul(take(&mut x), take(&mut x), act, rows))]
        });
        wrap(out)
    }

    fn vocab_logits(h: Tensor<Self, 2>, m: Tensor<Self, 2>, rows: crate::Rows) -> Tensor<Self, 2> {
        if !crate::linear::cube::strict_for(h.dtype()) {
            return crate::linear::logits_reference(h, m);
        }
        let out = ([h.dims()[0], m.dims()[0]].into(), h.dtype());
        let [out] = queue::<B, 1>("rmas.vocab_logits", vec![raw(h), raw(m)], [out], move |inputs| {
            let mut x = inputs.into_iter();
            vec![raw(B::vocab_logits(take(&mut x), take(&mut x), rows))]
        });
        wrap(out)
    }

    fn gated_delta_rule(x: DeltaRule<Self>, norm: Option<GatedNorm<Self>>) -> (Tensor<Self, 3>, Tensor<Self, 3>) {
        let [_, nv, dk, dv] = x.heads();
        let outputs = [([x.qkv.dims()[0], nv, dv].into(), x.qkv.dtype()), ([nv, dk, dv].into(), DType::F32)];
        let mut inputs = vec![raw(x.qkv), raw(x.ab), raw(x.decay), raw(x.state)];
        let eps = norm.map(|n| {
            inputs.extend([raw(n.z), raw(n.weight)]);
            n.eps
        });
        let [o, state] = queue::<B, 2>("rmas.gated_delta_rule", inputs, outputs, move |inputs| {
            let mut x = inputs.into_iter();
            let rule = DeltaRule { qkv: take(&mut x), ab: take(&mut x), decay: take(&mut x), state: take(&mut x) };
            let norm = eps.map(|eps| GatedNorm { z: take(&mut x), weight: take(&mut x), eps });
            let (o, state) = B::gated_delta_rule(rule, norm);
            vec![raw(o), raw(state)]
        });
        (wrap(o), wrap(state))
    }

    fn conv_delta_rule(
        x: DeltaRule<Self>,
        (conv_state, conv_weight): (Tensor<Self, 2>, Tensor<Self, 2>),
        norm: Option<GatedNorm<Self>>,
        into: Option<PackedOut<Self>>,
    ) -> (Tensor<Self, 3>, Tensor<Self, 3>, Tensor<Self, 2>) {
        let [_, nv, dk, dv] = x.heads();
        let (t, dtype, conv_shape) = (x.qkv.dims()[0], x.qkv.dtype(), conv_state.shape());
        let mut inputs = vec![raw(x.qkv), raw(x.ab), raw(x.decay), raw(x.state), raw(conv_state), raw(conv_weight)];
        let eps = norm.map(|n| {
            inputs.extend([raw(n.z), raw(n.weight)]);
            n.eps
        });
        let (o_shape, at) = packed_input(into, [t, nv, dv], &mut inputs);
        let outputs = [(o_shape, dtype), ([nv, dk, dv].into(), DType::F32), (conv_shape, dtype)];
        let [o, state, conv_state] = queue::<B, 3>("rmas.conv_delta_rule", inputs, outputs, move |inputs| {
            let mut x = inputs.into_iter();
            let rule = DeltaRule { qkv: take(&mut x), ab: take(&mut x), decay: take(&mut x), state: take(&mut x) };
            let conv = (take(&mut x), take(&mut x));
            let norm = eps.map(|eps| GatedNorm { z: take(&mut x), weight: take(&mut x), eps });
            let into = at.map(|at| PackedOut { pack: take(&mut x), at });
            let (o, state, conv_state) = B::conv_delta_rule(rule, conv, norm, into);
            vec![raw(o), raw(state), raw(conv_state)]
        });
        (wrap(o), wrap(state), wrap(conv_state))
    }

    fn causal_conv_silu(
        x: Tensor<Self, 2>,
        state: Tensor<Self, 2>,
        weight: Tensor<Self, 2>,
    ) -> (Tensor<Self, 2>, Tensor<Self, 2>) {
        let outputs = [(x.shape(), x.dtype()), (state.shape(), x.dtype())];
        let inputs = vec![raw(x), raw(state), raw(weight)];
        let [out, state] = queue::<B, 2>("rmas.causal_conv_silu", inputs, outputs, |inputs| {
            let mut x = inputs.into_iter();
            let (out, state) = B::causal_conv_silu(take(&mut x), take(&mut x), take(&mut x));
            vec![raw(out), raw(state)]
        });
        (wrap(out), wrap(state))
    }

    fn activate<const D: usize>(x: Tensor<Self, D>, act: Act, by: Option<Tensor<Self, D>>) -> Tensor<Self, D> {
        let gated = by.is_some();
        map_like("rmas.activate", x, by.map(raw).into_iter().collect(), move |x, rest| {
            B::activate(x, act, gated.then(|| take(rest)))
        })
    }

    fn causal_attention(
        q: Tensor<Self, 3>,
        k: Tensor<Self, 3>,
        v: Tensor<Self, 3>,
        keys: usize,
        scale: f64,
        window: Option<usize>,
    ) -> Tensor<Self, 3> {
        let out = ([q.dims()[0], q.dims()[1], v.dims()[2]].into(), v.dtype());
        let [out] = queue::<B, 1>("rmas.causal_attention", vec![raw(q), raw(k), raw(v)], [out], move |inputs| {
            let mut x = inputs.into_iter();
            vec![raw(B::causal_attention(take(&mut x), take(&mut x), take(&mut x), keys, scale, window))]
        });
        wrap(out)
    }

    fn attend(
        q: Queries<Self>,
        k: Tensor<Self, 3>,
        v: Tensor<Self, 3>,
        keys: usize,
        scale: f64,
        window: Option<usize>,
        into: Option<PackedOut<Self>>,
    ) -> Tensor<Self, 3> {
        let ([t, nh, _], [_, _, dv], dtype) = (q.q.dims(), v.dims(), v.dtype());
        let mut inputs = vec![raw(q.q), raw(q.cos), raw(q.sin), raw(k), raw(v)];
        let eps = q.norm.map(|(weight, eps)| {
            inputs.push(raw(weight));
            eps
        });
        let gated = q.gate.map(|gate| inputs.push(raw(gate))).is_some();
        let (shape, at) = packed_input(into, [t, nh, dv], &mut inputs);
        let [out] = queue::<B, 1>("rmas.attend", inputs, [(shape, dtype)], move |inputs| {
            let mut x = inputs.into_iter();
            let (q, cos, sin, k, v) = (take(&mut x), take(&mut x), take(&mut x), take(&mut x), take(&mut x));
            let norm = eps.map(|eps| (take(&mut x), eps));
            let gate = gated.then(|| take(&mut x));
            let into = at.map(|at| PackedOut { pack: take(&mut x), at });
            vec![raw(B::attend(Queries { q, norm, cos, sin, gate }, k, v, keys, scale, window, into))]
        });
        wrap(out)
    }

    fn softmax_last<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        map_like("rmas.softmax_last", x, Vec::new(), |x, _| B::softmax_last(x))
    }

    fn rms_norm<const D: usize>(x: Tensor<Self, D>, scale: Tensor<Self, 1>, eps: f64) -> Tensor<Self, D> {
        map_like("rmas.rms_norm", x, vec![raw(scale)], move |x, rest| B::rms_norm(x, take(rest), eps))
    }

    fn add_rms_norm(
        x: Tensor<Self, 2>,
        y: Tensor<Self, 2>,
        scale: Tensor<Self, 1>,
        eps: f64,
    ) -> (Tensor<Self, 2>, Tensor<Self, 2>) {
        let like = (x.shape(), x.dtype());
        let [sum, out] =
            queue::<B, 2>("rmas.add_rms_norm", vec![raw(x), raw(y), raw(scale)], [like.clone(), like], move |inputs| {
                let mut x = inputs.into_iter();
                let (sum, out) = B::add_rms_norm(take(&mut x), take(&mut x), take(&mut x), eps);
                vec![raw(sum), raw(out)]
            });
        (wrap(sum), wrap(out))
    }

    fn rope_heads(
        x: Tensor<Self, 3>,
        head_dim: usize,
        norm: Option<(Tensor<Self, 1>, f64)>,
        cos: Tensor<Self, 2>,
        sin: Tensor<Self, 2>,
    ) -> Tensor<Self, 3> {
        let [t, heads, _] = x.dims();
        let out = ([heads, t, head_dim].into(), x.dtype());
        let mut inputs = vec![raw(x), raw(cos), raw(sin)];
        let eps = norm.map(|(scale, eps)| {
            inputs.push(raw(scale));
            eps
        });
        let [out] = queue::<B, 1>("rmas.rope_heads", inputs, [out], move |inputs| {
            let mut x = inputs.into_iter();
            let (heads, cos, sin) = (take(&mut x), take(&mut x), take(&mut x));
            let norm = eps.map(|eps| (take(&mut x), eps));
            vec![raw(B::rope_heads(heads, head_dim, norm, cos, sin))]
        });
        wrap(out)
    }

    fn append_kv(
        (k_cache, v_cache): (Tensor<Self, 3>, Tensor<Self, 3>),
        k: Tensor<Self, 3>,
        v: Tensor<Self, 3>,
        norm: Option<(Tensor<Self, 1>, f64)>,
        (cos, sin): (Tensor<Self, 2>, Tensor<Self, 2>),
        at: usize,
    ) -> (Tensor<Self, 3>, Tensor<Self, 3>) {
        let outputs = [(k_cache.shape(), k_cache.dtype()), (v_cache.shape(), v_cache.dtype())];
        let mut inputs = vec![raw(k_cache), raw(v_cache), raw(k), raw(v), raw(cos), raw(sin)];
        let eps = norm.map(|(scale, eps)| {
            inputs.push(raw(scale));
            eps
        });
        let [k_cache, v_cache] = queue::<B, 2>("rmas.append_kv", inputs, outputs, move |inputs| {
            let mut x = inputs.into_iter();
            let caches = (take(&mut x), take(&mut x));
            let (k, v, cos, sin) = (take(&mut x), take(&mut x), take(&mut x), take(&mut x));
            let norm = eps.map(|eps| (take(&mut x), eps));
            let (k_cache, v_cache) = B::append_kv(caches, k, v, norm, (cos, sin), at);
            vec![raw(k_cache), raw(v_cache)]
        });
        (wrap(k_cache), wrap(v_cache))
    }

    fn layer_norm_sum(
        a: Tensor<Self, 2>,
        residual: Option<Tensor<Self, 2>>,
        bias: Option<Tensor<Self, 1>>,
        gamma: Tensor<Self, 1>,
        beta: Tensor<Self, 1>,
        eps: f64,
    ) -> Tensor<Self, 2> {
        let (has_residual, has_bias) = (residual.is_some(), bias.is_some());
        let extra = residual.map(raw).into_iter().chain(bias.map(raw)).chain([raw(gamma), raw(beta)]).collect();
        map_like("rmas.layer_norm_sum", a, extra, move |a, rest| {
            let residual = has_residual.then(|| take(rest));
            let bias = has_bias.then(|| take(rest));
            B::layer_norm_sum(a, residual, bias, take(rest), take(rest), eps)
        })
    }

    fn bias_gelu(x: Tensor<Self, 2>, bias: Tensor<Self, 1>) -> Tensor<Self, 2> {
        map_like("rmas.bias_gelu", x, vec![raw(bias)], |x, rest| B::bias_gelu(x, take(rest)))
    }

    fn max_buffer_bytes(device: &Self::Device) -> u64 {
        B::max_buffer_bytes(device)
    }

    fn available_bytes(device: &Self::Device) -> Option<u64> {
        B::available_bytes(device)
    }

    fn memory_in_use(device: &Self::Device) -> Option<u64> {
        B::memory_in_use(device)
    }
}
