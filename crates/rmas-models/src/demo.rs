//! Deterministic random weights for in-process demo models (no download needed).

use crate::config::{Config, NormKind};
use crate::weights::Weights;

/// Uniform values in `[-1, 1)` from a seed (SplitMix64).
pub fn uniform(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// A stable 64-bit hash of a tensor name (FNV-1a), so values do not depend on load order.
fn name_seed(name: &str, seed: u64) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325 ^ seed, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Random weights for `config`, scaled so activations stay O(1) (like the golden test models).
pub fn random_weights(config: &Config, seed: u64) -> Weights {
    let plain_norms = config.norm == NormKind::Plain;
    Weights::synthetic(Box::new(move |name, shape| {
        let n: usize = shape.iter().product();
        let u = uniform(name_seed(name, seed), n);
        let fan_in = *shape.last().unwrap_or(&1) as f32;
        if name.ends_with("A_log") {
            u.into_iter().map(|x| (2.0 + 1.5 * x).ln()).collect()
        } else if name.ends_with("linear_attn.norm.weight") || (plain_norms && name.contains("norm")) {
            u.into_iter().map(|x| 1.0 + 0.1 * x).collect()
        } else if name.contains("norm") {
            u.into_iter().map(|x| 0.1 * x).collect()
        } else if name.ends_with("dt_bias") || name.ends_with(".bias") {
            u.into_iter().map(|x| 0.1 * x).collect()
        } else if name.contains("embed_tokens") {
            u
        } else {
            u.into_iter().map(|x| x * (3.0 / fan_in).sqrt()).collect()
        }
    }))
}
