//! The gated delta rule and its fused gated RMSNorm: chunked prefill == token recurrence == the
//! backend's own body (contiguous and strided inputs) == a plain float64 loop, incl. continuation.

use burn::tensor::{Tensor, TensorData};
use rmas_kernels::{DeltaRule, GatedNorm, RmasBackend, gdn};
use rmas_suite::{assert_close, uniform};

const EPS: f64 = 1e-6;

/// Random inputs of `t` steps, head-major `[nv, t, d]` in float64: l2-normed q/k (q scaled), β ∈ (0,1),
/// log-decay g ≤ 0 (`strong` = large decay), and the norm's gate `z` and weight `w`.
struct Inputs {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    g: Vec<f64>,
    beta: Vec<f64>,
    z: Vec<f64>,
    w: Vec<f64>,
    t: usize,
    nv: usize,
    dk: usize,
    dv: usize,
}

fn f64s(seed: u64, n: usize) -> Vec<f64> {
    uniform(seed, n).into_iter().map(f64::from).collect()
}

impl Inputs {
    fn new(seed: u64, t: usize, strong: bool, [nv, dk, dv]: [usize; 3]) -> Self {
        let unit = |seed, d| {
            f64s(seed, nv * t * d)
                .chunks(d)
                .flat_map(|c| {
                    let n = c.iter().map(|x| x * x).sum::<f64>().sqrt() + 1e-3;
                    c.iter().map(move |x| x / n).collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        let q = unit(seed, dk).into_iter().map(|x| x / (dk as f64).sqrt()).collect();
        let scale = if strong { 30.0 } else { 0.3 };
        Self {
            q,
            k: unit(seed + 1, dk),
            v: f64s(seed + 2, nv * t * dv),
            g: f64s(seed + 3, nv * t).into_iter().map(|x| -scale * (x + 1.0)).collect(),
            beta: f64s(seed + 4, nv * t).into_iter().map(|x| 0.5 + 0.45 * x).collect(),
            z: f64s(seed + 5, nv * t * dv).into_iter().map(|x| 4.0 * x).collect(),
            w: f64s(seed + 6, dv).into_iter().map(|x| 1.0 + x).collect(),
            t,
            nv,
            dk,
            dv,
        }
    }

    /// The layer's token-major inputs from state `s0`: contiguous, or (`strided`) views of head-major data.
    fn rule<B: RmasBackend>(&self, s0: &[f64], strided: bool, d: &B::Device) -> DeltaRule<B> {
        let (nv, t) = (self.nv, self.t);
        let token_major = |x: &[f64], dim| {
            let x = host::<B, 3>(x, [nv, t, dim], d).swap_dims(0, 1); // [t, nv, dim]
            if strided { x } else { Tensor::from_data(x.into_data(), d) }
        };
        DeltaRule {
            q: token_major(&self.q, self.dk),
            k: token_major(&self.k, self.dk),
            v: token_major(&self.v, self.dv),
            g: host(&self.g, [nv, t], d),
            beta: host(&self.beta, [nv, t], d),
            state: host(s0, [nv, self.dk, self.dv], d),
        }
    }

    fn norm<B: RmasBackend>(&self, d: &B::Device) -> GatedNorm<B> {
        let z = host::<B, 3>(&self.z, [self.nv, self.t, self.dv], d).swap_dims(0, 1);
        GatedNorm { z: Tensor::from_data(z.into_data(), d), weight: host(&self.w, [self.dv], d), eps: EPS }
    }

    /// Plain float64 recurrence from `s0` (`[nv, dk, dv]` row-major); returns o `[nv, t, dv]`, that
    /// o gated-RMS-normed, and S.
    fn naive(&self, mut s: Vec<f64>) -> [Vec<f64>; 3] {
        let (nv, dk, dv) = (self.nv, self.dk, self.dv);
        let mut o = vec![0.0; nv * self.t * dv];
        for h in 0..nv {
            for t in 0..self.t {
                let r = h * self.t + t;
                let decay = self.g[r].exp();
                let st = &mut s[h * dk * dv..(h + 1) * dk * dv];
                st.iter_mut().for_each(|x| *x *= decay);
                for j in 0..dv {
                    let kv: f64 = (0..dk).map(|i| st[i * dv + j] * self.k[r * dk + i]).sum();
                    let delta = self.beta[r] * (self.v[r * dv + j] - kv);
                    for i in 0..dk {
                        st[i * dv + j] += self.k[r * dk + i] * delta;
                    }
                    o[r * dv + j] = (0..dk).map(|i| st[i * dv + j] * self.q[r * dk + i]).sum();
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

fn check<B: RmasBackend>(d: &B::Device, t: usize, strong: bool, dims: [usize; 3], s0: &[f64]) {
    let [nv, dk, dv] = dims;
    let inputs = Inputs::new(t as u64 * 7 + strong as u64 + dk as u64, t, strong, dims);
    let [o_ref, normed_ref, s_ref] = inputs.naive(s0.to_vec());
    let token_major = |o: &[f64]| host::<B, 3>(o, [nv, t, dv], d).swap_dims(0, 1); // [t, nv, dv]
    let (o_ref, normed_ref, s_ref) = (token_major(&o_ref), token_major(&normed_ref), host::<B, 3>(&s_ref, [nv, dk, dv], d));
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
        let what = format!("{name} T={t} strong={strong} [nv, dk, dv]={dims:?}");
        assert_close(&format!("{what} o"), o, o_ref.clone(), 2e-5, 1e-4);
        assert_close(&format!("{what} S"), s, s_ref.clone(), 2e-5, 1e-4);
    }
}

/// Small awkward head sizes (dv not a power of two) and Qwen3.5's 128 × 128 heads.
const SMALL: [usize; 3] = [3, 8, 5];
const QWEN35: [usize; 3] = [2, 128, 128];

fn zeros(dims: [usize; 3]) -> Vec<f64> {
    vec![0.0; dims.iter().product()]
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
        let s0 = f64s(99, dims.iter().product());
        for t in [1, 17, 64, 100] {
            check::<B>(d, t, false, dims, &s0);
        }
    }
}

rmas_suite::backend_tests! {
    delta_rule_lengths => lengths,
    delta_rule_strong_decay => strong_decay,
    delta_rule_continues_from_state => continues_from_state,
}
