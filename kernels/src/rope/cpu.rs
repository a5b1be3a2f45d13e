//! Rotary embedding of attention heads on the CPU: each head's norm and rotation in one pass over
//! its row, written head-major into a new tensor or straight into a KV cache. The arithmetic is
//! the reference composition's, op for op, so the bits are the same (docs/performance.md,
//! "Launches"); what goes is ~10 array ops per tensor, each its own pass and allocation.

use burn::backend::NdArray;
use burn::tensor::{DType, Tensor};
use ndarray::{ArcArray, ArrayView3, Ix3, IxDyn, s};
use rayon::prelude::*;

use crate::cpu_common::{ELEMENTWISE_CHUNK, f32_array, from_vec, standard, tensor, values, wide};
use crate::norm::cpu::norm_row;

/// [`super::reference`]: `x` `[T, heads, width]` (any strides) normed and rotated per head into
/// `[heads, T, head_dim]`.
pub fn rope_heads(
    x: Tensor<NdArray, 3>,
    head_dim: usize,
    norm: Option<(Tensor<NdArray, 1>, f64)>,
    cos: Tensor<NdArray, 2>,
    sin: Tensor<NdArray, 2>,
) -> Tensor<NdArray, 3> {
    if x.dtype() != DType::F32 {
        return super::reference(x, head_dim, norm, cos, sin);
    }
    let [t, heads, _] = x.dims();
    let mut out = vec![0f32; heads * t * head_dim];
    let rotation = Rotation::new(norm, cos, sin);
    head_major(&f32_view(x), head_dim, &mut out, t, 0, |row, i| rotation.apply(row, i));
    from_vec(out, [heads, t, head_dim])
}

/// [`super::append_kv`]: the keys rotated and the values copied into rows `at..at + T` of the caches,
/// in place when no other tensor shares a cache's buffer (else that cache is copied first, as
/// `slice_assign` does).
pub fn append_kv(
    (k_cache, v_cache): (Tensor<NdArray, 3>, Tensor<NdArray, 3>),
    k: Tensor<NdArray, 3>,
    v: Tensor<NdArray, 3>,
    norm: Option<(Tensor<NdArray, 1>, f64)>,
    (cos, sin): (Tensor<NdArray, 2>, Tensor<NdArray, 2>),
    at: usize,
) -> (Tensor<NdArray, 3>, Tensor<NdArray, 3>) {
    if [&k_cache, &v_cache, &k, &v].iter().any(|t| t.dtype() != DType::F32) {
        return super::append_kv((k_cache, v_cache), k, v, norm, (cos, sin), at);
    }
    let [_, capacity, head_dim] = k_cache.dims();
    let rotation = Rotation::new(norm, cos, sin);
    let (mut k_cache, mut v_cache) = (standard(k_cache), standard(v_cache));
    let (k, v) = (f32_view(k), f32_view(v));
    let (k_rows, v_rows) = (k_cache.as_slice_mut(), v_cache.as_slice_mut()); // copied here if shared
    let layout = "a cache in standard layout";
    head_major(&k, head_dim, k_rows.expect(layout), capacity, at, |row, i| rotation.apply(row, i));
    head_major(&v, head_dim, v_rows.expect(layout), capacity, at, |_, _| ());
    (tensor(Ok(k_cache)), tensor(Ok(v_cache)))
}

/// A head's RMSNorm (effective scale, eps) and the rotary tables `[T, rot]`, as host values.
struct Rotation {
    norm: Option<(ArcArray<f32, IxDyn>, f32)>,
    cos: ArcArray<f32, IxDyn>,
    sin: ArcArray<f32, IxDyn>,
    rot: usize,
}

impl Rotation {
    fn new(norm: Option<(Tensor<NdArray, 1>, f64)>, cos: Tensor<NdArray, 2>, sin: Tensor<NdArray, 2>) -> Self {
        let rot = cos.dims()[1];
        Self {
            norm: norm.map(|(scale, eps)| (standard(scale), eps as f32)),
            cos: standard(cos),
            sin: standard(sin),
            rot,
        }
    }

    /// Row `i`'s head in place: normed, then its first `rot` features rotated half against half,
    /// `x·cos + rotate_half(x)·sin` with `rotate_half(x) = (−x₂, x₁)`, as the reference computes it.
    #[inline(always)]
    fn apply(&self, row: &mut [f32], i: usize) {
        if let Some((scale, eps)) = &self.norm {
            norm_row(row, values(scale), *eps);
        }
        let (rot, half) = (self.rot, self.rot / 2);
        let (cos, sin) = (&values(&self.cos)[i * rot..][..rot], &values(&self.sin)[i * rot..][..rot]);
        let (x1, x2) = row[..rot].split_at_mut(half);
        for (j, (a, b)) in x1.iter_mut().zip(x2).enumerate() {
            let (x1, x2) = (*a, *b);
            *a = x1 * cos[j] + (-x2) * sin[j];
            *b = x2 * cos[half + j] + x1 * sin[half + j];
        }
    }
}

/// `x` as a strided f32 view source (no copy).
fn f32_view(x: Tensor<NdArray, 3>) -> ArcArray<f32, Ix3> {
    let array = f32_array(x).unwrap_or_else(|_| unreachable!("f32 checked by the caller"));
    array.into_dimensionality::<Ix3>().expect("rank 3")
}

/// Copies the first `head_dim` features of each row of `x` `[T, heads, width]` to rows `at..at + T`
/// of `out` `[heads, capacity, head_dim]`, then runs `f(row, i)` on row `i`'s copy: per head in
/// parallel where the copy is large (a prompt), in one pass where it is a decode step's few heads.
fn head_major(
    x: &ArcArray<f32, Ix3>,
    head_dim: usize,
    out: &mut [f32],
    capacity: usize,
    at: usize,
    f: impl Fn(&mut [f32], usize) + Sync,
) {
    let (t, heads, _) = x.dim();
    let x: ArrayView3<f32> = x.view();
    let per_head = |(h, head): (usize, &mut [f32])| {
        wide(|| {
            for (i, row) in head[at * head_dim..][..t * head_dim].chunks_exact_mut(head_dim).enumerate() {
                row.iter_mut().zip(x.slice(s![i, h, ..head_dim])).for_each(|(o, v)| *o = *v);
                f(row, i);
            }
        })
    };
    let stride = capacity * head_dim;
    if stride == 0 {
        return; // no features to write
    }
    if t * heads * head_dim < ELEMENTWISE_CHUNK {
        out.chunks_exact_mut(stride).enumerate().for_each(per_head);
    } else {
        out.par_chunks_exact_mut(stride).enumerate().for_each(per_head);
    }
}
