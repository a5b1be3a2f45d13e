//! Causal attention on the CPU by query blocks over the causal keys only.

use burn::backend::NdArray;
use burn::tensor::{DType, Tensor};
use gemm::Parallelism;
use ndarray::{Array2, ArrayView1, Ix3, s};
use rayon::prelude::*;

use crate::cpu_common::{dot, f32_array, from_vec, matmul, softmax_row, standard, values, wide};

/// `a·b` for a row of a cache view (contiguous in the caches rmas keeps).
#[inline(always)]
fn dot_row(a: &[f32], b: ArrayView1<f32>) -> f32 {
    match b.as_slice() {
        Some(b) => dot(a, b),
        None => a.iter().zip(b).map(|(x, y)| x * y).sum(),
    }
}

/// Query rows (positions × the heads of one KV group) per block of [`causal_attention`].
const ATTENTION_ROWS: usize = 128;

/// [`crate::attn::reference`] by blocks of queries (all heads of one KV group, about
/// [`ATTENTION_ROWS`] rows): one product with the keys the block can see, the masked softmax per
/// row, one product with the values (for a single position, a decode step, dot products instead).
/// The keys after a block's last query are never touched, nor any score tensor or mask of the
/// whole sequence built. Only the first `l` (`keys`) rows of the cache `k`, `v` are read.
pub fn causal_attention(
    q: Tensor<NdArray, 3>,
    k: Tensor<NdArray, 3>,
    v: Tensor<NdArray, 3>,
    keys: usize,
    scale: f64,
    window: Option<usize>,
) -> Tensor<NdArray, 3> {
    if [&q, &k, &v].iter().any(|t| t.dtype() != DType::F32) {
        return crate::attn::reference(q, k.narrow(1, 0, keys), v.narrow(1, 0, keys), scale, window);
    }
    let ([nh, t, hd], [nkv, cap, _], l) = (q.dims(), k.dims(), keys);
    assert!(
        l >= t && l <= cap && nh % nkv == 0,
        "attention of {t} queries × {nh} heads over {l} of {cap} keys × {nkv} heads"
    );
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
            let (kg, vg) = (k.slice(s![g, lo..hi, ..]), v.slice(s![g, lo..hi, ..])); // [width, hd]
            if t == 1 {
                // A decode step: each query row by dot products with the keys, then the values
                // summed by their weights (a GEMM would first pack every key and value).
                return wide(|| {
                    let mut ob = Array2::<f32>::zeros((rep, hd));
                    for (row, mut o) in ob.rows_mut().into_iter().enumerate() {
                        let qr = &q[at(g, i0, 1, row)..][..hd];
                        let mut p: Vec<f32> = kg.rows().into_iter().map(|kr| scale as f32 * dot_row(qr, kr)).collect();
                        softmax_row(&mut p);
                        for (&pj, vr) in p.iter().zip(vg.rows()) {
                            o.zip_mut_with(&vr, |o, v| *o += pj * v);
                        }
                    }
                    ob
                });
            }
            let qb = Array2::from_shape_fn((rep * n, hd), |(row, d)| q[at(g, i0, n, row) + d]);
            let mut sc = Array2::<f32>::zeros((rep * n, width));
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
