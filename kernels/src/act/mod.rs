//! Activations, optionally times a second tensor (gated MLPs, output gates): reference path.

use burn::tensor::{Tensor, activation, backend::Backend};

use crate::cpu_common::exp;

pub(crate) mod cpu;
pub(crate) mod cube;

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
