//! Sampling reads back less on a device and chooses the same: with top-k on, a cubecl backend
//! narrows each row to its `k + 1` largest logits before the read-back (docs/batching.md,
//! "Packed read-backs"); the CPU reads whole rows. Each backend must draw, seed for seed, what the
//! CPU draws from the same logits, including rows whose candidates cannot settle top-k (ties at the
//! k-th logit, a NaN), which read the whole row after all.

use burn::tensor::{Tensor, TensorData};
use rmas_models::RmasBackend;
use rmas_models::block_on;
use rmas_models::generate::{Sampler, Sampling};

/// A vocabulary the size of Llama 2's (ids well past 2^16, under 2^24).
const VOCAB: usize = 32_000;

/// Rows of logits: fine-grained (top-k settles on the device), on a coarse grid (ties at the k-th),
/// and one with a NaN.
fn rows() -> Vec<Vec<f32>> {
    let fine =
        |seed: u64, scale: f32| rmas_suite::uniform(seed, VOCAB).into_iter().map(|x| x * scale).collect::<Vec<_>>();
    let (a, b) = (fine(1, 8.0), fine(2, 3.0));
    let coarse: Vec<f32> = (0..VOCAB).map(|i| ((i * 7919) % 13) as f32 * 0.5).collect();
    let mut nan = fine(3, 8.0);
    nan[VOCAB / 2] = f32::NAN;
    vec![a, b, coarse, nan]
}

fn draws_as_the_cpu_draws<B: RmasBackend>(device: &B::Device) {
    let cpu = Default::default();
    for (r, row) in rows().into_iter().enumerate() {
        let logits = |data: Vec<f32>| TensorData::new(data, [1, VOCAB]);
        for (temperature, top_k, top_p) in
            [(1.0, 50, 1.0), (0.6, 50, 0.95), (30.0, 50, 1.0), (1.3, 5, 0.9), (0.8, 1, 1.0)]
        {
            let sampling = Sampling::Sample { temperature, top_k, top_p };
            for seed in 0..24 {
                let draw = |on_device: bool| {
                    let mut sampler = Sampler::new(sampling, seed);
                    let id = match on_device {
                        true => block_on(sampler.sample(Tensor::<B, 2>::from_data(logits(row.clone()), device))),
                        false => {
                            let t = Tensor::<burn::backend::NdArray, 2>::from_data(logits(row.clone()), &cpu);
                            block_on(sampler.sample(t))
                        }
                    };
                    id.expect("a token")
                };
                assert_eq!(
                    draw(true),
                    draw(false),
                    "row {r}, temperature {temperature}, top-k {top_k}, top-p {top_p}, seed {seed}"
                );
            }
        }
    }
}

/// The device's top values and ids, exactly as a sort gives them (ties by lower id), for row
/// lengths of one round and of two (a chunk is 8192 values: 8192 takes one round, 8193, 32,000
/// and 248,320 take two), and every candidate count up to the most a cube holds.
fn top_values_match_a_sort<B: RmasBackend>(device: &B::Device) {
    for (n, len) in [(1, 51), (3, 8192), (2, 8193), (1, VOCAB), (2, 248_320)] {
        // A fine row, and rows on a grid of 13 values (most of them ties).
        let data: Vec<f32> = (0..n)
            .flat_map(|r| match r {
                0 => rmas_suite::uniform(len as u64, len),
                _ => (0..len).map(|i| ((i * 7919 + r) % 13) as f32 * 0.5).collect(),
            })
            .collect();
        for m in [1, 2, 33, 51, 64].into_iter().filter(|&m| m <= len) {
            let x = Tensor::<B, 2>::from_data(TensorData::new(data.clone(), [n, len]), device);
            let Some(top) = B::top_values(x, m) else {
                assert!(!B::DEVICE_TOP_K, "{} computes top values, but not of {n} × {len}, m {m}", B::name(device));
                return;
            };
            let got = top.into_data().to_vec::<f32>().expect("f32 candidates");
            for (r, row) in data.chunks(len).enumerate() {
                let want = rmas_kernels::topk::reference(row, m);
                assert_eq!(&got[r * 2 * m..(r + 1) * 2 * m], &want[..], "row {r} of {n} × {len}, m {m}");
            }
        }
    }
}

rmas_suite::backend_tests! {
    draws_as_the_cpu_draws => draws_as_the_cpu_draws,
    top_values_match_a_sort => top_values_match_a_sort,
}
