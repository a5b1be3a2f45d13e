//! CPU (ndarray) bodies of the custom operations.
//!
//! Weight products avoid the copies of burn-ndarray's generic matmul, which reshapes (copies) both
//! operands and, through its GEMM, packs the weight even for one row: a decode step read every weight
//! about five times. Here a few rows stream the weight once (split over the output columns on the
//! thread pool); more rows run one GEMM on views. Every product runs on rayon's pool (the `gemm`
//! crate), the pool of all other bodies here: burn-ndarray's GEMM brings its own threads, which
//! competed with rayon's for the cores (a fifth of attention's time went to the scheduler).
//!
//! Attention runs by query blocks in parallel, each over the keys it may see: no score tensor or mask
//! of the whole sequence, and the keys past a block's last query never touched.
//!
//! Activations (times a gate), softmax, RMSNorm and the GDN convolution take one pass instead of
//! burn's several. The gated delta rule runs its exact recurrence per value head on the thread pool,
//! the state row by row in cache: fewer operations than the chunked tensor form (whose `(I − A)⁻¹`
//! alone costs six 64×64×64 products per chunk) and no intermediate tensors.

use burn::backend::NdArray;
use burn::tensor::{DType, Tensor, TensorPrimitive};
use burn_ndarray::NdArrayTensor;
use gemm::Parallelism;
use ndarray::{ArcArray, Array2, ArrayView2, ArrayViewMut2, Ix2, Ix3, IxDyn, s};
use rayon::prelude::*;

use crate::{Act, DeltaRule, GatedNorm};

/// Up to this many rows stream the weight once per row instead of packing it for a GEMM.
const STREAM_ROWS: usize = 4;
/// Elements per task of an elementwise pass.
const ELEMENTWISE_CHUNK: usize = 1 << 14;
/// Fewest output columns a thread takes.
const MIN_COLUMNS: usize = 256;
/// Query rows (positions × the heads of one KV group) per block of [`causal_attention`].
const ATTENTION_ROWS: usize = 128;

/// `x·w` for `x` `[M, K]` and `w` `[K, N]` (a linear layer's weight stored `[in, out]`).
pub fn linear(x: Tensor<NdArray, 2>, w: Tensor<NdArray, 2>) -> Tensor<NdArray, 2> {
    product(x, w, Layout::InOut)
}

/// `h·mᵀ` for `h` `[T, H]` and `m` `[V, H]` (a vocabulary matrix).
pub fn logits(h: Tensor<NdArray, 2>, m: Tensor<NdArray, 2>) -> Tensor<NdArray, 2> {
    product(h, m, Layout::OutIn)
}

/// How the weight's rows are laid out.
#[derive(Clone, Copy)]
enum Layout {
    /// `[K, N]`: one row per input feature.
    InOut,
    /// `[N, K]`: one row per output.
    OutIn,
}

fn product(x: Tensor<NdArray, 2>, w: Tensor<NdArray, 2>, layout: Layout) -> Tensor<NdArray, 2> {
    let (x, w) = match (f32_array(x), f32_array(w)) {
        (Ok(x), Ok(w)) => (x, w),
        (x, w) => {
            let (x, w) = (tensor(x), tensor(w));
            return match layout {
                Layout::InOut => x.matmul(w),
                Layout::OutIn => x.matmul(w.transpose()),
            };
        }
    };
    let x = x.view().into_dimensionality::<Ix2>().expect("rank-2 tensor");
    let w = w.view().into_dimensionality::<Ix2>().expect("rank-2 tensor");
    let w = match layout {
        Layout::InOut => w,
        Layout::OutIn => w.reversed_axes(),
    }; // [K, N] view
    assert_eq!(x.ncols(), w.nrows(), "matmul of [{}, {}] by [{}, {}]", x.nrows(), x.ncols(), w.nrows(), w.ncols());
    let mut out = Array2::<f32>::zeros((x.nrows(), w.ncols()));
    if x.nrows() <= STREAM_ROWS {
        if let Some(rows) = w.as_slice() {
            stream(x, rows, Layout::InOut, &mut out);
            return tensor(Ok(out.into_dyn().into_shared()));
        }
        if let Some(rows) = w.t().as_slice() {
            stream(x, rows, Layout::OutIn, &mut out);
            return tensor(Ok(out.into_dyn().into_shared()));
        }
    }
    matmul(1.0, x, w, out.view_mut(), Parallelism::Rayon(0));
    tensor(Ok(out.into_dyn().into_shared()))
}

/// `out = alpha·a·b` for strided f32 views.
fn matmul(alpha: f32, a: ArrayView2<f32>, b: ArrayView2<f32>, mut out: ArrayViewMut2<f32>, parallelism: Parallelism) {
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    assert!(b.nrows() == k && out.dim() == (m, n), "matmul of [{m}, {k}] by {:?} into {:?}", b.dim(), out.dim());
    let ([ars, acs], [brs, bcs], [ors, ocs]) = (stride2(a.strides()), stride2(b.strides()), stride2(out.strides()));
    // SAFETY: the pointers and strides describe the three views, which outlive the call; `out` is
    // borrowed mutably and overwritten without being read (`read_dst` false).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            ocs,
            ors,
            false,
            a.as_ptr(),
            acs,
            ars,
            b.as_ptr(),
            bcs,
            brs,
            0.0,
            alpha,
            false,
            false,
            false,
            parallelism,
        )
    }
}

fn stride2(s: &[isize]) -> [isize; 2] {
    [s[0], s[1]]
}

/// `out[i, :] = x[i, :]·W` reading the row-major weight `rows` once per row of `x`.
fn stream(x: ArrayView2<f32>, rows: &[f32], layout: Layout, out: &mut Array2<f32>) {
    let (k, n) = (x.ncols(), out.ncols());
    let per_thread = n.div_ceil(rayon::current_num_threads()).max(MIN_COLUMNS);
    for (xi, mut yi) in x.rows().into_iter().zip(out.rows_mut()) {
        let xi: Vec<f32> = xi.iter().copied().collect();
        let yi = yi.as_slice_mut().expect("fresh output rows are contiguous");
        yi.par_chunks_mut(per_thread).enumerate().for_each(|(c, y)| {
            let c0 = c * per_thread;
            match layout {
                // y += x_k · W[k, c0..]: axpy over the rows of W.
                Layout::InOut => {
                    for (kk, &xk) in xi.iter().enumerate() {
                        let w = &rows[kk * n + c0..kk * n + c0 + y.len()];
                        y.iter_mut().zip(w).for_each(|(y, w)| *y += xk * w);
                    }
                }
                // y_j = x·W[j, :]: one dot product per output row of W.
                Layout::OutIn => {
                    for (j, y) in y.iter_mut().enumerate() {
                        *y = dot(&xi, &rows[(c0 + j) * k..(c0 + j + 1) * k]);
                    }
                }
            }
        });
    }
}

/// `a·b` with eight partial sums (so the compiler vectorises it; inlined into the AVX2 builds).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    let mut acc = [0f32; 8];
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `act(x)·by` in one parallel pass over f32 arrays of equal shapes (burn's sigmoid takes five),
/// in place when `x` is not shared.
pub fn activate<const D: usize>(x: Tensor<NdArray, D>, act: Act, by: Option<Tensor<NdArray, D>>) -> Tensor<NdArray, D> {
    if by.as_ref().is_some_and(|b| b.dims() != x.dims()) || x.dtype() != DType::F32 {
        return crate::act::reference(x, act, by);
    }
    let mut x = standard(x);
    let by = by.map(standard);
    let by = by.as_ref().map(values);
    let values = x.as_slice_mut().expect("standard layout");
    values.par_chunks_mut(ELEMENTWISE_CHUNK).enumerate().for_each(|(c, chunk)| {
        let start = c * ELEMENTWISE_CHUNK;
        wide(|| act.apply(chunk, by.map(|b| &b[start..start + chunk.len()])));
    });
    tensor(Ok(x))
}

/// [`crate::attn::reference`] by blocks of queries (all heads of one KV group, about
/// [`ATTENTION_ROWS`] rows): one product with the keys the block can see, the masked softmax per
/// row, one product with the values. The keys after a block's last query are never touched, nor
/// any score tensor or mask of the whole sequence built.
pub fn causal_attention(
    q: Tensor<NdArray, 3>,
    k: Tensor<NdArray, 3>,
    v: Tensor<NdArray, 3>,
    scale: f64,
    window: Option<usize>,
) -> Tensor<NdArray, 3> {
    if [&q, &k, &v].iter().any(|t| t.dtype() != DType::F32) {
        return crate::attn::reference(q, k, v, scale, window);
    }
    let ([nh, t, hd], [nkv, l, _]) = (q.dims(), k.dims());
    assert!(l >= t && nh % nkv == 0, "attention of {t} queries × {nh} heads over {l} keys × {nkv} heads");
    let rep = nh / nkv;
    let q = standard(q);
    let q = values(&q);
    // The cache's views as they are (each head's keys are contiguous rows).
    let [k, v] = [k, v].map(|x| f32_array(x).unwrap_or_else(|_| unreachable!("f32 checked above")));
    let [k, v] = [&k, &v].map(|x| x.view().into_dimensionality::<Ix3>().expect("rank-3 tensor"));
    let rows = (ATTENTION_ROWS / rep).clamp(1, t.max(1)); // query positions per block
    // Where block row `r·n + i` of the block (g, i0) with n positions lives in `[nh, T, hd]`: query
    // head g·rep + r at position i0 + i.
    let at = |g: usize, i0: usize, n: usize, row: usize| ((g * rep + row / n) * t + i0 + row % n) * hd;
    // Blocks (KV head, first position), the longest (latest) first for the pool's balance.
    let blocks: Vec<(usize, usize)> =
        (0..t).step_by(rows).rev().flat_map(|i0| (0..nkv).map(move |g| (g, i0))).collect();
    let outs: Vec<Array2<f32>> = blocks
        .par_iter()
        .map(|&(g, i0)| {
            let n = rows.min(t - i0);
            let (lo, hi) = (crate::attn::first_key(i0, t, l, window), l - t + i0 + n); // keys of the block
            let width = hi - lo;
            let qb = Array2::from_shape_fn((rep * n, hd), |(row, d)| q[at(g, i0, n, row) + d]);
            let mut sc = Array2::<f32>::zeros((rep * n, width));
            let (kg, vg) = (k.slice(s![g, lo..hi, ..]), v.slice(s![g, lo..hi, ..])); // [width, hd]
            matmul(scale as f32, qb.view(), kg.t(), sc.view_mut(), Parallelism::None);
            for (row, mut p) in sc.rows_mut().into_iter().enumerate() {
                let i = i0 + row % n;
                let (a, b) = (crate::attn::first_key(i, t, l, window) - lo, l - t + i + 1 - lo); // visible keys
                let p = p.as_slice_mut().expect("contiguous scores");
                wide(|| {
                    softmax_row(&mut p[a..b]);
                    p[..a].fill(0.0);
                    p[b..].fill(0.0);
                })
            }
            let mut ob = Array2::<f32>::zeros((rep * n, hd));
            matmul(1.0, sc.view(), vg, ob.view_mut(), Parallelism::None);
            ob
        })
        .collect();
    let mut out = vec![0f32; nh * t * hd];
    for (&(g, i0), ob) in blocks.iter().zip(&outs) {
        let n = rows.min(t - i0);
        for (row, src) in ob.rows().into_iter().enumerate() {
            let dst = at(g, i0, n, row);
            out[dst..dst + hd].iter_mut().zip(src).for_each(|(o, x)| *o = *x);
        }
    }
    from_vec(out, [nh, t, hd])
}

/// Softmax over the last axis in one pass per row group, with the vectorising `exp`.
pub fn softmax<const D: usize>(x: Tensor<NdArray, D>) -> Tensor<NdArray, D> {
    if x.dtype() != DType::F32 {
        return burn::tensor::activation::softmax(x, D - 1);
    }
    let width = x.dims()[D - 1];
    let mut x = standard(x);
    x.as_slice_mut()
        .expect("standard layout")
        .par_chunks_mut(width)
        .with_min_len(16)
        .for_each(|row| wide(|| softmax_row(row)));
    tensor(Ok(x))
}

/// Softmax of one row in place (inlined into [`wide`]'s callers).
#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    row.iter_mut().for_each(|x| *x = crate::act::exp(*x - max));
    let scale = 1.0 / row.iter().sum::<f32>();
    row.iter_mut().for_each(|x| *x *= scale);
}

/// [`crate::norm::rms_norm`] in one pass per row, in place when `x` is not shared.
pub fn rms_norm<const D: usize>(x: Tensor<NdArray, D>, scale: Tensor<NdArray, 1>, eps: f64) -> Tensor<NdArray, D> {
    if x.dtype() != DType::F32 {
        return crate::norm::rms_norm(x, scale, eps);
    }
    let width = x.dims()[D - 1];
    let scale = standard(scale);
    let scale = values(&scale);
    let mut x = standard(x);
    x.as_slice_mut().expect("standard layout").par_chunks_mut(width.max(1)).with_min_len(16).for_each(|row| {
        wide(|| {
            let inv = 1.0 / (dot(row, row) / width as f32 + eps as f32).sqrt();
            row.iter_mut().zip(scale).for_each(|(v, s)| *v = *v * inv * s);
        })
    });
    tensor(Ok(x))
}

/// [`crate::conv::causal_conv_silu`] in one parallel pass over the output rows.
pub fn causal_conv_silu(
    x: Tensor<NdArray, 2>,
    state: Tensor<NdArray, 2>,
    weight: Tensor<NdArray, 2>,
) -> (Tensor<NdArray, 2>, Tensor<NdArray, 2>) {
    if [&x, &state, &weight].iter().any(|t| t.dtype() != DType::F32) {
        return crate::conv::causal_conv_silu(x, state, weight);
    }
    let ([t, c], [lag, _]) = (x.dims(), state.dims());
    let [x, state, weight] = [x, state, weight].map(standard);
    let (x, state, weight) = (values(&x), values(&state), values(&weight));
    // Row r of the window [state ‖ x].
    let window = |r: usize| if r < lag { &state[r * c..(r + 1) * c] } else { &x[(r - lag) * c..(r - lag + 1) * c] };
    let mut out = vec![0f32; t * c];
    out.par_chunks_mut(c.max(1)).enumerate().for_each(|(i, row)| {
        wide(|| {
            for (j, w) in weight.chunks_exact(c).enumerate() {
                row.iter_mut().zip(window(i + j)).zip(w).for_each(|((o, x), w)| *o += x * w);
            }
            Act::Silu.apply(row, None);
        })
    });
    let new_state = (t..t + lag).flat_map(window).copied().collect();
    (from_vec(out, [t, c]), from_vec(new_state, [lag, c]))
}

/// The gated delta rule and norm of [`crate::RmasBackend::gated_delta_rule`] by the recurrence, one
/// value head per task.
pub fn gated_delta_rule(
    x: DeltaRule<NdArray>,
    norm: Option<GatedNorm<NdArray>>,
) -> (Tensor<NdArray, 3>, Tensor<NdArray, 3>) {
    let dtype = x.qkv.dtype();
    let [nk, nv, dk, dv] = x.heads();
    let [t_len, width] = x.qkv.dims();
    let (rep, q_scale) = (nv / nk, (dk as f32).powf(-0.5));
    let qkv = standard(x.qkv);
    let gates = [standard(x.ab), standard(x.decay)];
    let (qkv, [ab, params]) = (values(&qkv), gates.each_ref().map(values));
    let norm = norm.map(|n| ([n.z, n.weight.unsqueeze()].map(standard), n.eps as f32));
    let norm = norm.as_ref().map(|(zw, eps)| (zw.each_ref().map(values), *eps));
    let mut s = values(&standard(x.state)).to_vec();
    // Each head's outputs `[T, dv]`; interleaved into `[T, nv, dv]` below.
    let mut per_head = vec![0f32; nv * t_len * dv];
    per_head.par_chunks_mut(t_len * dv).zip(s.par_chunks_mut(dk * dv)).enumerate().for_each(|(h, (o, s))| {
        wide(|| {
            // 1/‖x‖ as the l2 norm of q and k computes it.
            fn inv_norm(x: &[f32]) -> f32 {
                1.0 / (dot(x, x) + crate::gdn::L2_EPS as f32).sqrt()
            }
            let kh = h / rep;
            let (mut kv, mut delta) = (vec![0f32; dv], vec![0f32; dv]);
            for t in 0..t_len {
                let row = &qkv[t * width..(t + 1) * width]; // [q ‖ k ‖ v] of token t
                let qt = &row[kh * dk..(kh + 1) * dk];
                let kt = &row[(nk + kh) * dk..(nk + kh + 1) * dk];
                let vt = &row[2 * nk * dk + h * dv..2 * nk * dk + (h + 1) * dv];
                // The raw k and q, with their norms applied to the scalars they produce.
                let (k_scale, q_scale) = (inv_norm(kt), q_scale * inv_norm(qt));
                // exp(g) and β from the raw gates (see `gdn::gates`).
                let a = ab[h * t_len + t] + params[h];
                let decay = (params[nv + h] * (a.max(0.0) + (-a.abs()).exp().ln_1p())).exp();
                let b = 1.0 / (1.0 + (-ab[(nv + h) * t_len + t]).exp());
                // kᵀS with the old state; the decayed state gives decay·kᵀS.
                kv.fill(0.0);
                for (ki, row) in kt.iter().zip(s.chunks_exact(dv)) {
                    kv.iter_mut().zip(row).for_each(|(a, r)| *a += ki * r);
                }
                let (kv_scale, write) = (decay * k_scale, b * k_scale);
                delta.iter_mut().zip(vt).zip(&kv).for_each(|((d, v), kv)| *d = (v - kv_scale * kv) * write);
                // S ← decay·S + k ⊗ δ and o = qᵀS in one pass over the rows of S.
                let ot = &mut o[t * dv..(t + 1) * dv];
                for ((ki, qi), row) in kt.iter().zip(qt).zip(s.chunks_exact_mut(dv)) {
                    for ((r, d), o) in row.iter_mut().zip(&delta).zip(ot.iter_mut()) {
                        *r = decay * *r + ki * d;
                        *o += qi * *r;
                    }
                }
                ot.iter_mut().for_each(|o| *o *= q_scale);
                if let Some(([z, w], eps)) = norm {
                    // w · o / rms(o) · silu(z), with `delta` as scratch.
                    let scale = 1.0 / (dot(ot, ot) / dv as f32 + eps).sqrt();
                    ot.iter_mut().zip(w).for_each(|(o, w)| *o *= scale * w);
                    delta.copy_from_slice(&z[(t * nv + h) * dv..(t * nv + h + 1) * dv]);
                    Act::Silu.apply(&mut delta, Some(ot));
                    ot.copy_from_slice(&delta);
                }
            }
        })
    });
    let o = if t_len == 1 {
        per_head // [1, nv, dv] already
    } else {
        let mut o = vec![0f32; nv * t_len * dv];
        o.par_chunks_mut(nv * dv).enumerate().for_each(|(t, row)| {
            for (h, out) in row.chunks_exact_mut(dv).enumerate() {
                out.copy_from_slice(&per_head[(h * t_len + t) * dv..(h * t_len + t + 1) * dv]);
            }
        });
        o
    };
    (from_vec(o, [t_len, nv, dv]).cast(dtype), from_vec(s, [nv, dk, dv]))
}

/// Runs `f` compiled for AVX2 when the CPU has it: the loops inlined into `f` (the `exp`, the delta
/// rule's row updates) then take eight lanes instead of SSE2's four, with bit-identical results.
#[inline(always)]
fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: AVX2 was detected on this CPU.
        return unsafe { avx2(f) };
    }
    f()
}

/// The tensor as an f32 array in standard (row-major) layout, copied only when it is strided.
fn standard<const D: usize>(x: Tensor<NdArray, D>) -> ArcArray<f32, IxDyn> {
    let array = f32_array(crate::gdn::f32_of(x)).unwrap_or_else(|_| unreachable!("cast to f32 above"));
    if array.is_standard_layout() {
        return array;
    }
    // A static rank walks strided views far faster than `IxDyn` (the model's views have rank 3).
    let values = match array.view().into_dimensionality::<Ix3>() {
        Ok(view) => view.iter().copied().collect(),
        Err(_) => array.iter().copied().collect(),
    };
    ArcArray::from_shape_vec(array.raw_dim(), values).expect("sizes match the shape")
}

/// The elements of a standard-layout array.
fn values(x: &ArcArray<f32, IxDyn>) -> &[f32] {
    x.as_slice().expect("standard layout")
}

/// A tensor of `shape` over row-major `values`.
fn from_vec<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<NdArray, D> {
    let array = ndarray::Array::from_shape_vec(IxDyn(&shape), values).expect("sizes match the shape");
    tensor(Ok(array.into_shared()))
}

/// The f32 array behind a tensor, or the tensor's primitive when it is stored otherwise.
fn f32_array<const D: usize>(t: Tensor<NdArray, D>) -> Result<ArcArray<f32, IxDyn>, TensorPrimitive<NdArray>> {
    match t.into_primitive() {
        TensorPrimitive::Float(NdArrayTensor::F32(storage)) => Ok(storage.into_shared()),
        other => Err(other),
    }
}

fn tensor<const D: usize>(array: Result<ArcArray<f32, IxDyn>, TensorPrimitive<NdArray>>) -> Tensor<NdArray, D> {
    Tensor::from_primitive(match array {
        Ok(a) => TensorPrimitive::Float(NdArrayTensor::from(a)),
        Err(p) => p,
    })
}
