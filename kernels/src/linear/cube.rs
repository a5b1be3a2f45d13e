//! Weight products on cubecl backends: strict f32 and the gated MLP product.
//!
//! Strict f32 (docs/numerics.md, "Strict f32"): cubek's default matmul uses tensor cores where the
//! GPU has them, which compute f32 products in TF32 (10-bit mantissa); the conformance suite needs
//! the CPU's tolerances on CUDA, so in strict mode f32 products run cubek's naive kernel (plain f32
//! FMA per output) instead.
//!
//! The gated product (a decode step's `gate_proj ‖ up_proj` and its activation in one launch, where
//! cubek's product and the activation kernel were two): a kernel of our own, 16 units along `k` per
//! output column and 4 columns per cube, over up to 8 activation rows, summing in f32 whatever the
//! dtype (docs/performance.md).

use std::sync::atomic::{AtomicU8, Ordering};

use burn::tensor::{DType, Tensor, TensorPrimitive};
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement, ops::numeric::empty_device_dtype};
use cubecl::prelude::{CubeCount, CubeDim};
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems};
use cubek::matmul::launch::Strategy;
use cubek::std::InputBinding;

use crate::cube_common::{Cube, MAX_CUBES, contiguous, tensor};
use crate::quant::cpu::DOT_ROWS;
use crate::{Act, Rows};

/// 0: not read yet, 1: off, 2: on.
static STRICT: AtomicU8 = AtomicU8::new(0);

/// Turns strict-f32 products on or off for the whole process (the suite turns it on for CUDA;
/// `RMAS_STRICT_F32=1` does the same for any program).
pub fn set_strict_f32(on: bool) {
    STRICT.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Whether f32 weight products avoid TF32 (`RMAS_STRICT_F32=1`, or [`set_strict_f32`]).
pub fn strict_f32() -> bool {
    match STRICT.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var("RMAS_STRICT_F32").is_ok_and(|v| v == "1" || v == "true");
            set_strict_f32(on);
            on
        }
        state => state == 2,
    }
}

/// Whether products of `dtype` activations run strict: f32 ones, with the mode on.
pub fn strict_for(dtype: DType) -> bool {
    dtype == DType::F32 && strict_f32()
}

/// `a·bᵀ` for a `b` stored `[N, K]` (a layer's `[out, in]` weight or a vocabulary matrix) through
/// [`strict_matmul`] where [`strict_for`] `a`'s dtype; `None` elsewhere (the caller's usual product).
pub fn strict_product<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    a: Tensor<Cube<R, F, I, BT>, 2>,
    b: Tensor<Cube<R, F, I, BT>, 2>,
) -> Option<Tensor<Cube<R, F, I, BT>, 2>> {
    strict_for(a.dtype()).then(|| strict_matmul(a, b.transpose())).flatten()
}

/// `a·b` `[M, N]` for f32 `a` `[M, K]` and `b` `[K, N]` (any strides, e.g. a weight's transposed
/// view) with cubek's naive kernel: f32 multiply-adds only. `None` where cubek refuses the shapes.
pub fn strict_matmul<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    a: Tensor<Cube<R, F, I, BT>, 2>,
    b: Tensor<Cube<R, F, I, BT>, 2>,
) -> Option<Tensor<Cube<R, F, I, BT>, 2>> {
    let ([m, _], [_, n]) = (a.dims(), b.dims());
    let (a, b) = (a.into_primitive().tensor(), b.into_primitive().tensor());
    let out = empty_device_dtype(a.client.clone(), a.device.clone(), [m, n].into(), DType::F32);
    let f32_type = || DType::F32.into();
    let mut dtypes =
        MatmulElems::from_globals(&MatmulGlobalElems { lhs: f32_type(), rhs: f32_type(), out: f32_type() });
    let client = out.client.clone();
    let (lhs, rhs) = (InputBinding::new(a.binding(), f32_type()), InputBinding::new(b.binding(), f32_type()));
    cubek::matmul::launch::launch_ref(&Strategy::Naive, &client, lhs, rhs, out.clone().binding(), &mut dtypes).ok()?;
    Some(Tensor::from_primitive(TensorPrimitive::Float(out)))
}

mod kernel {
    use cubecl::prelude::*;

    use crate::act::cube::kernel::activation;

    /// `out[m, r] = act(Σ_k x[m, k]·w[r, k]) · Σ_k x[m, k]·w[n + r, k]` for `w`'s `n` gate rows and
    /// the `n` rows after them (a gated MLP's `gate_proj ‖ up_proj`). A cube's units are `lanes` per
    /// output column (along `k`: each load of a column's lanes is one contiguous run) times
    /// `units / lanes` columns; cube `(c, y)` takes columns `c·units/lanes..` (strided over the grid)
    /// and activation rows `y·per_cube..` (up to `per_cube`), summing in f32. Each weight element is
    /// read once for all those rows, and each output sums in the same order whatever the rows beside
    /// it (a decode step's bits do not depend on the batch).
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub fn gated_rows_kernel<F: Float>(
        x: &Tensor<F>,       // [M, K] contiguous
        w: &Tensor<F>,       // [2·N, K] contiguous: gate rows, then value rows
        out: &mut Tensor<F>, // [M, N]
        #[comptime] units: usize,
        #[comptime] lanes: usize,
        #[comptime] per_cube: usize,
        #[comptime] act: u32,
        #[define(F)] _dtype: StorageType,
    ) {
        let (m_len, k_len, n) = (x.shape(0), x.shape(1), out.shape(1));
        let m0 = CUBE_POS_Y as usize * per_cube;
        let u = UNIT_POS_X as usize;
        let (lane, column) = (u % lanes, u / lanes);
        let columns = comptime!(units / lanes);
        // Row j's gate partial sums at [j·units..], its values' at [(per_cube + j)·units..].
        let mut shared = SharedMemory::<f32>::new(comptime!(2 * per_cube * units));
        let mut gate = Array::<f32>::new(per_cube);
        let mut value = Array::<f32>::new(per_cube);
        let mut first = CUBE_POS_X as usize * columns;
        while first < n {
            let r = first + column;
            #[unroll]
            for j in 0..per_cube {
                gate[j] = 0.0f32;
                value[j] = 0.0f32;
            }
            if r < n {
                let mut k = lane;
                while k < k_len {
                    let wg = f32::cast_from(w[r * k_len + k]);
                    let wv = f32::cast_from(w[(n + r) * k_len + k]);
                    #[unroll]
                    for j in 0..per_cube {
                        let m = m0 + j;
                        if m < m_len {
                            let xv = f32::cast_from(x[m * k_len + k]);
                            gate[j] += xv * wg;
                            value[j] += xv * wv;
                        }
                    }
                    k += lanes;
                }
            }
            // Each column's sums added over its lanes in the same tree steps.
            #[unroll]
            for j in 0..per_cube {
                shared[j * units + u] = gate[j];
                shared[(per_cube + j) * units + u] = value[j];
            }
            sync_cube();
            let mut stride = CUBE_DIM_X as usize / columns / 2; // lanes / 2
            while stride > 0 {
                if lane < stride {
                    #[unroll]
                    for j in 0..comptime!(2 * per_cube) {
                        let other = shared[j * units + u + stride];
                        shared[j * units + u] += other;
                    }
                }
                sync_cube();
                stride /= 2;
            }
            // Lane j of each column writes activation row j's output.
            if lane < per_cube && r < n && m0 + lane < m_len {
                let at = column * lanes;
                let (g, v) = (shared[lane * units + at], shared[(per_cube + lane) * units + at]);
                out[(m0 + lane) * n + r] = F::cast_from(activation::<f32>(g, act) * v);
            }
            sync_cube();
            first += CUBE_COUNT_X as usize * columns;
        }
    }
}

/// Units per cube of the gated product.
const GATED_UNITS: usize = 64;
/// Units of the gated product per output column (a power of two, for the tree reduction, and at
/// least [`GATED_ROWS_PER_CUBE`]): 16 consecutive f32 weights, 64 bytes, per load of a column.
const GATED_LANES: usize = 16;
/// Activation rows a cube of the gated product takes: each weight element it reads serves them all.
const GATED_ROWS_PER_CUBE: usize = 8;

/// `act(x·W_gᵀ) ⊙ (x·W_vᵀ)` `[M, N]` in `x`'s dtype for `x` `[M, K]` and `w` `[2N, K]` (`W_g` its first
/// `N` rows) in one launch, the activation applied to each product as the kernel writes it: for up to
/// [`DOT_ROWS`] rows or any number of [`Rows::PerRow`] rows; `None` for more (the caller multiplies,
/// then activates). docs/performance.md, "Launches".
pub fn gated_product<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    x: Tensor<Cube<R, F, I, BT>, 2>,
    w: Tensor<Cube<R, F, I, BT>, 2>,
    act: Act,
    rows: Rows,
) -> Option<Tensor<Cube<R, F, I, BT>, 2>> {
    let ([m, k], [n2, wk], dtype) = (x.dims(), w.dims(), x.dtype());
    if (m > DOT_ROWS && rows == Rows::Sequence) || k != wk || !n2.is_multiple_of(2) || w.dtype() != dtype {
        return None;
    }
    let n = n2 / 2;
    let (x, w) = (contiguous(x.into_primitive().tensor()), contiguous(w.into_primitive().tensor()));
    let out = empty_device_dtype(x.client.clone(), x.device.clone(), [m, n].into(), dtype);
    let per_cube = m.clamp(1, GATED_ROWS_PER_CUBE);
    if m > 0 && n > 0 {
        kernel::gated_rows_kernel::launch::<R>(
            &x.client.clone(),
            CubeCount::Static(
                n.div_ceil(GATED_UNITS / GATED_LANES).min(MAX_CUBES) as u32,
                m.div_ceil(per_cube) as u32,
                1,
            ),
            CubeDim::new_1d(GATED_UNITS as u32),
            x.into_tensor_arg(),
            w.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            GATED_UNITS,
            GATED_LANES,
            per_cube,
            crate::act::cube::code(act),
            dtype.into(),
        );
    }
    Some(tensor(out))
}
