//! cubecl kernel of each row's `m` largest values with their ids, in rounds: a round splits each
//! row into chunks of up to [`BLOCK`] elements, one cube per chunk. Each unit keeps its strided
//! elements' best `m` in a sorted register list; the cube merges its units' lists pairwise in
//! shared memory and writes the chunk's best `m` (values, then ids as f32). The next round runs
//! over those candidates, until one chunk is left: two launches for a 248k vocabulary.

use burn::tensor::{DType, Tensor};
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement, ops::numeric::empty_device_dtype};
use cubecl::prelude::{CubeCount, CubeDim};

use crate::cube_common::{Cube, MAX_CUBES, contiguous, tensor};

/// Units per cube: their `m`-long lists of values and ids fill WebGPU's guaranteed 16 KiB of shared
/// memory at `m` = [`super::MAX_CANDIDATES`].
const UNITS: usize = 32;
/// Elements each unit loads before comparing them (memory latency hidden by independent loads).
const LOADS: usize = 4;
/// Elements of one chunk (one cube) of a round: 256 per unit, so that a 248k row spreads over 31
/// cubes and their 1581 candidates fit one cube of the second round.
const BLOCK: usize = UNITS * LOADS * 64;

mod kernel {
    use cubecl::prelude::*;

    /// Whether `(a, ia)` ranks before `(b, ib)`: the larger value, the lower id among equals.
    #[cube]
    fn before(a: f32, ia: u32, b: f32, ib: u32) -> bool {
        a > b || (a == b && ia < ib)
    }

    #[cube(launch)]
    pub fn top_kernel<F: Float>(
        x: &Tensor<F>,         // [n, L] values, or [n, C, 2m] an earlier round's candidates (`packed`)
        out: &mut Tensor<f32>, // [n, chunks, 2m]: each chunk's best m values, largest first, then their ids
        #[comptime] m: usize,
        #[comptime] units: usize,
        #[comptime] loads: usize,
        #[comptime] packed: bool,
        #[define(F)] _dtype: StorageType,
    ) {
        let u = UNIT_POS_X as usize;
        let row = CUBE_POS_Y as usize;
        let chunk = CUBE_POS_X as usize;
        let chunks = CUBE_COUNT_X as usize;
        let width = x.shape(1);
        let len = if packed { width * m } else { width };
        let per = (len + chunks - 1) / chunks;
        let start = chunk * per;
        let mut end = start + per;
        if end > len {
            end = len;
        }

        let mut vals = Array::<f32>::new(m);
        let mut ids = Array::<u32>::new(m);
        for j in 0..m {
            vals[j] = f32::min_value();
            ids[j] = u32::MAX;
        }
        // `LOADS` elements in flight per unit before the first comparison.
        let mut v = Array::<f32>::new(loads);
        let mut id = Array::<u32>::new(loads);
        let mut e0 = start + u;
        while e0 < end {
            #[unroll]
            for l in 0..loads {
                let e = e0 + l * units;
                // An earlier round's candidate e is number e % m of its chunk e / m.
                let at = if packed { (row * width + e / m) * 2 * m + e % m } else { row * width + e };
                v[l] = f32::min_value();
                id[l] = u32::MAX;
                if e < end {
                    v[l] = f32::cast_from(x[at]);
                    id[l] = if packed { u32::cast_from(x[at + m]) } else { e as u32 };
                }
            }
            #[unroll]
            for l in 0..loads {
                if before(v[l], id[l], vals[m - 1], ids[m - 1]) {
                    // Insertion into the sorted list: shift the worse ones down one place. (A
                    // counter from a literal: one set from `m` would be a compile-time constant.)
                    let mut shifted = 0usize;
                    loop {
                        let j = m - 1 - shifted;
                        if j == 0 {
                            break;
                        }
                        if !before(v[l], id[l], vals[j - 1], ids[j - 1]) {
                            break;
                        }
                        vals[j] = vals[j - 1];
                        ids[j] = ids[j - 1];
                        shifted += 1;
                    }
                    vals[m - 1 - shifted] = v[l];
                    ids[m - 1 - shifted] = id[l];
                }
            }
            e0 += loads * units;
        }

        // Merge the units' lists pairwise: after the round of `stride`, unit u (a multiple of
        // 2·stride) holds the best m of units u .. u + 2·stride.
        let mut s_val = SharedMemory::<f32>::new(units * m);
        let mut s_id = SharedMemory::<u32>::new(units * m);
        for j in 0..m {
            s_val[u * m + j] = vals[j];
            s_id[u * m + j] = ids[j];
        }
        sync_cube();
        let mut stride = 1usize;
        while stride < units {
            let merging = (u & (2 * stride - 1)) == 0; // u a multiple of 2·stride (a power of two)
            if merging {
                let a0 = u * m;
                let b0 = (u + stride) * m;
                let mut a = 0usize;
                let mut b = 0usize;
                for j in 0..m {
                    // a + b = j < m: neither list runs out.
                    if before(s_val[b0 + b], s_id[b0 + b], s_val[a0 + a], s_id[a0 + a]) {
                        vals[j] = s_val[b0 + b];
                        ids[j] = s_id[b0 + b];
                        b += 1;
                    } else {
                        vals[j] = s_val[a0 + a];
                        ids[j] = s_id[a0 + a];
                        a += 1;
                    }
                }
            }
            sync_cube();
            if merging {
                for j in 0..m {
                    s_val[u * m + j] = vals[j];
                    s_id[u * m + j] = ids[j];
                }
            }
            sync_cube();
            stride *= 2;
        }
        let base = (row * chunks + chunk) * 2 * m;
        let mut j = u;
        while j < m {
            out[base + j] = s_val[j];
            out[base + m + j] = f32::cast_from(s_id[j]);
            j += units;
        }
    }
}

/// Each row's `m` largest values of `x` `[n, L]`, largest first (the lower id first among equals),
/// then their ids: `[n, 2m]` f32, for sizes that [`super::fits`]. Values below `f32::MIN` (−∞)
/// rank after the empty slots (`f32::MIN`, id `u32::MAX`), which a row holding them can return.
pub fn top<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    x: Tensor<Cube<R, F, I, BT>, 2>,
    m: usize,
) -> Tensor<Cube<R, F, I, BT>, 2> {
    let [n, len] = x.dims();
    assert!(super::fits(n, len, m), "the top {m} of {n} rows of {len} values");
    let dtype = x.dtype();
    let mut x = contiguous(x.into_primitive().tensor());
    let (mut len, mut packed) = (len, false);
    loop {
        let chunks = len.div_ceil(BLOCK).clamp(1, MAX_CUBES);
        let out = empty_device_dtype(x.client.clone(), x.device.clone(), [n, chunks, 2 * m].into(), DType::F32);
        kernel::top_kernel::launch::<R>(
            &x.client.clone(),
            CubeCount::Static(chunks as u32, n as u32, 1),
            CubeDim::new_1d(UNITS as u32),
            x.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            m,
            UNITS,
            LOADS,
            packed,
            if packed { DType::F32 } else { dtype }.into(),
        );
        if chunks == 1 {
            return tensor::<R, F, I, BT, 3>(out).reshape([n, 2 * m]);
        }
        (x, len, packed) = (out, chunks * m, true);
    }
}
