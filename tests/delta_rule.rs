//! The gated delta rule (with Qwen3.5's q/k l2 norms, shared key heads and gates) and its fused gated
//! RMSNorm: chunked prefill == token recurrence == the backend's own body (contiguous and strided
//! inputs) == a plain float64 loop, incl. continuation; in f16, the f32 body's bits on the same inputs;
//! with the layer's convolution before it, the bits of the convolution and the rule one after the other.

use burn::tensor::{DType, Tensor, TensorData};
use rmas_kernels::{DeltaRule, GatedNorm, RmasBackend, gdn};
use rmas_suite::{assert_close, uniform};

const EPS: f64 = 1e-6;

/// Random inputs of `t` steps, head-major `[heads, t, d]` in float64: raw q/k of `nk` key heads
/// (norms well away from 1), the raw gates `a`, `b` and per-head `dt_bias`, `−exp(A_log)` (`strong` =
/// large decay), and the norm's gate `z` and weight `w`.
struct Inputs {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    a: Vec<f64>,
    b: Vec<f64>,
    dt_bias: Vec<f64>,
    neg_decay: Vec<f64>,
    z: Vec<f64>,
    w: Vec<f64>,
    t: usize,
    nk: usize,
    nv: usize,
    dk: usize,
    dv: usize,
}

fn f64s(seed: u64, n: usize) -> Vec<f64> {
    uniform(seed, n).into_iter().map(f64::from).collect()
}

impl Inputs {
    fn new(seed: u64, t: usize, strong: bool, [nk, nv, dk, dv]: [usize; 4]) -> Self {
        // Strong: |a| up to 100 (a naive f32 softplus overflows past 88) and −exp(A_log) up to −60, so
        // a step's log-decay reaches −6000 and a chunk's cumulative decay hundreds of thousands.
        let (scale, a_scale) = if strong { (30.0, 100.0) } else { (0.3, 4.0) };
        Self {
            q: f64s(seed, nk * t * dk).into_iter().map(|x| 3.0 * x).collect(),
            k: f64s(seed + 1, nk * t * dk).into_iter().map(|x| 0.2 * x).collect(),
            v: f64s(seed + 2, nv * t * dv),
            a: f64s(seed + 3, nv * t).into_iter().map(|x| a_scale * x).collect(),
            b: f64s(seed + 4, nv * t).into_iter().map(|x| 3.0 * x).collect(),
            dt_bias: f64s(seed + 7, nv),
            neg_decay: f64s(seed + 8, nv).into_iter().map(|x| -scale * (x + 1.0)).collect(),
            z: f64s(seed + 5, nv * t * dv).into_iter().map(|x| 4.0 * x).collect(),
            w: f64s(seed + 6, dv).into_iter().map(|x| 1.0 + x).collect(),
            t,
            nk,
            nv,
            dk,
            dv,
        }
    }

    /// The layer's `[T, q ‖ k ‖ v]` rows from state `s0`: contiguous, or (`strided`) a transposed view.
    fn rule<B: RmasBackend>(&self, s0: &[f64], strided: bool, d: &B::Device) -> DeltaRule<B> {
        let (nk, nv, t, dk, dv) = (self.nk, self.nv, self.t, self.dk, self.dv);
        let width = 2 * nk * dk + nv * dv;
        let mut rows = Vec::with_capacity(t * width);
        for step in 0..t {
            for (x, n, dim) in [(&self.q, nk, dk), (&self.k, nk, dk), (&self.v, nv, dv)] {
                (0..n).for_each(|h| rows.extend_from_slice(&x[(h * t + step) * dim..][..dim]));
            }
        }
        let qkv = if strided {
            let columns: Vec<f64> = (0..width).flat_map(|c| rows.iter().skip(c).step_by(width).copied()).collect();
            host::<B, 2>(&columns, [width, t], d).transpose()
        } else {
            host::<B, 2>(&rows, [t, width], d)
        };
        DeltaRule {
            qkv,
            ab: host::<B, 2>(&[&self.a[..], &self.b[..]].concat(), [2 * nv, t], d).transpose(), // [T, 2·nv] view
            decay: host(&[&self.dt_bias[..], &self.neg_decay[..]].concat(), [2, nv], d),
            state: host(s0, [nv, dk, dv], d),
        }
    }

    fn norm<B: RmasBackend>(&self, d: &B::Device) -> GatedNorm<B> {
        let z = host::<B, 3>(&self.z, [self.nv, self.t, self.dv], d).swap_dims(0, 1);
        let z = Tensor::<B, 3>::from_data(z.into_data(), d).reshape([self.t, self.nv * self.dv]);
        GatedNorm { z, weight: host(&self.w, [self.dv], d), eps: EPS }
    }

    /// Plain float64 recurrence from `s0` (`[nv, dk, dv]` row-major), normalising q and k as Qwen3.5
    /// does; returns o `[nv, t, dv]`, that o gated-RMS-normed, and S.
    fn naive(&self, mut s: Vec<f64>) -> [Vec<f64>; 3] {
        let (nv, dk, dv) = (self.nv, self.dk, self.dv);
        let l2 = |x: &[f64]| {
            let n = (x.iter().map(|x| x * x).sum::<f64>() + gdn::L2_EPS).sqrt();
            x.iter().map(|x| x / n).collect::<Vec<_>>()
        };
        let mut o = vec![0.0; nv * self.t * dv];
        for h in 0..nv {
            let kh = h / (nv / self.nk);
            for t in 0..self.t {
                let (r, kr) = (h * self.t + t, kh * self.t + t);
                let q: Vec<f64> = l2(&self.q[kr * dk..][..dk]).into_iter().map(|x| x / (dk as f64).sqrt()).collect();
                let k = l2(&self.k[kr * dk..][..dk]);
                let softplus = (1.0 + (self.a[r] + self.dt_bias[h]).exp()).ln();
                let (decay, beta) = ((self.neg_decay[h] * softplus).exp(), 1.0 / (1.0 + (-self.b[r]).exp()));
                let st = &mut s[h * dk * dv..(h + 1) * dk * dv];
                st.iter_mut().for_each(|x| *x *= decay);
                for j in 0..dv {
                    let kv: f64 = (0..dk).map(|i| st[i * dv + j] * k[i]).sum();
                    let delta = beta * (self.v[r * dv + j] - kv);
                    for i in 0..dk {
                        st[i * dv + j] += k[i] * delta;
                    }
                    o[r * dv + j] = (0..dk).map(|i| st[i * dv + j] * q[i]).sum();
                }
            }
        }
        let mut normed = o.clone();
        for (r, row) in normed.chunks_mut(dv).enumerate() {
            let rms = (row.iter().map(|x| x * x).sum::<f64>() / dv as f64 + EPS).sqrt();
            for (j, x) in row.iter_mut().enumerate() {
                let z = self.z[r * dv + j];
                *x = self.w[j] * *x / rms * z / (1.0 + (-z).exp());
            }
        }
        [o, normed, s]
    }
}

fn host<B: RmasBackend, const D: usize>(v: &[f64], shape: [usize; D], d: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(v.iter().map(|x| *x as f32).collect(), shape), d)
}

fn check<B: RmasBackend>(d: &B::Device, t: usize, strong: bool, dims: [usize; 4], s0: &[f64]) {
    let [_, nv, dk, dv] = dims;
    let inputs = Inputs::new(t as u64 * 7 + strong as u64 + dk as u64, t, strong, dims);
    let [o_ref, normed_ref, s_ref] = inputs.naive(s0.to_vec());
    let token_major = |o: &[f64]| host::<B, 3>(o, [nv, t, dv], d).swap_dims(0, 1); // [t, nv, dv]
    let (o_ref, normed_ref, s_ref) =
        (token_major(&o_ref), token_major(&normed_ref), host::<B, 3>(&s_ref, [nv, dk, dv], d));
    let rule = |strided| inputs.rule::<B>(s0, strided, d);
    let cases = [
        ("chunked", gdn::chunked(rule(false)), &o_ref),
        ("recurrent", gdn::recurrent(rule(false)), &o_ref),
        ("dispatched", B::gated_delta_rule(rule(false), None), &o_ref),
        ("dispatched strided", B::gated_delta_rule(rule(true), None), &o_ref),
        ("reference normed", gdn::reference(rule(false), Some(inputs.norm(d))), &normed_ref),
        ("dispatched normed", B::gated_delta_rule(rule(false), Some(inputs.norm(d))), &normed_ref),
        ("dispatched strided normed", B::gated_delta_rule(rule(true), Some(inputs.norm(d))), &normed_ref),
    ];
    for (name, (o, s), o_ref) in cases {
        let what = format!("{name} T={t} strong={strong} [nk, nv, dk, dv]={dims:?}");
        assert_close(&format!("{what} o"), o, o_ref.clone(), 2e-5, 1e-4);
        assert_close(&format!("{what} S"), s, s_ref.clone(), 2e-5, 1e-4);
    }
}

/// `[nk, nv, dk, dv]`: small awkward head sizes (dv not a power of two, 3 value heads per key head)
/// and Qwen3.5's 128 × 128 heads.
const SMALL: [usize; 4] = [1, 3, 8, 5];
const QWEN35: [usize; 4] = [2, 2, 128, 128];

/// The state's size.
fn state_len([_, nv, dk, dv]: [usize; 4]) -> usize {
    nv * dk * dv
}

fn zeros(dims: [usize; 4]) -> Vec<f64> {
    vec![0.0; state_len(dims)]
}

fn lengths<B: RmasBackend>(d: &B::Device) {
    for t in [1, 2, 63, 64, 65, 200] {
        check::<B>(d, t, false, SMALL, &zeros(SMALL));
    }
    for t in [1, 70] {
        check::<B>(d, t, false, QWEN35, &zeros(QWEN35));
    }
}

fn strong_decay<B: RmasBackend>(d: &B::Device) {
    for t in [5, 64, 130] {
        check::<B>(d, t, true, SMALL, &zeros(SMALL));
    }
}

fn continues_from_state<B: RmasBackend>(d: &B::Device) {
    for dims in [SMALL, QWEN35] {
        let s0 = f64s(99, state_len(dims));
        for t in [1, 17, 64, 100] {
            check::<B>(d, t, false, dims, &s0);
        }
    }
}

/// In f16 (where the device has it) the projections (`qkv`, the gates, the norm's gate) are read
/// as they are and widened inside the body: the state is bit for bit the f32 body's on the same
/// rounded inputs, and the output that result rounded to f16 once.
fn half_precision<B: RmasBackend>(d: &B::Device) {
    if !B::supports_dtype(d, DType::F16) {
        return;
    }
    let bits = |x: Tensor<B, 3>| {
        x.cast(DType::F32).into_data().to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    for dims in [SMALL, QWEN35] {
        let t = 17;
        let inputs = Inputs::new(5, t, false, dims);
        let s0 = f64s(98, state_len(dims));
        let run = |round: &dyn Fn(Tensor<B, 2>) -> Tensor<B, 2>| {
            let rule = inputs.rule::<B>(&s0, false, d);
            let rule = DeltaRule { qkv: round(rule.qkv), ab: round(rule.ab), ..rule };
            let norm = inputs.norm::<B>(d);
            B::gated_delta_rule(rule, Some(GatedNorm { z: round(norm.z), ..norm }))
        };
        let (o16, s16) = run(&|x| x.cast(DType::F16));
        let (o32, s32) = run(&|x| x.cast(DType::F16).cast(DType::F32));
        let what = format!("f16 [nk, nv, dk, dv]={dims:?}");
        assert_eq!((o16.dtype(), s16.dtype()), (DType::F16, DType::F32), "{what}: dtypes");
        assert_eq!(bits(s16), bits(s32), "{what}: state");
        assert_eq!(bits(o16), bits(o32.cast(DType::F16)), "{what}: output");
    }
}

/// The convolution (+ SiLU) and the delta rule in one call ([`RmasBackend::conv_delta_rule`], one
/// kernel on cubecl backends) give the bits of the two calls one after the other: the output, the
/// state and the conv state, on the raw projection as the layer slices it out of its product
/// (strided rows), with and without the norm, from prompts to one token (a state longer than the
/// tokens), in f32 and, where the device has it, f16.
fn conv_then_rule<B: RmasBackend>(d: &B::Device) {
    let bits = |x: Tensor<B, 3>| x.cast(DType::F32).into_data().to_vec::<f32>().unwrap();
    let bits2 = |x: Tensor<B, 2>| x.cast(DType::F32).into_data().to_vec::<f32>().unwrap();
    let half = B::supports_dtype(d, DType::F16);
    for (dims, t, normed, dtype) in [
        (SMALL, 1, true, DType::F32),
        (SMALL, 2, false, DType::F32),
        (SMALL, 70, true, DType::F32),
        (QWEN35, 1, true, DType::F32),
        (QWEN35, 9, false, DType::F32),
        (SMALL, 5, true, DType::F16),
        (QWEN35, 1, true, DType::F16),
    ] {
        if dtype == DType::F16 && !half {
            continue;
        }
        let [nk, nv, dk, dv] = dims;
        let (width, taps) = (2 * nk * dk + nv * dv, 4);
        let inputs = Inputs::new(t as u64 + 11, t, false, dims);
        let s0 = f64s(97, state_len(dims));
        let projection = host::<B, 2>(&f64s(t as u64 + 12, t * (width + 3)), [t, width + 3], d).cast(dtype);
        let conv_state = host::<B, 2>(&f64s(13, (taps - 1) * width), [taps - 1, width], d).cast(dtype);
        let weight = host::<B, 2>(&f64s(14, taps * width), [taps, width], d).cast(dtype);
        let rule = || {
            let rule = inputs.rule::<B>(&s0, false, d);
            let qkv = projection.clone().narrow(1, 2, width); // [T, width], rows strided as in the layer
            DeltaRule { qkv, ab: rule.ab.cast(dtype), ..rule }
        };
        let norm = || normed.then(|| inputs.norm::<B>(d)).map(|n| GatedNorm { z: n.z.cast(dtype), ..n });
        let (o, s, c) = B::conv_delta_rule(rule(), (conv_state.clone(), weight.clone()), norm(), None);
        let (qkv, want_c) = B::causal_conv_silu(rule().qkv, conv_state.clone(), weight.clone());
        let (want_o, want_s) = B::gated_delta_rule(DeltaRule { qkv, ..rule() }, norm());
        let what = format!("{dtype:?} T={t} normed={normed} [nk, nv, dk, dv]={dims:?}");
        assert_eq!((o.dtype(), s.dtype(), c.dtype()), (dtype, DType::F32, dtype), "{what}: dtypes");
        assert_eq!(bits2(c), bits2(want_c), "{what}: conv state");
        assert_eq!(bits(s), bits(want_s.clone()), "{what}: state");
        let want_o = bits(want_o);
        assert_eq!(bits(o), want_o, "{what}: output");
        // Written into rows 3.. of a pack of three sequences' outputs: those rows, nothing else.
        let [rows, at] = [t + 4, 3];
        let pack = host::<B, 3>(&f64s(t as u64 + 15, rows * nv * dv), [rows, nv, dv], d).cast(dtype);
        let original = bits(pack.clone());
        let mut expected = original.clone();
        expected[at * nv * dv..(at + t) * nv * dv].copy_from_slice(&want_o);
        let kept = (t % 2 == 0).then(|| pack.clone()); // a pack that shares its buffer is copied first
        let into = rmas_kernels::PackedOut { pack, at };
        let (o, s, _) = B::conv_delta_rule(rule(), (conv_state.clone(), weight.clone()), norm(), Some(into));
        assert_eq!(bits(s), bits(want_s.clone()), "{what}: state beside a pack");
        assert_eq!(bits(o), expected, "{what}: into rows {at}.. of a pack");
        if let Some(kept) = kept {
            assert_eq!(bits(kept), original, "{what}: the shared pack changed");
        }
    }
}

rmas_suite::backend_tests! {
    conv_delta_rule_is_conv_then_rule => conv_then_rule,
    delta_rule_in_f16 => half_precision,
    delta_rule_lengths => lengths,
    delta_rule_strong_decay => strong_decay,
    delta_rule_continues_from_state => continues_from_state,
}
