//! cubecl kernel of causal attention, flash style: one cube per (KV head, query position) serves
//! the query heads of that KV group, walks the visible keys in tiles with an online softmax in f32,
//! and reads the queries and the cache views in place (any strides). No score matrix, no host-built
//! mask. With few query positions (decode) the keys are split over several cubes, whose partial
//! results a second launch combines (flash decoding). It serves decode-sized queries and prefills
//! too long for the reference's score tensor. burn's own `attention` op has no GQA, offset
//! causal mask, window or custom scale, which every model family here needs one of.
//!
//! [`attend`] gives the kernel a sequence's raw queries: it norms and rotates them as it loads them,
//! with the rotation kernel's own functions (`rope::cube::kernel`), and multiplies its output by
//! `σ(gate)` as it writes it, with the activation kernel's; one launch where there were three.

use burn::tensor::{DType, Tensor};
use burn_cubecl::{
    BoolElement, CubeRuntime, FloatElement, IntElement, ops::numeric::empty_device_dtype, tensor::CubeTensor,
};
use cubecl::prelude::{CubeCount, CubeDim};

use super::Queries;
use crate::cube_common::{Cube, ELEM_UNITS, HEAD_UNITS, MAX_CUBES, elementwise_cubes, output_rows, tensor, unused};
use crate::rope::cube::Tables;
use crate::{Act, PackedOut};

/// Units per cube, and keys per tile (one key per unit); the rotations' count, whose query norm
/// the kernel repeats.
const UNITS: usize = HEAD_UNITS;
/// Shared memory a cube may use (WebGPU's guaranteed minimum).
const SHARED_BYTES: usize = 16 * 1024;
/// Fewest keys per split of a decode step.
const KEYS_PER_SPLIT: usize = 256;
/// Cubes a split launch aims for (a few per multiprocessor).
const TARGET_CUBES: usize = 256;
/// Most key splits of one query row.
const MAX_SPLITS: usize = 32;
/// Query positions up to which the kernel always runs (decode, latent steps, short chunks).
const DECODE_ROWS: usize = 16;
/// Bytes of the reference's f32 score tensor past which a longer prefill runs the kernel too.
const SCORE_BYTES: usize = 256 << 20;

mod kernel {
    use cubecl::prelude::*;

    use crate::act::cube::kernel::activation;
    use crate::rope::cube::kernel::{head_inv_rms, rotated};

    /// `o` of query head `h` at position `i`, feature `d`, times `act` of its gate `gate` `[nh, T,
    /// hd]` (the activation kernel's function) when `on`.
    #[cube]
    #[allow(clippy::too_many_arguments)]
    fn gated_output<F: Float>(
        o: F,
        gate: &Tensor<F>,
        h: usize,
        i: usize,
        d: usize,
        #[comptime] on: bool,
        #[comptime] act: u32,
    ) -> F {
        let mut y = o;
        if on {
            let g = gate[h * gate.stride(0) + i * gate.stride(1) + d * gate.stride(2)];
            y = activation::<F>(g, act) * o;
        }
        y
    }

    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub fn attention_kernel<F: Float>(
        q: &Tensor<F>,          // [nh, T, ≥ hd], any strides (raw queries with `prep`)
        k: &Tensor<F>,          // [nkv, L, hd], any strides
        v: &Tensor<F>,          // [nkv, L, hd], any strides
        q_scale: &Tensor<f32>,  // [hd]: the queries' norm weight (read only with `prep` and `norm`)
        cos: &Tensor<f32>,      // [T, rot] contiguous (read only with `prep`)
        sin: &Tensor<f32>,      // [T, rot] contiguous (read only with `prep`)
        gate: &Tensor<F>,       // [nh, T, hd], any strides (read only when gated and not split)
        out: &mut Tensor<F>,    // [nh, ≥ out_row + T, hd], any strides: rows out_row.. (when not split)
        part: &mut Tensor<f32>, // [splits, nkv·T·rep, hd + 2]: numerator, max, denominator (when split)
        out_row: usize,
        #[comptime] rep: usize,
        #[comptime] hd: usize,
        #[comptime] units: usize,
        #[comptime] window: usize, // 0: none (a window is at least 1)
        #[comptime] scale_bits: u32,
        #[comptime] split: bool,
        #[comptime] prep: bool,
        #[comptime] norm: bool,
        #[comptime] eps_bits: u32,
        #[comptime] gated_out: bool,
        #[comptime] gate_act: u32,
        #[define(F)] _dtype: StorageType,
    ) {
        let per_unit = comptime!(hd.div_ceil(units));
        let u = UNIT_POS_X as usize;
        let t_len = q.shape(1);
        let nkv = k.shape(0);
        let l_len = k.shape(1);
        let splits = CUBE_COUNT_Y as usize;
        // Strides read once (the loops below would reload them from the metadata).
        let qh = q.stride(0);
        let qt = q.stride(1);
        let qc = q.stride(2);
        let kg = k.stride(0);
        let kj = k.stride(1);
        let kc = k.stride(2);
        let vg = v.stride(0);
        let vj = v.stride(1);
        let vc = v.stride(2);
        let scale = f32::new(comptime!(f32::from_bits(scale_bits)));
        let mut q_s = SharedMemory::<f32>::new(rep * hd); // the group's scaled queries
        let mut p_s = SharedMemory::<f32>::new(rep * units); // one tile's scores, then weights
        let mut m = Array::<f32>::new(rep); // running max per query head
        let mut z = Array::<f32>::new(rep); // running denominator
        let mut alpha = Array::<f32>::new(rep); // rescale of this tile
        let mut acc = Array::<f32>::new(rep * per_unit); // numerators of this unit's dims u + x·units
        let mut pair = CUBE_POS_X as usize;
        while pair < nkv * t_len {
            let g = pair / t_len;
            let i = pair % t_len;
            let pos = l_len - t_len + i;
            let mut lo = 0usize;
            if comptime!(window > 0) {
                if pos + 1 > window {
                    lo = pos + 1 - window;
                }
            }
            // This split's share of the visible keys [lo, pos], in whole tiles.
            let tiles = (pos + 1 - lo + units - 1) / units;
            let per_split = (tiles + splits - 1) / splits * units;
            let start = lo + CUBE_POS_Y as usize * per_split;
            let mut end = pos + 1;
            if start + per_split < end {
                end = start + per_split;
            }

            if prep {
                // Each query head normed and rotated as the rotation kernel does it, rounded to the
                // dtype as its output is (p_s holds the norm's partial sums until the keys need it).
                let width = out.shape(2);
                for r in 0..rep {
                    let base = (g * rep + r) * qh + i * qt;
                    let inv = head_inv_rms(q, base, qc, width, &mut p_s, units, norm, eps_bits);
                    let mut c = u;
                    while c < width {
                        let y = F::cast_from(rotated(q, base, qc, c, inv, q_scale, cos, sin, i, norm));
                        q_s[r * hd + c] = f32::cast_from(y) * scale;
                        c += units;
                    }
                }
            } else {
                let mut e = u;
                while e < rep * hd {
                    let h = g * rep + e / hd;
                    q_s[e] = f32::cast_from(q[h * qh + i * qt + (e % hd) * qc]) * scale;
                    e += units;
                }
            }
            for r in 0..rep {
                m[r] = f32::min_value();
                z[r] = f32::new(0.0);
                for x in 0..per_unit {
                    acc[r * per_unit + x] = f32::new(0.0);
                }
            }
            sync_cube();

            let mut j0 = start;
            while j0 < end {
                // Scores of key j0 + u for every query head of the group (the lowest value past the end).
                let j = j0 + u;
                if j < end {
                    let kb = g * kg + j * kj;
                    for r in 0..rep {
                        let mut s = f32::new(0.0);
                        for c in 0..hd {
                            s += q_s[r * hd + c] * f32::cast_from(k[kb + c * kc]);
                        }
                        p_s[r * units + u] = s;
                    }
                } else {
                    for r in 0..rep {
                        p_s[r * units + u] = f32::min_value();
                    }
                }
                sync_cube();
                for r in 0..rep {
                    let mut mt = m[r];
                    for c in 0..units {
                        mt = max(mt, p_s[r * units + c]);
                    }
                    alpha[r] = f32::exp(m[r] - mt);
                    m[r] = mt;
                }
                sync_cube();
                for r in 0..rep {
                    p_s[r * units + u] = f32::exp(p_s[r * units + u] - m[r]);
                }
                sync_cube();
                let n = min(units, end - j0);
                for r in 0..rep {
                    let mut sum = f32::new(0.0);
                    for c in 0..n {
                        sum += p_s[r * units + c];
                    }
                    z[r] = z[r] * alpha[r] + sum;
                    for x in 0..per_unit {
                        acc[r * per_unit + x] *= alpha[r];
                    }
                }
                for x in 0..per_unit {
                    let d = u + x * units;
                    if d < hd {
                        let vb = g * vg + j0 * vj + d * vc;
                        for c in 0..n {
                            let value = f32::cast_from(v[vb + c * vj]);
                            for r in 0..rep {
                                acc[r * per_unit + x] += p_s[r * units + c] * value;
                            }
                        }
                    }
                }
                sync_cube();
                j0 += units;
            }

            for r in 0..rep {
                let row = pair * rep + r; // [nkv, T, rep] order
                let base = (CUBE_POS_Y as usize * nkv * t_len * rep + row) * (hd + 2);
                let h = g * rep + r;
                for x in 0..per_unit {
                    let d = u + x * units;
                    if d < hd {
                        if split {
                            part[base + d] = acc[r * per_unit + x];
                        } else {
                            let o = F::cast_from(acc[r * per_unit + x] / z[r]);
                            let y = gated_output(o, gate, h, i, d, gated_out, gate_act);
                            out[h * out.stride(0) + (out_row + i) * out.stride(1) + d * out.stride(2)] = y;
                        }
                    }
                }
                if split && u == 0 {
                    part[base + hd] = m[r];
                    part[base + hd + 1] = z[r];
                }
            }
            sync_cube();
            pair += CUBE_COUNT_X as usize;
        }
    }

    #[cube(launch)]
    pub fn attention_combine_kernel<F: Float>(
        part: &Tensor<f32>,  // [splits, nkv·T·rep, hd + 2]
        gate: &Tensor<F>,    // [nh, T, hd], any strides (read only when gated)
        out: &mut Tensor<F>, // [nh, ≥ out_row + T, hd], any strides: rows out_row.. written
        t_len: usize,
        out_row: usize,
        #[comptime] rep: usize,
        #[comptime] gated_out: bool,
        #[comptime] gate_act: u32,
        #[define(F)] _dtype: StorageType,
    ) {
        let hd = out.shape(2);
        let splits = part.shape(0);
        let rows = part.shape(1);
        let width = hd + 2;
        let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
        let mut e = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
        while e < rows * hd {
            let row = e / hd;
            let d = e % hd;
            let mut mx = f32::min_value();
            for s in 0..splits {
                mx = max(mx, part[(s * rows + row) * width + hd]);
            }
            let mut num = f32::new(0.0);
            let mut den = f32::new(0.0);
            for s in 0..splits {
                let b = (s * rows + row) * width;
                let w = f32::exp(part[b + hd] - mx);
                num += w * part[b + d];
                den += w * part[b + hd + 1];
            }
            // row = (g·T + i)·rep + r is query head g·rep + r at position i.
            let pair = row / rep;
            let (h, i) = ((pair / t_len) * rep + row % rep, pair % t_len);
            let y = gated_output(F::cast_from(num / den), gate, h, i, d, gated_out, gate_act);
            out[h * out.stride(0) + (out_row + i) * out.stride(1) + d * out.stride(2)] = y;
            e += step;
        }
    }
}

/// Whether the kernel takes `t` queries × `nh` heads of `hd` features over `l` keys × `nkv` heads:
/// a query group that fits the shared memory, and decode-sized queries or prefills whose scores
/// would not fit in memory.
fn kernel_takes(nh: usize, nkv: usize, t: usize, l: usize, hd: usize) -> bool {
    let fits = nh / nkv * (hd + UNITS) * 4 <= SHARED_BYTES;
    // A prefill whose scores fit in memory takes the reference, whose products run on the runtime's
    // tuned matmul: this kernel's scalar products are unmeasured on a GPU, and on lavapipe a
    // 512-token prefill took 7× the reference's time (a decode step over 4096 keys 0.7×).
    let prefill = t > DECODE_ROWS && nh * t * l * 4 <= SCORE_BYTES;
    fits && !prefill && t > 0 && hd > 0
}

/// Launches the kernel (and the combine pass of a split decode step) for `q` `[nh, T, ≥ hd]` over
/// `k`, `v` `[nkv, L, hd]` into rows `out_row..` of `out` `[nh, ≥ out_row + T, hd]` (any strides):
/// with `tables` the queries are raw and the kernel norms and rotates them; with `gate` `[nh, T,
/// hd]` the output is `σ(gate) ⊙ o`.
#[allow(clippy::too_many_arguments)]
fn launch<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    tables: Option<Tables<R>>,
    gate: Option<CubeTensor<R>>,
    (out, out_row): (&CubeTensor<R>, usize),
    scale: f64,
    window: Option<usize>,
) {
    let (o, kv) = (out.meta.shape(), k.meta.shape());
    let ([nh, t, hd], [nkv, l]) = ([o[0], q.meta.shape()[1], o[2]], [kv[0], kv[1]]);
    let (rep, dtype) = (nh / nkv, out.dtype);
    let pairs = nkv * t;
    let visible = window.map_or(l, |w| w.min(l));
    let splits = (visible / KEYS_PER_SPLIT).min(TARGET_CUBES / pairs).clamp(1, MAX_SPLITS);
    let (client, device) = (out.client.clone(), out.device.clone());
    let part = match splits > 1 {
        true => empty_device_dtype(client.clone(), device, [splits, pairs * rep, hd + 2].into(), DType::F32),
        false => unused(out),
    };
    let prep = tables.is_some();
    let (q_scale, cos, sin, eps) = match tables {
        Some(Tables { cos, sin, scale: Some((q_scale, eps)) }) => (Some(q_scale), cos, sin, eps),
        Some(Tables { cos, sin, scale: None }) => (None, cos, sin, 0.0),
        None => (None, unused(out), unused(out), 0.0),
    };
    let norm = q_scale.is_some();
    let q_scale = q_scale.unwrap_or_else(|| unused(out));
    let gated = gate.is_some();
    let gate = gate.unwrap_or_else(|| unused(out));
    let gate_act = crate::act::cube::code(Act::Sigmoid);
    kernel::attention_kernel::launch::<R>(
        &client,
        CubeCount::Static(pairs.min(MAX_CUBES) as u32, splits as u32, 1),
        CubeDim::new_1d(UNITS as u32),
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        q_scale.into_tensor_arg(),
        cos.into_tensor_arg(),
        sin.into_tensor_arg(),
        gate.clone().into_tensor_arg(),
        out.clone().into_tensor_arg(),
        part.clone().into_tensor_arg(),
        out_row,
        rep,
        hd,
        UNITS,
        window.unwrap_or(0),
        (scale as f32).to_bits(),
        splits > 1,
        prep,
        norm,
        (eps as f32).to_bits(),
        gated,
        gate_act,
        dtype.into(),
    );
    if splits > 1 {
        kernel::attention_combine_kernel::launch::<R>(
            &client,
            elementwise_cubes(pairs * rep * hd),
            CubeDim::new_1d(ELEM_UNITS as u32),
            part.into_tensor_arg(),
            gate.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            t,
            out_row,
            rep,
            gated,
            gate_act,
            dtype.into(),
        );
    }
}

/// [`crate::attn::reference`] as one kernel launch (two for a split decode step) in `v`'s dtype, for
/// decode-sized queries or prefills whose scores would not fit in memory, of one dtype, whose query
/// group fits the shared memory; the reference path otherwise.
pub fn causal_attention<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    q: Tensor<Cube<R, F, I, BT>, 3>,
    k: Tensor<Cube<R, F, I, BT>, 3>,
    v: Tensor<Cube<R, F, I, BT>, 3>,
    scale: f64,
    window: Option<usize>,
) -> Tensor<Cube<R, F, I, BT>, 3> {
    let ([nh, t, hd], [nkv, l, _]) = (q.dims(), k.dims());
    assert!(
        l >= t && nkv > 0 && nh % nkv == 0 && window != Some(0),
        "attention of {t} queries × {nh} heads over {l} keys × {nkv} heads, window {window:?}"
    );
    let dtype = v.dtype();
    if !kernel_takes(nh, nkv, t, l, hd) || q.dtype() != dtype || k.dtype() != dtype {
        return crate::attn::reference(q, k, v, scale, window);
    }
    let [q, k, v] = [q, k, v].map(|x| x.into_primitive().tensor());
    let out = empty_device_dtype(q.client.clone(), q.device.clone(), [nh, t, hd].into(), dtype);
    launch(q, k, v, None, None, (&out, 0), scale, window);
    tensor(out)
}

/// Whether [`attend`] takes these operands: what the kernel takes ([`causal_attention`]), with the
/// queries, the gate and the cache in one dtype.
pub fn attend_fits<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    q: &Queries<Cube<R, F, I, BT>>,
    k: &Tensor<Cube<R, F, I, BT>, 3>,
    v: &Tensor<Cube<R, F, I, BT>, 3>,
) -> bool {
    let ([t, nh, width], [nkv, l, hd], dtype) = (q.q.dims(), v.dims(), v.dtype());
    let dtypes = [Some(q.q.dtype()), Some(k.dtype()), q.gate.as_ref().map(Tensor::dtype)];
    nkv > 0
        && nh % nkv == 0
        && l >= t
        && width >= hd
        && kernel_takes(nh, nkv, t, l, hd)
        && dtypes.into_iter().flatten().all(|d| d == dtype)
}

/// [`crate::attn::attend`] as one kernel launch (two for a split decode step), for operands that
/// [`attend_fits`]: the raw queries normed and rotated as they are loaded, the output gated as it
/// is written, `[T, nh, hd]` contiguous (the layout the output product reads), or into its rows of
/// `into` (in place; a pack that shares its buffer is copied first).
pub fn attend<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    q: Queries<Cube<R, F, I, BT>>,
    k: Tensor<Cube<R, F, I, BT>, 3>,
    v: Tensor<Cube<R, F, I, BT>, 3>,
    scale: f64,
    window: Option<usize>,
    into: Option<PackedOut<Cube<R, F, I, BT>>>,
) -> Tensor<Cube<R, F, I, BT>, 3> {
    let ([t, nh, _], hd, dtype) = (q.q.dims(), v.dims()[2], v.dtype());
    let tables = Tables::new(q.norm, q.cos, q.sin);
    let heads_first = |x: Tensor<Cube<R, F, I, BT>, 3>| x.swap_dims(0, 1).into_primitive().tensor(); // [nh, T, ·]
    let gate = q.gate.map(heads_first);
    let (q, k, v) = (heads_first(q.q), k.into_primitive().tensor(), v.into_primitive().tensor());
    let (out, at) = output_rows(into, [t, nh, hd], dtype, &q);
    launch(q, k, v, Some(tables), gate, (&heads_first(tensor(out.clone())), at), scale, window);
    tensor(out)
}
