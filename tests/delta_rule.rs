//! The gated delta rule: chunked prefill == token recurrence == a plain float64 loop, incl. continuation.

use burn::tensor::{Tensor, TensorData};
use rmas_kernels::{RmasBackend, gdn};
use rmas_suite::{assert_close, uniform};

const NV: usize = 3;
const DK: usize = 8;
const DV: usize = 5;

/// Random inputs of `t` steps: l2-normed q/k (q scaled), β ∈ (0,1), log-decay g ≤ 0 (`strong` = large decay).
struct Inputs {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    g: Vec<f64>,
    beta: Vec<f64>,
    t: usize,
}

impl Inputs {
    fn new(seed: u64, t: usize, strong: bool) -> Self {
        let unit = |seed, d| {
            let raw = uniform(seed, NV * t * d);
            raw.chunks(d)
                .flat_map(|c| {
                    let n = c.iter().map(|x| (x * x) as f64).sum::<f64>().sqrt() + 1e-3;
                    c.iter().map(move |x| *x as f64 / n).collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        let q = unit(seed, DK).into_iter().map(|x| x / (DK as f64).sqrt()).collect();
        let k = unit(seed + 1, DK);
        let v = uniform(seed + 2, NV * t * DV).into_iter().map(f64::from).collect();
        let scale = if strong { 30.0 } else { 0.3 };
        let g = uniform(seed + 3, NV * t).into_iter().map(|x| -scale * (x as f64 + 1.0)).collect();
        let beta = uniform(seed + 4, NV * t).into_iter().map(|x| 0.5 + 0.45 * x as f64).collect();
        Self { q, k, v, g, beta, t }
    }

    fn tensors<B: RmasBackend>(&self, d: &B::Device) -> [Tensor<B, 3>; 3] {
        let f = |v: &[f64], dim| Tensor::from_data(TensorData::new(v.iter().map(|x| *x as f32).collect(), [NV, self.t, dim]), d);
        [f(&self.q, DK), f(&self.k, DK), f(&self.v, DV)]
    }

    fn gates<B: RmasBackend>(&self, d: &B::Device) -> [Tensor<B, 2>; 2] {
        let f = |v: &[f64]| Tensor::from_data(TensorData::new(v.iter().map(|x| *x as f32).collect(), [NV, self.t]), d);
        [f(&self.g), f(&self.beta)]
    }

    /// Plain float64 recurrence from `s0` ([NV, DK, DV] row-major); returns (o, S).
    fn naive(&self, mut s: Vec<f64>) -> (Vec<f64>, Vec<f64>) {
        let mut o = vec![0.0; NV * self.t * DV];
        for h in 0..NV {
            for t in 0..self.t {
                let at = |x: &Vec<f64>, d: usize, i: usize| x[(h * self.t + t) * d + i];
                let decay = self.g[h * self.t + t].exp();
                let st = &mut s[h * DK * DV..(h + 1) * DK * DV];
                st.iter_mut().for_each(|x| *x *= decay);
                for j in 0..DV {
                    let kv: f64 = (0..DK).map(|i| st[i * DV + j] * at(&self.k, DK, i)).sum();
                    let delta = self.beta[h * self.t + t] * (at(&self.v, DV, j) - kv);
                    for i in 0..DK {
                        st[i * DV + j] += at(&self.k, DK, i) * delta;
                    }
                    o[(h * self.t + t) * DV + j] = (0..DK).map(|i| st[i * DV + j] * at(&self.q, DK, i)).sum();
                }
            }
        }
        (o, s)
    }
}

fn host<B: RmasBackend, const D: usize>(v: &[f64], shape: [usize; D], d: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(v.iter().map(|x| *x as f32).collect(), shape), d)
}

fn check<B: RmasBackend>(d: &B::Device, t: usize, strong: bool, s0: Vec<f64>) {
    let inputs = Inputs::new(t as u64 * 7 + strong as u64, t, strong);
    let (o_ref, s_ref) = inputs.naive(s0.clone());
    let [q, k, v] = inputs.tensors::<B>(d);
    let [g, beta] = inputs.gates::<B>(d);
    let state = host::<B, 3>(&s0, [NV, DK, DV], d);
    let chunked = gdn::chunked(q.clone(), k.clone(), v.clone(), g.clone(), beta.clone(), state.clone());
    let recurrent = gdn::recurrent(q.clone(), k.clone(), v.clone(), g.clone(), beta.clone(), state.clone());
    let dispatched = gdn::gated_delta_rule(q.clone(), k.clone(), v.clone(), g.clone(), beta.clone(), state.clone());
    // Head-major views of token-major tensors, as the model passes them.
    let token_major = |x: Tensor<B, 3>| Tensor::<B, 3>::from_data(x.swap_dims(0, 1).into_data(), d).swap_dims(0, 1);
    let strided = gdn::gated_delta_rule(token_major(q), token_major(k), token_major(v), g, beta, state);
    let o_ref = host::<B, 3>(&o_ref, [NV, t, DV], d);
    let s_ref = host::<B, 3>(&s_ref, [NV, DK, DV], d);
    for (name, (o, s)) in [("chunked", chunked), ("recurrent", recurrent), ("dispatched", dispatched), ("dispatched strided", strided)] {
        let what = format!("{name} T={t} strong={strong}");
        assert_close(&format!("{what} o"), o, o_ref.clone(), 2e-5, 1e-4);
        assert_close(&format!("{what} S"), s, s_ref.clone(), 2e-5, 1e-4);
    }
}

fn lengths<B: RmasBackend>(d: &B::Device) {
    for t in [1, 2, 63, 64, 65, 200] {
        check::<B>(d, t, false, vec![0.0; NV * DK * DV]);
    }
}

fn strong_decay<B: RmasBackend>(d: &B::Device) {
    for t in [5, 64, 130] {
        check::<B>(d, t, true, vec![0.0; NV * DK * DV]);
    }
}

fn continues_from_state<B: RmasBackend>(d: &B::Device) {
    let s0: Vec<f64> = uniform(99, NV * DK * DV).into_iter().map(f64::from).collect();
    for t in [1, 17, 64, 100] {
        check::<B>(d, t, false, s0.clone());
    }
}

rmas_suite::backend_tests! {
    delta_rule_lengths => lengths,
    delta_rule_strong_decay => strong_decay,
    delta_rule_continues_from_state => continues_from_state,
}
