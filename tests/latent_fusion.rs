//! Latent-fusion operations (the RecursiveLinks' fused LayerNorm and bias + GELU): the backend's
//! implementation (a cubecl kernel on CubeBackend runtimes) against a float64 host loop, at awkward
//! sizes (1, odd, not a multiple of the workgroup, wider than it), in f32 and — where the device has
//! it — f16.

use burn::tensor::{DType, Tensor, TensorData};
use rmas_kernels::RmasBackend;
use rmas_suite::{assert_close, uniform};

const EPS: f64 = 1e-5;
const ROWS: [usize; 3] = [1, 3, 17];
const WIDTHS: [usize; 6] = [1, 7, 48, 257, 1000, 2051];

fn host<B: RmasBackend, const D: usize>(v: &[f64], shape: [usize; D], d: &B::Device, dtype: DType) -> Tensor<B, D> {
    Tensor::<B, D>::from_data(TensorData::new(v.iter().map(|x| *x as f32).collect(), shape), d).cast(dtype)
}

fn values(seed: u64, n: usize, scale: f64, shift: f64) -> Vec<f64> {
    uniform(seed, n).into_iter().map(|x| shift + scale * f64::from(x)).collect()
}

/// LayerNorm of `a + r + bias` per row, in f64.
fn layer_norm_ref(
    a: &[f64],
    r: Option<&[f64]>,
    bias: Option<&[f64]>,
    gamma: &[f64],
    beta: &[f64],
    d: usize,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(a.len());
    for (row, chunk) in a.chunks(d).enumerate() {
        let x: Vec<f64> =
            (0..d).map(|j| chunk[j] + r.map_or(0.0, |r| r[row * d + j]) + bias.map_or(0.0, |b| b[j])).collect();
        let mean = x.iter().sum::<f64>() / d as f64;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
        out.extend(x.iter().enumerate().map(|(j, v)| (v - mean) / (var + EPS).sqrt() * gamma[j] + beta[j]));
    }
    out
}

fn gelu_ref(x: f64) -> f64 {
    0.5 * x * (1.0 + libm_erf(x / std::f64::consts::SQRT_2))
}

/// erf by its Maclaurin series (|x| ≤ 3) or the asymptotic complement, to ~1e-12 — enough for an f32 check.
fn libm_erf(x: f64) -> f64 {
    let (s, z) = (x.signum(), x.abs());
    if z > 5.0 {
        return s;
    }
    let (mut term, mut sum, mut n) = (z, z, 0.0);
    while term.abs() > 1e-17 * sum.abs() {
        n += 1.0;
        term *= -z * z / n;
        sum += term / (2.0 * n + 1.0);
    }
    s * sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// (atol, rtol) per dtype: f16 inputs are rounded before the (f32) computation.
fn tolerance(dtype: DType) -> (f32, f32) {
    if dtype == DType::F16 { (2e-2, 2e-2) } else { (2e-5, 1e-4) }
}

fn dtypes<B: RmasBackend>(d: &B::Device) -> Vec<DType> {
    let mut v = vec![DType::F32];
    if B::supports_dtype(d, DType::F16) {
        v.push(DType::F16);
    }
    v
}

/// For f16 the reference sees the same f16-rounded inputs.
fn rounded(v: Vec<f64>, dtype: DType) -> Vec<f64> {
    if dtype == DType::F16 { v.into_iter().map(|x| f64::from(half::f16::from_f64(x).to_f32())).collect() } else { v }
}

fn layer_norm_sum<B: RmasBackend>(d: &B::Device) {
    for dtype in dtypes::<B>(d) {
        for (i, (&t, &w)) in ROWS.iter().flat_map(|t| WIDTHS.iter().map(move |w| (t, w))).enumerate() {
            let seed = 1000 + i as u64 * 10;
            let a = rounded(values(seed, t * w, 3.0, 0.5), dtype);
            let r = rounded(values(seed + 1, t * w, 1.0, -0.2), dtype);
            let bias = rounded(values(seed + 2, w, 0.5, 0.0), dtype);
            let gamma = rounded(values(seed + 3, w, 0.3, 1.0), dtype);
            let beta = rounded(values(seed + 4, w, 0.1, 0.0), dtype);
            for (with_r, with_b) in [(false, false), (true, false), (true, true)] {
                let expected =
                    layer_norm_ref(&a, with_r.then_some(&r[..]), with_b.then_some(&bias[..]), &gamma, &beta, w);
                let got = B::layer_norm_sum(
                    host::<B, 2>(&a, [t, w], d, dtype),
                    with_r.then(|| host::<B, 2>(&r, [t, w], d, dtype)),
                    with_b.then(|| host::<B, 1>(&bias, [w], d, dtype)),
                    host::<B, 1>(&gamma, [w], d, dtype),
                    host::<B, 1>(&beta, [w], d, dtype),
                    EPS,
                );
                assert_eq!(got.dtype(), dtype, "output dtype follows the input");
                let (atol, rtol) = tolerance(dtype);
                let what = format!("layer_norm_sum {dtype:?} [{t}, {w}] residual={with_r} bias={with_b}");
                assert_close(&what, got.cast(DType::F32), host::<B, 2>(&expected, [t, w], d, DType::F32), atol, rtol);
            }
        }
    }
}

fn bias_gelu<B: RmasBackend>(d: &B::Device) {
    for dtype in dtypes::<B>(d) {
        for (i, (&t, &w)) in ROWS.iter().flat_map(|t| WIDTHS.iter().map(move |w| (t, w))).enumerate() {
            let seed = 5000 + i as u64 * 10;
            let x = rounded(values(seed, t * w, 4.0, 0.0), dtype);
            let bias = rounded(values(seed + 1, w, 1.0, 0.0), dtype);
            let expected: Vec<f64> = x.iter().enumerate().map(|(k, v)| gelu_ref(v + bias[k % w])).collect();
            let got = B::bias_gelu(host::<B, 2>(&x, [t, w], d, dtype), host::<B, 1>(&bias, [w], d, dtype));
            let (atol, rtol) = tolerance(dtype);
            assert_close(
                &format!("bias_gelu {dtype:?} [{t}, {w}]"),
                got.cast(DType::F32),
                host::<B, 2>(&expected, [t, w], d, DType::F32),
                atol,
                rtol,
            );
        }
    }
}

/// Many rows: more cubes than the element-wise kernel launches, so its grid-stride loop is exercised.
fn bias_gelu_long<B: RmasBackend>(d: &B::Device) {
    let (t, w) = (4500, 257);
    let x = values(77, t * w, 4.0, 0.0);
    let bias = values(78, w, 1.0, 0.0);
    let expected: Vec<f64> = x.iter().enumerate().map(|(k, v)| gelu_ref(v + bias[k % w])).collect();
    let got = B::bias_gelu(host::<B, 2>(&x, [t, w], d, DType::F32), host::<B, 1>(&bias, [w], d, DType::F32));
    assert_close("bias_gelu [4500, 257]", got, host::<B, 2>(&expected, [t, w], d, DType::F32), 2e-5, 1e-4);
}

/// More rows than the row kernels launch cubes (4096), so the LayerNorm's row-striding loop runs.
fn layer_norm_sum_many_rows<B: RmasBackend>(d: &B::Device) {
    let (t, w) = (4200, 33);
    let a = values(91, t * w, 3.0, 0.5);
    let r = values(92, t * w, 1.0, -0.2);
    let gamma = values(93, w, 0.3, 1.0);
    let beta = values(94, w, 0.1, 0.0);
    let expected = layer_norm_ref(&a, Some(&r[..]), None, &gamma, &beta, w);
    let f32s = |v: &[f64], shape| host::<B, 2>(v, shape, d, DType::F32);
    let vector = |v: &[f64]| host::<B, 1>(v, [w], d, DType::F32);
    let got = B::layer_norm_sum(f32s(&a, [t, w]), Some(f32s(&r, [t, w])), None, vector(&gamma), vector(&beta), EPS);
    assert_close("layer_norm_sum [4200, 33]", got, f32s(&expected, [t, w]), 2e-5, 1e-4);
}

rmas_suite::backend_tests! {
    latent_fusion_layer_norm_sum => layer_norm_sum,
    latent_fusion_layer_norm_sum_many_rows => layer_norm_sum_many_rows,
    latent_fusion_bias_gelu => bias_gelu,
    latent_fusion_bias_gelu_long => bias_gelu_long,
}
