//! Strict-f32 weight products (docs/numerics.md, "Strict f32"): with the mode on, the cubecl
//! backends multiply f32 weights with plain f32 multiply-adds (never TF32), so products match
//! float64 host loops at CPU tolerances. This file is in the `strict` test binary: the mode is global.

use burn::tensor::{Tensor, TensorData};
use rmas_kernels::{RmasBackend, Rows};
use rmas_suite::{assert_close, uniform};

/// `x·Wᵀ` and `h·mᵀ` against float64 loops, for decode and prefill rows and uneven widths.
fn strict_products<B: RmasBackend>(d: &B::Device) {
    rmas_kernels::linear::cube::set_strict_f32(true);
    for (rows, k, n) in [(1, 7, 300), (1, 256, 1000), (4, 33, 257), (9, 129, 70)] {
        let (x, w) = (uniform(rows as u64, rows * k), uniform(7 + n as u64, n * k)); // w: HF's [n, k]
        let want: Vec<f32> = (0..rows * n)
            .map(|i| (0..k).map(|j| x[(i / n) * k + j] as f64 * w[(i % n) * k + j] as f64).sum::<f64>() as f32)
            .collect();
        let want = Tensor::<B, 2>::from_data(TensorData::new(want, [rows, n]), d);
        let xt = Tensor::<B, 2>::from_data(TensorData::new(x, [rows, k]), d);
        let m = Tensor::<B, 2>::from_data(TensorData::new(w, [n, k]), d);
        let layer = if B::WEIGHTS_OUT_IN { m.clone() } else { Tensor::from_data(m.clone().transpose().into_data(), d) };
        let what = format!("{rows}x{k} by {n}x{k}");
        assert_close(
            &format!("strict linear {what}"),
            B::linear_matmul(xt.clone(), layer, Rows::Sequence),
            want.clone(),
            1e-5,
            1e-5,
        );
        assert_close(&format!("strict logits {what}"), B::vocab_logits(xt, m, Rows::Sequence), want, 1e-5, 1e-5);
    }
}

rmas_suite::backend_tests! {
    strict_f32_products_match_f64 => strict_products,
}
