//! Activations, optionally times a second tensor (gated MLPs, output gates): reference path.

use burn::tensor::{Tensor, activation, backend::Backend};

/// An elementwise activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// `x·σ(x)`.
    Silu,
    /// `σ(x) = 1 / (1 + e⁻ˣ)`.
    Sigmoid,
    /// GELU with the tanh approximation (`gelu_pytorch_tanh`).
    GeluTanh,
}

impl Act {
    /// `x[i] ← act(x[i])`, times `by[i]` when given (slices of equal length).
    #[inline(always)]
    pub fn apply(self, x: &mut [f32], by: Option<&[f32]>) {
        // One monomorphised loop per activation so that each vectorises (`exp` below is branch-free).
        match self {
            Act::Silu => map(|x| x / (1.0 + exp(-x)), x, by),
            Act::Sigmoid => map(|x| 1.0 / (1.0 + exp(-x)), x, by),
            // 0.5·x·(1 + tanh(u)) = x·σ(2u).
            Act::GeluTanh => map(|x| x / (1.0 + exp(-2.0 * SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))), x, by),
        }
    }
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;

#[inline(always)]
fn map(f: impl Fn(f32) -> f32, x: &mut [f32], by: Option<&[f32]>) {
    match by {
        Some(by) => x.iter_mut().zip(by).for_each(|(x, &b)| *x = f(*x) * b),
        None => x.iter_mut().for_each(|x| *x = f(*x)),
    }
}

/// `eˣ` in f32 without branches or library calls, so loops over it vectorise: `2ⁿ·p(r)` with
/// `x = n·ln2 + r`, `|r| ≤ ln2/2` and Cephes' degree-7 polynomial (relative error ≲ 2e-7); 0 below
/// −87.3 (incl. −∞), saturating at `e^88.3` above.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest by the 1.5·2²³ trick (plain SSE2 has no vector rounding).
    const ROUND: f32 = 12_582_912.0;
    const MIN: f32 = -87.3;
    let underflow = x < MIN;
    let x = x.clamp(MIN, 88.3);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Cephes `expf` coefficients (its 5.0000001e-1 is 0.5 in f32).
    let p =
        0.5 + r * (1.666_666_5e-1 + r * (4.166_579_6e-2 + r * (8.333_452e-3 + r * (1.398_2e-3 + r * 1.987_569_1e-4))));
    let p = 1.0 + r + r * r * p;
    let y = p * f32::from_bits(((n as i32 + 127) as u32) << 23);
    if underflow { 0.0 } else { y }
}

/// `act(x)`, times `by` (same shape) when given, with burn's activations.
pub fn reference<B: Backend, const D: usize>(x: Tensor<B, D>, act: Act, by: Option<Tensor<B, D>>) -> Tensor<B, D> {
    let y = match act {
        Act::Silu => activation::silu(x),
        Act::Sigmoid => activation::sigmoid(x),
        Act::GeluTanh => activation::gelu_approximate(x),
    };
    match by {
        Some(by) => y * by,
        None => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_f64_within_two_ulp_and_underflows_to_zero() {
        let mut worst = 0f64;
        for i in 0..=2_000_000 {
            let x = -87.0 + 175.0 * i as f32 / 2_000_000.0; // −87 … 88
            let want = (x as f64).exp();
            let err = ((exp(x) as f64) - want).abs() / want;
            assert!(!err.is_nan(), "exp({x}) = {}", exp(x));
            worst = worst.max(err);
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        for x in [-87.4, -100.0, -1e30, f32::NEG_INFINITY] {
            assert_eq!(exp(x), 0.0, "exp({x})");
        }
        assert!(exp(1e30).is_finite() && exp(1e30) > 1e38);
    }

    #[test]
    fn activations_match_f64() {
        let x: Vec<f32> = (0..4001).map(|i| -40.0 + 0.02 * i as f32).collect();
        let by: Vec<f32> = x.iter().map(|v| 0.5 - v / 80.0).collect();
        let cases: [(Act, fn(f64) -> f64); 3] = [
            (Act::Silu, |x| x / (1.0 + (-x).exp())),
            (Act::Sigmoid, |x| 1.0 / (1.0 + (-x).exp())),
            (Act::GeluTanh, |x| {
                0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
            }),
        ];
        for (act, f) in cases {
            let mut out = x.clone();
            act.apply(&mut out, Some(&by));
            for ((&x, &b), &o) in x.iter().zip(&by).zip(&out) {
                let want = f(x as f64) * b as f64;
                assert!((o as f64 - want).abs() <= 1e-6 + 2e-6 * want.abs(), "{act:?}({x})·{b}: {o} vs {want}");
            }
        }
    }
}
