//! Support shared by the CPU (ndarray) bodies of the operations (`<op>/cpu.rs`): f32 array
//! access, strided products, the AVX2 dispatch and the row kernels several ops use.
//!
//! Weight products avoid the copies of burn-ndarray's generic matmul, which reshapes (copies) both
//! operands and, through its GEMM, packs the weight even for one row: a decode step read every weight
//! about five times. Here a layer's weight goes through register tiles at any row count, read once
//! for all rows (split over the output columns on the thread pool; `linear/cpu.rs`); a vocabulary
//! matrix streams for a few rows and runs one GEMM on views for more. Every product runs on rayon's pool (the `gemm`
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
use burn::tensor::{Tensor, TensorPrimitive};
use burn_ndarray::NdArrayTensor;
use gemm::Parallelism;
use ndarray::{ArcArray, ArrayView2, ArrayViewMut2, Ix3, IxDyn};

/// Elements per task of an elementwise pass.
pub(crate) const ELEMENTWISE_CHUNK: usize = 1 << 14;

/// `out = alpha·a·b` for strided f32 views.
pub(crate) fn matmul(
    alpha: f32,
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    mut out: ArrayViewMut2<f32>,
    parallelism: Parallelism,
) {
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
pub(crate) fn stride2(s: &[isize]) -> [isize; 2] {
    [s[0], s[1]]
}
/// `a·b` with eight partial sums (so the compiler vectorises it; inlined into the AVX2 builds).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
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
/// f32 lanes of one vector register (or one f32) with a fused multiply-add: what the weight
/// products' register tiles (`linear/cpu.rs`) and the block products' accumulators
/// (`quant/cpu.rs`) are made of.
pub(crate) trait Lanes: Copy {
    /// Lanes per vector.
    const WIDTH: usize;
    /// Loads `WIDTH` floats. SAFETY (all methods): the CPU has the vector's features; `p` is valid.
    unsafe fn load(p: *const f32) -> Self;
    /// Stores `WIDTH` floats.
    unsafe fn store(self, p: *mut f32);
    /// `x` in every lane.
    unsafe fn splat(x: f32) -> Self;
    /// `a·b + self`, rounded once per lane.
    unsafe fn fma(self, a: Self, b: Self) -> Self;
    /// `self + other` per lane (the x86 block products' accumulators).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    unsafe fn add(self, other: Self) -> Self;
    /// The sum of the lanes (in the vector's own fixed order).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    unsafe fn sum(self) -> f32;
}

/// One lane: the portable body and every ISA's last columns.
impl Lanes for f32 {
    const WIDTH: usize = 1;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        unsafe { *p }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        unsafe { *p = self }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        x
    }
    #[inline(always)]
    unsafe fn fma(self, a: Self, b: Self) -> Self {
        a.mul_add(b, self)
    }
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        self + other
    }
    #[inline(always)]
    unsafe fn sum(self) -> f32 {
        self
    }
}

/// A [`Lanes`] impl for an x86 vector type from its width, features and intrinsics.
#[cfg(target_arch = "x86_64")]
macro_rules! x86_lanes {
    ($ty:ident, $width:literal, $features:literal, $load:ident, $store:ident, $splat:ident, $fma:ident, $add:ident, $sum:path) => {
        impl Lanes for std::arch::x86_64::$ty {
            const WIDTH: usize = $width;
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn load(p: *const f32) -> Self {
                unsafe { std::arch::x86_64::$load(p) }
            }
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn store(self, p: *mut f32) {
                unsafe { std::arch::x86_64::$store(p, self) }
            }
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn splat(x: f32) -> Self {
                std::arch::x86_64::$splat(x)
            }
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn fma(self, a: Self, b: Self) -> Self {
                std::arch::x86_64::$fma(a, b, self)
            }
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn add(self, other: Self) -> Self {
                std::arch::x86_64::$add(self, other)
            }
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn sum(self) -> f32 {
                $sum(self)
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
x86_lanes!(
    __m512,
    16,
    "avx512f",
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    std::arch::x86_64::_mm512_reduce_add_ps
);
#[cfg(target_arch = "x86_64")]
x86_lanes!(
    __m256,
    8,
    "avx2,fma",
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_add_ps,
    horizontal_sum
);

/// The sum of eight lanes: the halves added, then pairs, then the last two.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn horizontal_sum(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
}

/// Softmax of one row in place (inlined into [`wide`]'s callers).
#[inline(always)]
pub(crate) fn softmax_row(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    row.iter_mut().for_each(|x| *x = exp(*x - max));
    let scale = 1.0 / row.iter().sum::<f32>();
    row.iter_mut().for_each(|x| *x *= scale);
}

/// Runs `f` compiled for AVX2 when the CPU has it: the loops inlined into `f` (the `exp`, the delta
/// rule's row updates) then take eight lanes instead of SSE2's four, with bit-identical results.
#[inline(always)]
pub(crate) fn wide<R>(f: impl FnOnce() -> R) -> R {
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
pub(crate) fn standard<const D: usize>(x: Tensor<NdArray, D>) -> ArcArray<f32, IxDyn> {
    let array = f32_array(crate::f32_of(x)).unwrap_or_else(|_| unreachable!("cast to f32 above"));
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
pub(crate) fn values(x: &ArcArray<f32, IxDyn>) -> &[f32] {
    x.as_slice().expect("standard layout")
}

/// A tensor of `shape` over row-major `values`.
pub(crate) fn from_vec<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<NdArray, D> {
    let array = ndarray::Array::from_shape_vec(IxDyn(&shape), values).expect("sizes match the shape");
    tensor(Ok(array.into_shared()))
}

/// The f32 array behind a tensor, or the tensor's primitive when it is stored otherwise.
pub(crate) fn f32_array<const D: usize>(
    t: Tensor<NdArray, D>,
) -> Result<ArcArray<f32, IxDyn>, TensorPrimitive<NdArray>> {
    match t.into_primitive() {
        TensorPrimitive::Float(NdArrayTensor::F32(storage)) => Ok(storage.into_shared()),
        other => Err(other),
    }
}

pub(crate) fn tensor<const D: usize>(
    array: Result<ArcArray<f32, IxDyn>, TensorPrimitive<NdArray>>,
) -> Tensor<NdArray, D> {
    Tensor::from_primitive(match array {
        Ok(a) => TensorPrimitive::Float(NdArrayTensor::from(a)),
        Err(p) => p,
    })
}

/// `eˣ` in f32 without branches or library calls, so loops over it vectorise: `2ⁿ·p(r)` with
/// `x = n·ln2 + r`, `|r| ≤ ln2/2` and Cephes' degree-7 polynomial (relative error ≲ 2e-7); 0 below
/// −87.3 (incl. −∞), saturating at `e^88.3` above.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
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
}
