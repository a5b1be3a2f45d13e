//! Activations (times a gate) and the attention softmax: the backend's implementation (one pass on
//! the CPU) against float64 host loops, at awkward sizes (1, odd, past the CPU task size), on
//! contiguous and strided inputs, incl. −∞ (masked) scores.

use burn::tensor::{Tensor, TensorData};
use rmas_kernels::{Act, RmasBackend};
use rmas_suite::{assert_close, uniform};

fn act_f64(act: Act, x: f64) -> f64 {
    match act {
        Act::Silu => x / (1.0 + (-x).exp()),
        Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Act::GeluTanh => 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh()),
    }
}

fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    uniform(seed, n).into_iter().map(|x| scale * x).collect()
}

/// `[a, b, c]` values as a tensor; `strided` builds it as a `[b, a, c]` tensor's transposed view.
fn tensor<B: RmasBackend>(v: &[f32], [a, b, c]: [usize; 3], strided: bool, d: &B::Device) -> Tensor<B, 3> {
    if !strided {
        return Tensor::from_data(TensorData::new(v.to_vec(), [a, b, c]), d);
    }
    let mut t = vec![0f32; v.len()];
    for i in 0..a {
        for j in 0..b {
            t[(j * a + i) * c..(j * a + i + 1) * c].copy_from_slice(&v[(i * b + j) * c..(i * b + j + 1) * c]);
        }
    }
    Tensor::<B, 3>::from_data(TensorData::new(t, [b, a, c]), d).swap_dims(0, 1)
}

fn activations<B: RmasBackend>(d: &B::Device) {
    for (shape, strided) in [([1, 1, 1], false), ([1, 1, 7], false), ([3, 5, 7], true), ([2, 3, 2731], false), ([4, 3, 1500], true)] {
        let n: usize = shape.iter().product();
        let x = values(n as u64, n, 30.0);
        let by = values(n as u64 + 1, n, 2.0);
        for act in [Act::Silu, Act::Sigmoid, Act::GeluTanh] {
            let what = format!("{act:?} {shape:?} strided={strided}");
            let want = |gate: bool| {
                let v = x.iter().zip(&by).map(|(&x, &b)| (act_f64(act, x as f64) * if gate { b as f64 } else { 1.0 }) as f32);
                Tensor::<B, 3>::from_data(TensorData::new(v.collect(), shape), d)
            };
            let got = B::activate(tensor::<B>(&x, shape, strided, d), act, None);
            assert_close(&what, got, want(false), 2e-6, 1e-5);
            let got = B::activate(tensor::<B>(&x, shape, strided, d), act, Some(tensor::<B>(&by, shape, !strided, d)));
            assert_close(&format!("{what} gated"), got, want(true), 2e-6, 1e-5);
        }
    }
}

fn softmax<B: RmasBackend>(d: &B::Device) {
    for (shape, strided) in [([1, 1, 1], false), ([2, 3, 5], true), ([2, 33, 513], false), ([3, 4, 130], true)] {
        let n: usize = shape.iter().product();
        let width = shape[2];
        // Causal-style masks: row r keeps its first (r % width) + 1 entries.
        let x: Vec<f32> = values(n as u64 + 7, n, 20.0)
            .into_iter()
            .enumerate()
            .map(|(i, v)| if i % width > (i / width) % width { f32::NEG_INFINITY } else { v })
            .collect();
        let mut want = Vec::with_capacity(n);
        for row in x.chunks(width) {
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let e: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            want.extend(e.iter().map(|v| (v / sum) as f32));
        }
        let got = B::softmax_last(tensor::<B>(&x, shape, strided, d));
        let want = Tensor::<B, 3>::from_data(TensorData::new(want, shape), d);
        assert_close(&format!("softmax {shape:?} strided={strided}"), got, want, 1e-6, 1e-5);
    }
}

rmas_suite::backend_tests! {
    activations_match_f64 => activations,
    softmax_matches_f64 => softmax,
}
