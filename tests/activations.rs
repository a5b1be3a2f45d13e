//! Activations (times a gate), the gated MLP product, the attention softmax, causal attention, RMSNorm, the GDN's causal
//! conv + SiLU, and the keys' rotation into a KV cache: the backend's implementation (one pass or
//! blocked on the CPU, cubecl kernels on wgpu/CUDA) against float64 host loops, at awkward sizes (1,
//! odd, past the CPU task size and the kernels' grid), on contiguous and strided inputs, incl. −∞
//! (masked) scores; in f32 and, where the device supports it, f16.

use burn::tensor::{DType, Tensor, TensorData};
use rmas_kernels::{Act, RmasBackend, Rows};
use rmas_suite::{assert_close, uniform};

fn act_f64(act: Act, x: f64) -> f64 {
    match act {
        Act::Silu => x / (1.0 + (-x).exp()),
        Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Act::GeluTanh => 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh()),
    }
}

/// Uniform values in ±`scale`, rounded to `dtype` (so the f64 reference sees the backend's inputs).
fn values(seed: u64, n: usize, scale: f32, dtype: DType) -> Vec<f32> {
    let v = uniform(seed, n).into_iter().map(|x| scale * x);
    if dtype == DType::F16 { v.map(|x| half::f16::from_f32(x).to_f32()).collect() } else { v.collect() }
}

fn dtypes<B: RmasBackend>(d: &B::Device) -> Vec<DType> {
    let mut v = vec![DType::F32];
    if B::supports_dtype(d, DType::F16) {
        v.push(DType::F16);
    }
    v
}

/// (atol, rtol) per dtype: f16 results are rounded to 11 significant bits.
fn tolerance(dtype: DType, f32_tolerance: (f32, f32)) -> (f32, f32) {
    if dtype == DType::F16 { (2e-2, 2e-2) } else { f32_tolerance }
}

/// `[a, b, c]` values as a `dtype` tensor; `strided` builds it as a `[b, a, c]` tensor's transposed view.
fn tensor<B: RmasBackend>(
    v: &[f32],
    [a, b, c]: [usize; 3],
    strided: bool,
    dtype: DType,
    d: &B::Device,
) -> Tensor<B, 3> {
    if !strided {
        return Tensor::<B, 3>::from_data(TensorData::new(v.to_vec(), [a, b, c]), d).cast(dtype);
    }
    let mut t = vec![0f32; v.len()];
    for i in 0..a {
        for j in 0..b {
            t[(j * a + i) * c..(j * a + i + 1) * c].copy_from_slice(&v[(i * b + j) * c..(i * b + j + 1) * c]);
        }
    }
    Tensor::<B, 3>::from_data(TensorData::new(t, [b, a, c]), d).cast(dtype).swap_dims(0, 1)
}

fn activations<B: RmasBackend>(d: &B::Device) {
    let shapes = [
        ([1, 1, 1], false),
        ([1, 1, 7], false),
        ([3, 5, 7], true),
        ([2, 3, 2731], false),
        ([4, 3, 1500], true),
        ([1, 3, 400_001], false),
    ];
    for dtype in dtypes::<B>(d) {
        let (atol, rtol) = tolerance(dtype, (2e-6, 1e-5));
        for (shape, strided) in shapes {
            let n: usize = shape.iter().product();
            let x = values(n as u64, n, 30.0, dtype);
            let by = values(n as u64 + 1, n, 2.0, dtype);
            for act in [Act::Silu, Act::Sigmoid, Act::GeluTanh] {
                let what = format!("{act:?} {dtype:?} {shape:?} strided={strided}");
                let want = |gate: bool| {
                    let v = x
                        .iter()
                        .zip(&by)
                        .map(|(&x, &b)| (act_f64(act, x as f64) * if gate { b as f64 } else { 1.0 }) as f32);
                    Tensor::<B, 3>::from_data(TensorData::new(v.collect(), shape), d)
                };
                let got = B::activate(tensor::<B>(&x, shape, strided, dtype, d), act, None);
                assert_eq!(got.dtype(), dtype, "{what}: output dtype follows the input");
                assert_close(&what, got.cast(DType::F32), want(false), atol, rtol);
                let by = tensor::<B>(&by, shape, !strided, dtype, d);
                let got = B::activate(tensor::<B>(&x, shape, strided, dtype, d), act, Some(by));
                assert_close(&format!("{what} gated"), got.cast(DType::F32), want(true), atol, rtol);
            }
        }
    }
}

/// The gated MLP product `act(x·W_gᵀ) ⊙ (x·W_vᵀ)` ([`RmasBackend::gated_matmul`]: one kernel for a
/// decode step's rows on wgpu/CUDA) against a float64 loop, at row counts on both sides of the per-row
/// limit and past the kernel's grid; and each row of a [`Rows::PerRow`] call has the bits it has alone.
fn gated_product<B: RmasBackend>(d: &B::Device) {
    let bits = |x: Tensor<B, 2>| {
        x.cast(DType::F32).into_data().to_vec::<f32>().unwrap().into_iter().map(f32::to_bits).collect::<Vec<_>>()
    };
    for dtype in dtypes::<B>(d) {
        let (atol, rtol) = tolerance(dtype, (1e-5, 1e-4));
        for [m, k, n] in [[1, 1, 1], [1, 7, 5], [3, 130, 33], [8, 257, 70], [16, 96, 4100], [20, 64, 9]] {
            let x = values((m * k) as u64, m * k, 1.0, dtype);
            let w = values((n * k) as u64 + 7, 2 * n * k, 1.0, dtype); // [2n, k]: gate rows, then values
            let weight = || {
                let out_in = Tensor::<B, 2>::from_data(TensorData::new(w.clone(), [2 * n, k]), d).cast(dtype);
                if B::WEIGHTS_OUT_IN { out_in } else { Tensor::from_data(out_in.transpose().into_data(), d) }
            };
            let rows_of = |r: std::ops::Range<usize>| {
                Tensor::<B, 2>::from_data(TensorData::new(x[r.start * k..r.end * k].to_vec(), [r.len(), k]), d)
                    .cast(dtype)
            };
            for act in [Act::Silu, Act::GeluTanh] {
                let dot = |i: usize, j: usize| (0..k).map(|c| x[i * k + c] as f64 * w[j * k + c] as f64).sum::<f64>();
                let want: Vec<f32> = (0..m)
                    .flat_map(|i| (0..n).map(move |j| (i, j)))
                    .map(|(i, j)| (act_f64(act, dot(i, j)) * dot(i, n + j)) as f32)
                    .collect();
                let want = Tensor::<B, 2>::from_data(TensorData::new(want, [m, n]), d);
                for rows in [Rows::Sequence, Rows::PerRow] {
                    let what = format!("{act:?} {dtype:?} [{m}, {k}]·[{}, {k}]ᵀ {rows:?}", 2 * n);
                    let got = B::gated_matmul(rows_of(0..m), weight(), act, rows);
                    assert_eq!(got.dtype(), dtype, "{what}: output dtype follows the input");
                    assert_close(&what, got.clone().cast(DType::F32), want.clone(), atol, rtol);
                    if rows == Rows::PerRow {
                        for i in 0..m {
                            let alone = B::gated_matmul(rows_of(i..i + 1), weight(), act, Rows::Sequence);
                            assert_eq!(bits(got.clone().narrow(0, i, 1)), bits(alone), "{what}: row {i} alone");
                        }
                    }
                }
            }
        }
    }
}

fn softmax<B: RmasBackend>(d: &B::Device) {
    // [2, 2100, 3]: more rows than the kernel's cubes, so each cube strides over several.
    let shapes =
        [([1, 1, 1], false), ([2, 3, 5], true), ([2, 33, 513], false), ([3, 4, 130], true), ([2, 2100, 3], false)];
    for dtype in dtypes::<B>(d) {
        let (atol, rtol) = tolerance(dtype, (1e-6, 1e-5));
        for (shape, strided) in shapes {
            let n: usize = shape.iter().product();
            let width = shape[2];
            // Causal-style masks: row r keeps its first (r % width) + 1 entries.
            let x: Vec<f32> = values(n as u64 + 7, n, 20.0, dtype)
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
            let got = B::softmax_last(tensor::<B>(&x, shape, strided, dtype, d));
            assert_eq!(got.dtype(), dtype, "softmax: output dtype follows the input");
            let want = Tensor::<B, 3>::from_data(TensorData::new(want, shape), d);
            assert_close(
                &format!("softmax {dtype:?} {shape:?} strided={strided}"),
                got.cast(DType::F32),
                want,
                atol,
                rtol,
            );
        }
    }
}

/// `[r, c]` values as a `dtype` tensor; `strided` builds it as a `[c, r]` tensor's transposed view.
fn matrix<B: RmasBackend>(v: &[f32], [r, c]: [usize; 2], strided: bool, dtype: DType, d: &B::Device) -> Tensor<B, 2> {
    if !strided {
        return Tensor::<B, 2>::from_data(TensorData::new(v.to_vec(), [r, c]), d).cast(dtype);
    }
    let columns: Vec<f32> = (0..c).flat_map(|j| (0..r).map(move |i| v[i * c + j])).collect();
    Tensor::<B, 2>::from_data(TensorData::new(columns, [c, r]), d).cast(dtype).transpose()
}

/// Qwen3.5's causal depthwise convolution + SiLU and its new state, for `[T, C]` inputs after `K − 1`
/// earlier ones: decode (T = 1), T < K − 1, odd widths, and more elements than the kernel's grid.
fn causal_conv<B: RmasBackend>(d: &B::Device) {
    let cases = [
        (1, 1, 4, false),
        (1, 7, 4, true),
        (2, 5, 4, false),
        (17, 300, 4, true),
        (3, 2731, 2, false),
        (260, 4500, 4, false),
    ];
    for dtype in dtypes::<B>(d) {
        let (atol, rtol) = tolerance(dtype, (2e-6, 1e-5));
        for (t, c, k, strided) in cases {
            let seed = (t * c * k) as u64;
            let (x, state, weight) = (
                values(seed, t * c, 3.0, dtype),
                values(seed + 1, (k - 1) * c, 3.0, dtype),
                values(seed + 2, k * c, 1.0, dtype),
            );
            let window =
                |r: usize| if r < k - 1 { &state[r * c..(r + 1) * c] } else { &x[(r + 1 - k) * c..(r + 2 - k) * c] };
            let mut want = Vec::with_capacity(t * c);
            for i in 0..t {
                want.extend((0..c).map(|ch| {
                    let a: f64 = (0..k).map(|j| weight[j * c + ch] as f64 * window(i + j)[ch] as f64).sum();
                    (a / (1.0 + (-a).exp())) as f32
                }));
            }
            let want_state: Vec<f32> = (t..t + k - 1).flat_map(window).copied().collect();
            let what = format!("causal conv {dtype:?} T={t} C={c} K={k} strided={strided}");
            let (got, got_state) = B::causal_conv_silu(
                matrix::<B>(&x, [t, c], strided, dtype, d),
                matrix::<B>(&state, [k - 1, c], false, dtype, d),
                matrix::<B>(&weight, [k, c], strided, dtype, d),
            );
            assert_eq!(got.dtype(), dtype, "{what}: output dtype follows the input");
            assert_close(&what, got.cast(DType::F32), matrix::<B>(&want, [t, c], false, DType::F32, d), atol, rtol);
            // The state only moves values: exact.
            let want_state = matrix::<B>(&want_state, [k - 1, c], false, DType::F32, d);
            assert_close(&format!("{what} state"), got_state.cast(DType::F32), want_state, 0.0, 0.0);
        }
    }
}

/// RMSNorm over the last axis: rows wider and narrower than the cube, more rows than its grid, strided
/// inputs, and values whose squares would overflow an f16 sum (the norm sums in f32).
fn rms_norm<B: RmasBackend>(d: &B::Device) {
    let shapes =
        [([1, 1, 1], false), ([2, 3, 7], true), ([1, 17, 2049], false), ([3, 4, 130], true), ([2, 2100, 3], false)];
    for dtype in dtypes::<B>(d) {
        let (atol, rtol) = tolerance(dtype, (2e-6, 2e-6));
        for (shape, strided) in shapes {
            let (n, width) = (shape.iter().product::<usize>(), shape[2]);
            let x = values(n as u64 + 11, n, 200.0, dtype);
            let scale = values(width as u64 + 12, width, 0.5, dtype).into_iter().map(|s| 1.0 + s).collect::<Vec<_>>();
            let mut want = Vec::with_capacity(n);
            for row in x.chunks(width) {
                let inv = 1.0 / (row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / width as f64 + 1e-6).sqrt();
                want.extend(row.iter().zip(&scale).map(|(&v, &s)| (v as f64 * inv * s as f64) as f32));
            }
            let scale = Tensor::<B, 1>::from_data(TensorData::new(scale, [width]), d).cast(dtype);
            let got = B::rms_norm(tensor::<B>(&x, shape, strided, dtype, d), scale, 1e-6);
            let what = format!("rms_norm {dtype:?} {shape:?} strided={strided}");
            assert_eq!(got.dtype(), dtype, "{what}: output dtype follows the input");
            assert_close(
                &what,
                got.cast(DType::F32),
                Tensor::<B, 3>::from_data(TensorData::new(want, shape), d),
                atol,
                rtol,
            );
        }
    }
}

/// Causal attention as the model calls it (queries a transposed view, keys and values a narrowed
/// cache) against float64 loops: decode and prefill, after a cache, GQA and MHA, sliding windows
/// narrower and wider than the keys, odd head sizes, more query rows than one CPU block, long
/// decode caches, head sizes past one cube and query groups too wide for the GPU kernel.
fn causal_attention<B: RmasBackend>(d: &B::Device) {
    // (query heads, KV heads, T, L, head dim, window)
    let cases = [
        (1, 1, 1, 1, 1, None),
        (4, 2, 1, 37, 16, None),
        (4, 1, 1, 50, 8, Some(7)),
        (6, 2, 13, 13, 5, None),
        (3, 3, 5, 21, 7, Some(4)),
        (8, 2, 300, 300, 64, None),
        (8, 2, 300, 300, 64, Some(100)),
        (2, 1, 260, 301, 33, Some(512)),
        // Decode over long caches (keys split over cubes), head dims past one cube, wide groups.
        (4, 2, 1, 700, 16, None),
        (8, 2, 3, 1200, 256, None),
        (4, 1, 1, 2000, 8, Some(900)),
        (16, 2, 2, 40, 130, Some(9)),
        (32, 1, 1, 9, 256, None),
    ];
    for dtype in dtypes::<B>(d) {
        let (atol, rtol) = tolerance(dtype, (2e-5, 1e-4));
        for (nh, nkv, t, l, hd, window) in cases {
            let what = format!("{dtype:?} heads {nh}/{nkv} T {t} L {l} hd {hd} window {window:?}");
            let cap = l + 3; // the cache is longer than its filled part
            let q = values(1, t * nh * hd, 1.0, dtype); // [T, nh, hd]
            let [k, v] = [2, 3].map(|seed| values(seed, nkv * cap * hd, 1.0, dtype)); // [nkv, cap, hd]
            let scale = 1.0 / (hd as f64).sqrt();
            let mut want = vec![0f32; nh * t * hd];
            for h in 0..nh {
                let g = h / (nh / nkv);
                for i in 0..t {
                    let p = l - t + i;
                    let lo = window.map_or(0, |w| (p + 1).saturating_sub(w));
                    let qi = &q[(i * nh + h) * hd..(i * nh + h + 1) * hd];
                    let row = |x: &[f32], j: usize| {
                        x[(g * cap + j) * hd..(g * cap + j + 1) * hd].iter().map(|&x| x as f64).collect::<Vec<_>>()
                    };
                    let s: Vec<f64> = (lo..=p)
                        .map(|j| scale * row(&k, j).iter().zip(qi).map(|(k, &q)| k * q as f64).sum::<f64>())
                        .collect();
                    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|s| (s - max).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in 0..hd {
                        let o: f64 = (lo..=p).zip(&e).map(|(j, e)| e / z * v[(g * cap + j) * hd + c] as f64).sum();
                        want[(h * t + i) * hd + c] = o as f32;
                    }
                }
            }
            let q = Tensor::<B, 3>::from_data(TensorData::new(q, [t, nh, hd]), d).cast(dtype).swap_dims(0, 1);
            // The whole cache goes in; only its first `l` rows may be read.
            let [k, v] = [k, v].map(|x| Tensor::<B, 3>::from_data(TensorData::new(x, [nkv, cap, hd]), d).cast(dtype));
            let got = B::causal_attention(q, k, v, l, scale, window);
            assert_eq!(got.dtype(), dtype, "{what}: output dtype follows the input");
            assert_close(
                &what,
                got.cast(DType::F32),
                Tensor::<B, 3>::from_data(TensorData::new(want, [nh, t, hd]), d),
                atol,
                rtol,
            );
        }
    }
}

/// The residual add fused with RMSNorm: the sum and its norm against float64 loops, with the branch
/// contiguous or a transposed view.
fn add_rms_norm<B: RmasBackend>(d: &B::Device) {
    let shapes = [([1, 1], false), ([1, 2049], false), ([7, 130], true), ([2100, 3], true), ([5000, 8], false)];
    for dtype in dtypes::<B>(d) {
        let (atol, rtol) = tolerance(dtype, (2e-6, 2e-6));
        for ([rows, width], strided) in shapes {
            let n = rows * width;
            let x = values(n as u64 + 21, n, 50.0, dtype);
            let y = values(n as u64 + 22, n, 50.0, dtype);
            let scale = values(width as u64 + 23, width, 0.5, dtype).into_iter().map(|s| 1.0 + s).collect::<Vec<_>>();
            let (mut want_sum, mut want_norm) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for (xr, yr) in x.chunks(width).zip(y.chunks(width)) {
                let sum: Vec<f64> = xr.iter().zip(yr).map(|(&a, &b)| a as f64 + b as f64).collect();
                let inv = 1.0 / (sum.iter().map(|v| v * v).sum::<f64>() / width as f64 + 1e-6).sqrt();
                want_norm.extend(sum.iter().zip(&scale).map(|(v, &s)| (v * inv * s as f64) as f32));
                want_sum.extend(sum.iter().map(|&v| v as f32));
            }
            let x_t = matrix::<B>(&x, [rows, width], false, dtype, d);
            let y_t = matrix::<B>(&y, [rows, width], strided, dtype, d);
            let scale = Tensor::<B, 1>::from_data(TensorData::new(scale, [width]), d).cast(dtype);
            let (sum, normed) = B::add_rms_norm(x_t, y_t, scale, 1e-6);
            let what = format!("add_rms_norm {dtype:?} [{rows}, {width}] strided={strided}");
            let want = |v: Vec<f32>| Tensor::<B, 2>::from_data(TensorData::new(v, [rows, width]), d);
            assert_close(&format!("{what}: sum"), sum.cast(DType::F32), want(want_sum), atol, rtol);
            assert_close(&format!("{what}: normed"), normed.cast(DType::F32), want(want_norm), atol, rtol);
        }
    }
}

/// One case of the rotary kernels: heads sliced out of a wider projection, their tables and norm
/// scale, and the float64 result.
struct RopeCase {
    /// (T, heads, width, head_dim, rot, norm), as in [`ROPE_CASES`].
    case: (usize, usize, usize, usize, usize, bool),
    dtype: DType,
    /// `[T, heads + 2, width]`; the heads are slots `1..=heads`.
    all: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    scale: Vec<f32>,
    /// `[heads, T, head_dim]`.
    want: Vec<f32>,
}

impl RopeCase {
    fn new(case: (usize, usize, usize, usize, usize, bool), dtype: DType) -> Self {
        let (t, heads, width, hd, rot, norm) = case;
        let slots = heads + 2;
        let n = t * slots * width;
        let all = values(n as u64 + 31, n, 3.0, dtype);
        let cos = values(t as u64 + 32, t * rot, 1.0, DType::F32);
        let sin = values(t as u64 + 33, t * rot, 1.0, DType::F32);
        let scale = values(hd as u64 + 34, hd, 0.5, dtype).into_iter().map(|s| 1.0 + s).collect::<Vec<_>>();
        let half = rot / 2;
        let mut want = vec![0f32; heads * t * hd];
        for p in 0..t {
            for h in 0..heads {
                let row = &all[(p * slots + h + 1) * width..][..hd];
                let inv = match norm {
                    true => 1.0 / (row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / hd as f64 + 1e-6).sqrt(),
                    false => 1.0,
                };
                let y = |j: usize| row[j] as f64 * inv * if norm { scale[j] as f64 } else { 1.0 };
                for j in 0..hd {
                    let out = match j < rot {
                        true => {
                            let rotated = if j < half { -y(j + half) } else { y(j - half) };
                            y(j) * cos[p * rot + j] as f64 + rotated * sin[p * rot + j] as f64
                        }
                        false => y(j),
                    };
                    want[(h * t + p) * hd + j] = out as f32;
                }
            }
        }
        Self { case, dtype, all, cos, sin, scale, want }
    }

    /// The heads `[T, heads, width]` (a view with an offset and strides), the norm and the tables.
    #[allow(clippy::type_complexity)]
    fn inputs<B: RmasBackend>(
        &self,
        d: &B::Device,
    ) -> (Tensor<B, 3>, Option<(Tensor<B, 1>, f64)>, (Tensor<B, 2>, Tensor<B, 2>)) {
        let ((t, heads, width, _, rot, norm), dtype) = (self.case, self.dtype);
        let all = TensorData::new(self.all.clone(), [t, heads + 2, width]);
        let x = Tensor::<B, 3>::from_data(all, d).cast(dtype).narrow(1, 1, heads);
        let table = |v: &[f32]| Tensor::<B, 2>::from_data(TensorData::new(v.to_vec(), [t, rot]), d);
        let scale = Tensor::<B, 1>::from_data(TensorData::new(self.scale.clone(), [self.scale.len()]), d);
        (x, norm.then_some((scale, 1e-6)), (table(&self.cos), table(&self.sin)))
    }
}

/// (T, heads, width, head_dim, rot, norm) of the rotary tests: decode and prefill, partial and full
/// rotary widths, heads wider than `head_dim` (only the first features are used), with and
/// without the norm, and past the kernel's grid.
const ROPE_CASES: [(usize, usize, usize, usize, usize, bool); 6] = [
    (1, 1, 2, 2, 2, false),
    (1, 4, 64, 64, 16, true),
    (3, 2, 10, 6, 4, true),
    (5, 3, 8, 8, 8, false),
    (300, 8, 64, 64, 16, true),
    (1100, 4, 32, 32, 8, true),
];

/// Per-head RMSNorm + rotate-half RoPE + head-major transpose against float64 loops, on heads
/// sliced out of a wider tensor (offset and strides, as the model's fused projection gives them).
fn rope_heads<B: RmasBackend>(d: &B::Device) {
    for dtype in dtypes::<B>(d) {
        let (atol, rtol) = tolerance(dtype, (5e-6, 5e-6));
        for case in ROPE_CASES {
            let (t, heads, width, hd, rot, norm) = case;
            let c = RopeCase::new(case, dtype);
            let (x, norm_args, (cos, sin)) = c.inputs::<B>(d);
            let got = B::rope_heads(x, hd, norm_args, cos, sin);
            let what = format!("rope_heads {dtype:?} T={t} heads={heads} width={width} hd={hd} rot={rot} norm={norm}");
            assert_eq!(got.dtype(), dtype, "{what}: output dtype follows the input");
            let want = Tensor::<B, 3>::from_data(TensorData::new(c.want, [heads, t, hd]), d);
            assert_close(&what, got.cast(DType::F32), want, atol, rtol);
        }
    }
}

/// Keys normed and rotated into a KV cache with the values beside them, at an offset: the written
/// rows against float64 loops (values exactly), every other row untouched, and a cache whose buffer
/// another tensor shares left as it was in that tensor (written into a copy, not through the view).
fn append_kv<B: RmasBackend>(d: &B::Device) {
    for dtype in dtypes::<B>(d) {
        let (atol, rtol) = tolerance(dtype, (5e-6, 5e-6));
        for (case, (at, shared)) in
            ROPE_CASES.into_iter().zip([(0, false), (5, true), (2, false), (7, true), (0, true), (3, false)])
        {
            let (t, heads, _, hd, rot, norm) = case;
            let c = RopeCase::new(case, dtype);
            let (k, norm_args, table) = c.inputs::<B>(d);
            let capacity = at + t + 3;
            let cache_values = |seed| values(seed, heads * capacity * hd, 2.0, dtype);
            let (k_before, v_before) = (cache_values(41), cache_values(42));
            let cache = |v: &[f32]| {
                Tensor::<B, 3>::from_data(TensorData::new(v.to_vec(), [heads, capacity, hd]), d).cast(dtype)
            };
            let (k_cache, v_cache) = (cache(&k_before), cache(&v_before));
            let kept = shared.then(|| (k_cache.clone(), v_cache.clone()));
            // The values as the projection gives them: [T, heads, hd] sliced out of [T, heads + 1, hd].
            let v_all = values(43, t * (heads + 1) * hd, 2.0, dtype);
            let v = Tensor::<B, 3>::from_data(TensorData::new(v_all.clone(), [t, heads + 1, hd]), d)
                .cast(dtype)
                .narrow(1, 1, heads);
            let (k_cache, v_cache) = B::append_kv((k_cache, v_cache), k, v, norm_args, table, at);
            let what = format!(
                "append_kv {dtype:?} T={t} heads={heads} hd={hd} rot={rot} norm={norm} at={at} shared={shared}"
            );
            let host = |x: Tensor<B, 3>| x.cast(DType::F32).into_data().to_vec::<f32>().unwrap();
            let (got_k, got_v) = (host(k_cache), host(v_cache));
            let (mut want_k, mut want_v) = (k_before.clone(), v_before.clone());
            for h in 0..heads {
                for p in 0..t {
                    let row = (h * capacity + at + p) * hd;
                    want_k[row..row + hd].copy_from_slice(&c.want[(h * t + p) * hd..][..hd]);
                    want_v[row..row + hd].copy_from_slice(&v_all[(p * (heads + 1) + h + 1) * hd..][..hd]);
                }
            }
            assert_eq!(got_v, want_v, "{what}: values");
            let written = |i: usize| (at..at + t).contains(&(i / hd % capacity));
            for (i, (&g, &w)) in got_k.iter().zip(&want_k).enumerate() {
                let close = (g - w).abs() <= atol + rtol * w.abs();
                assert!(if written(i) { close } else { g.to_bits() == w.to_bits() }, "{what}: key {i}: {g} vs {w}");
            }
            if let Some((k, v)) = kept {
                assert_eq!((host(k), host(v)), (k_before, v_before), "{what}: the shared cache changed");
            }
        }
    }
}

/// Attention of a sequence's raw queries in one call ([`RmasBackend::attend`]: one kernel on cubecl
/// backends, which norms and rotates the queries as it loads them and gates the output as it writes
/// it) gives the bits of the three calls it replaces ([`rmas_kernels::attn::attend`]: the rotation,
/// attention, the gate): queries and gate sliced out of a wider projection, decode and short chunks,
/// GQA, partial rotary widths, with and without the norm and the gate, windows, heads wider than
/// the cube, decode over caches long enough to split the keys over cubes, and a prefill (which
/// takes the composition), in f32 and, where the device has it, f16.
fn attend<B: RmasBackend>(d: &B::Device) {
    use rmas_kernels::attn::Queries;
    // (query heads, KV heads, T, keys, head dim, rot, norm, gate, window)
    let cases = [
        (4, 2, 1, 37, 16, 8, true, true, None),
        (4, 1, 1, 700, 8, 8, false, true, None),
        (8, 2, 3, 40, 64, 16, true, true, Some(9)),
        (2, 2, 5, 5, 130, 130, true, false, None),
        (16, 2, 1, 1200, 32, 32, true, true, Some(900)),
        (6, 3, 2, 9, 6, 4, false, false, None),
        (4, 2, 40, 40, 16, 8, true, true, None),
    ];
    let bits = |x: Tensor<B, 3>| x.cast(DType::F32).into_data().to_vec::<f32>().unwrap();
    for dtype in dtypes::<B>(d) {
        for (nh, nkv, t, keys, hd, rot, norm, gated, window) in cases {
            let what = format!(
                "{dtype:?} heads {nh}/{nkv} T {t} keys {keys} hd {hd} rot {rot} norm {norm} gate {gated} window {window:?}"
            );
            // The projection `[T, 2·nh + 1, hd]`: queries, then gates, then a slot that is neither.
            let slots = 2 * nh + 1;
            let all = values(t as u64 + 61, t * slots * hd, 3.0, dtype);
            let all = Tensor::<B, 3>::from_data(TensorData::new(all, [t, slots, hd]), d).cast(dtype);
            let cap = keys + 3; // the cache is longer than its filled part
            let [k, v] = [62, 63].map(|seed| {
                let x = values(seed, nkv * cap * hd, 1.0, dtype);
                Tensor::<B, 3>::from_data(TensorData::new(x, [nkv, cap, hd]), d).cast(dtype)
            });
            let table =
                |seed| Tensor::<B, 2>::from_data(TensorData::new(values(seed, t * rot, 1.0, DType::F32), [t, rot]), d);
            let scale = values(hd as u64 + 64, hd, 0.5, DType::F32).into_iter().map(|s| 1.0 + s).collect::<Vec<_>>();
            let scale = Tensor::<B, 1>::from_data(TensorData::new(scale, [hd]), d);
            let queries = || Queries {
                q: all.clone().narrow(1, 0, nh),
                norm: norm.then(|| (scale.clone(), 1e-6)),
                cos: table(65),
                sin: table(66),
                gate: gated.then(|| all.clone().narrow(1, nh, nh)),
            };
            let attn_scale = 1.0 / (hd as f64).sqrt();
            let got = B::attend(queries(), k.clone(), v.clone(), keys, attn_scale, window, None);
            let want = rmas_kernels::attn::attend::<B>(queries(), k.clone(), v.clone(), keys, attn_scale, window);
            assert_eq!((got.dims(), got.dtype()), ([t, nh, hd], dtype), "{what}: shape and dtype");
            let want = bits(want);
            assert_eq!(bits(got), want, "{what}");
            // Written into rows 2.. of a pack of three sequences' outputs: those rows, nothing else.
            let [rows, at] = [t + 5, 2];
            let pack = values(t as u64 + 67, rows * nh * hd, 1.0, dtype);
            let pack = Tensor::<B, 3>::from_data(TensorData::new(pack, [rows, nh, hd]), d).cast(dtype);
            let original = bits(pack.clone());
            let mut expected = original.clone();
            expected[at * nh * hd..(at + t) * nh * hd].copy_from_slice(&want);
            let kept = (t % 2 == 1).then(|| pack.clone()); // a pack that shares its buffer is copied first
            let into = rmas_kernels::PackedOut { pack, at };
            let got = B::attend(queries(), k.clone(), v.clone(), keys, attn_scale, window, Some(into));
            assert_eq!(bits(got), expected, "{what}: into rows {at}.. of a pack");
            if let Some(kept) = kept {
                assert_eq!(bits(kept), original, "{what}: the shared pack changed");
            }
        }
    }
}

/// The CPU's one-pass rotations compute what the reference composition of tensor ops computes, op
/// for op: the same bits, so that moving the CPU onto them changed no model's output.
#[test]
fn cpu_rotations_match_the_reference_bit_for_bit() {
    type B = burn::backend::NdArray;
    let d = Default::default();
    let bits =
        |x: Tensor<B, 3>| x.into_data().to_vec::<f32>().unwrap().into_iter().map(f32::to_bits).collect::<Vec<_>>();
    for case in ROPE_CASES {
        let (t, heads, _, hd, _, _) = case;
        let c = RopeCase::new(case, DType::F32);
        let what = format!("{case:?}");
        let (x, norm, (cos, sin)) = c.inputs::<B>(&d);
        let reference = rmas_kernels::rope::reference(x.clone(), hd, norm.clone(), cos.clone(), sin.clone());
        assert_eq!(bits(B::rope_heads(x, hd, norm, cos, sin)), bits(reference), "rope_heads {what}");
        let (k, norm, table) = c.inputs::<B>(&d);
        let v = k.clone().narrow(2, 0, hd) * 0.5;
        let at = t % 5;
        let caches = || {
            let cache = |seed| values(seed, heads * (at + t + 2) * hd, 2.0, DType::F32);
            let tensor = |v: Vec<f32>| Tensor::<B, 3>::from_data(TensorData::new(v, [heads, at + t + 2, hd]), &d);
            (tensor(cache(51)), tensor(cache(52)))
        };
        let (got_k, got_v) = B::append_kv(caches(), k.clone(), v.clone(), norm.clone(), table.clone(), at);
        let (want_k, want_v) = rmas_kernels::rope::append_kv(caches(), k, v, norm, table, at);
        assert_eq!((bits(got_k), bits(got_v)), (bits(want_k), bits(want_v)), "append_kv {what}");
    }
}

rmas_suite::backend_tests! {
    add_rms_norm_matches_f64 => add_rms_norm,
    rope_heads_matches_f64 => rope_heads,
    append_kv_matches_f64 => append_kv,
    causal_attention_matches_f64 => causal_attention,
    attend_is_rotation_then_attention_then_gate => attend,
    rms_norm_matches_f64 => rms_norm,
    activations_match_f64 => activations,
    gated_product_matches_f64 => gated_product,
    softmax_matches_f64 => softmax,
    causal_conv_matches_f64 => causal_conv,
}
