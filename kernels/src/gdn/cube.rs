//! cubecl kernel for the gated delta rule: one cube per value head, one unit per value column `j`,
//! which keeps its state column `S[:, j]` (dk f32 values) in registers across all T tokens, and
//! applies the layer's gated RMSNorm to each token's output row before writing it (a cube-wide sum
//! of squares). It serves decode (T = 1) and prefill alike, computes the exact recurrence, reads the
//! layer's conv output and raw gate projections as they are (the q/k l2 norms, q's scale, the
//! key-head sharing and the gates' softplus/sigmoid folded in) and replaces ~10 tensor ops per
//! token, the q/k preparation's ~15, the gates' ~10 and the norm's six.
//!
//! With `conv` it also runs the layer's causal conv + SiLU before the rule (one launch per layer
//! instead of two): at each token the cube convolves its key head's q ‖ k into shared memory (the
//! units split the channels) and each unit its own value column, with the conv kernel's own
//! per-output function, so the bits are those of the two kernels one after the other; at the end
//! it writes the new conv state of the channels it owns (a key head's by the first value head that
//! reads it). That entry binds 11 storage buffers, more than WebGPU allows ([`fits`]); the plain
//! one keeps its 8, and both run one shared body.

use burn::tensor::{DType, Tensor};
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement, ops::numeric::empty_device_dtype};
use cubecl::prelude::{CubeCount, CubeDim};

use crate::PackedOut;
use crate::cube_common::{Cube, contiguous, f32_contiguous, output_rows, tensor, unused};
use crate::gdn::{DeltaRule, GatedNorm};

mod kernel {
    use cubecl::prelude::*;

    use crate::conv::cube::kernel::{conv_silu_at, window};
    use crate::cube_common::cube_reduce;

    /// Where value head `h` reads a token's row of `qkv` `[T, nk·dk ‖ nk·dk ‖ nv·dv]`: value head
    /// `h` reads key head `h / (nv/nk)`. Returns (value heads per key head, the offsets of its q, k, v).
    #[cube]
    fn head_offsets<F: Float>(
        qkv: &Tensor<F>,
        state: &Tensor<f32>,
        h: usize,
        #[comptime] dk: usize,
    ) -> (usize, usize, usize, usize) {
        let (nv, dv) = (state.shape(0), state.shape(2));
        let nk = (qkv.shape(1) - nv * dv) / (2 * dk);
        let ratio = nv / nk;
        let kh = h / ratio;
        (ratio, kh * dk, (nk + kh) * dk, 2 * nk * dk + h * dv)
    }

    /// The rule for value head `CUBE_POS_X`, unit `j` = value column `UNIT_POS_X`, over every token:
    /// the body both entry points share; `conv_state`, `conv_weight` are read only when `conv`.
    #[cube]
    #[allow(clippy::too_many_arguments)]
    fn delta_rule<F: Float>(
        qkv: &Tensor<F>,     // [T, nk·dk ‖ nk·dk ‖ nv·dv]: q, k and v of each token (raw projections when `conv`)
        ab: &Tensor<F>,      // [T, 2·nv]: per token the raw gates a, then b
        decay: &Tensor<f32>, // [2, nv]: dt_bias, then −exp(A_log)
        state: &Tensor<f32>, // [nv, dk, dv]
        z: &Tensor<F>,       // [T, nv, dv] norm gate (read only when normed)
        w: &Tensor<f32>,     // [dv] norm weight (read only when normed)
        conv_state: &Tensor<F>, // [K−1, width] (read only when `conv`)
        conv_weight: &Tensor<F>, // [K, width] (read only when `conv`)
        out: &mut Tensor<F>, // [≥ out_row + T, nv, dv]: rows out_row.. written
        state_out: &mut Tensor<f32>, // [nv, dk, dv]
        out_row: usize,
        #[comptime] dk: usize,
        #[comptime] normed: bool,
        #[comptime] conv: bool,
        #[comptime] units: usize,
        #[comptime] eps_bits: u32,
    ) {
        let h = CUBE_POS_X as usize;
        let j = UNIT_POS_X as usize;
        let t_len = qkv.shape(0);
        let width = qkv.shape(1);
        let nv = state.shape(0);
        let dv = state.shape(2);
        let (_, q0, k0, v0) = head_offsets(qkv, state, h, dk);
        let l2_eps = comptime!(crate::gdn::L2_EPS as f32);
        let q_scale = 1.0f32 / f32::sqrt(f32::cast_from(dk as u32));
        // Units past dv (the cube is a power of two for the norm's sum) only join the sums.
        let active = j < dv;
        let mut shared = SharedMemory::<f32>::new(units);
        // The token's q ‖ k, which every unit reads whole: loaded (or convolved) once per cube.
        let mut qk = SharedMemory::<f32>::new(comptime!(2 * dk));
        let mut s = Array::<f32>::new(dk);
        if active {
            for i in 0..dk {
                s[i] = state[(h * dk + i) * dv + j];
            }
        }
        for t in 0..t_len {
            let base = t * width;
            let row = t * nv + h; // head h of token t in [T, nv, ·]
            let at = (out_row + t) * nv + h; // the same in `out`
            let mut e = j;
            while e < 2 * dk {
                let ch = if e < dk { q0 + e } else { k0 + e - dk };
                qk[e] = if conv {
                    f32::cast_from(conv_silu_at(qkv, conv_state, conv_weight, t, ch))
                } else {
                    f32::cast_from(qkv[base + ch])
                };
                e += units;
            }
            sync_cube();
            let mut o = 0.0f32;
            if active {
                let v = if conv {
                    f32::cast_from(conv_silu_at(qkv, conv_state, conv_weight, t, v0 + j))
                } else {
                    f32::cast_from(qkv[base + v0 + j])
                };
                // The raw k and q: their l2 norms scale the scalars they produce.
                // exp(g) and β from the raw gates (see `gdn::gates`).
                let a = f32::cast_from(ab[t * 2 * nv + h]) + decay[h];
                let softplus = max(a, 0.0f32) + f32::log1p(f32::exp(-f32::abs(a)));
                let decay_t = f32::exp(decay[nv + h] * softplus);
                let beta = 1.0f32 / (1.0f32 + f32::exp(-f32::cast_from(ab[t * 2 * nv + nv + h])));
                let mut kv = 0.0f32;
                let mut kk = 0.0f32;
                for i in 0..dk {
                    let ki = qk[dk + i];
                    s[i] *= decay_t;
                    kv += s[i] * ki;
                    kk += ki * ki;
                }
                let k_scale = 1.0f32 / f32::sqrt(kk + l2_eps);
                let delta = beta * (v - kv * k_scale) * k_scale;
                let mut qq = 0.0f32;
                for i in 0..dk {
                    let qi = qk[i];
                    s[i] += qk[dk + i] * delta;
                    o += s[i] * qi;
                    qq += qi * qi;
                }
                o *= q_scale / f32::sqrt(qq + l2_eps);
            }
            if normed {
                let mean_square = cube_reduce(&mut shared, o * o, false) / f32::cast_from(dv as u32);
                let scale = 1.0f32 / f32::sqrt(mean_square + comptime!(f32::from_bits(eps_bits)));
                if active {
                    let gate = f32::cast_from(z[row * dv + j]);
                    out[at * dv + j] = F::cast_from(w[j] * o * scale * gate / (1.0f32 + f32::exp(-gate)));
                }
            } else if active {
                out[at * dv + j] = F::cast_from(o);
            }
            sync_cube(); // every unit is done with this token's q ‖ k
        }
        if active {
            for i in 0..dk {
                state_out[(h * dk + i) * dv + j] = s[i];
            }
        }
    }

    /// The plain rule over the layer's conv output: 8 storage buffers, which WebGPU binds.
    #[cube(launch)]
    pub fn gated_delta_rule_kernel<F: Float>(
        qkv: &Tensor<F>,
        ab: &Tensor<F>,
        decay: &Tensor<f32>,
        state: &Tensor<f32>,
        z: &Tensor<F>,
        w: &Tensor<f32>,
        out: &mut Tensor<F>,
        state_out: &mut Tensor<f32>,
        out_row: usize,
        #[comptime] dk: usize,
        #[comptime] normed: bool,
        #[comptime] units: usize,
        #[comptime] eps_bits: u32,
        #[define(F)] _dtype: StorageType,
    ) {
        // `qkv` stands in for the conv's operands, which the body does not read without `conv`.
        delta_rule(qkv, ab, decay, state, z, w, qkv, qkv, out, state_out, out_row, dk, normed, false, units, eps_bits);
    }

    /// The conv (+ SiLU) of the raw projection and the rule in one launch (11 storage buffers), then
    /// the new conv state of the channels this cube owns: its value head's, and its key head's
    /// where it is the first value head reading that key head.
    #[cube(launch)]
    pub fn conv_delta_rule_kernel<F: Float>(
        qkv: &Tensor<F>,
        ab: &Tensor<F>,
        decay: &Tensor<f32>,
        state: &Tensor<f32>,
        z: &Tensor<F>,
        w: &Tensor<f32>,
        conv_state: &Tensor<F>,
        conv_weight: &Tensor<F>,
        out: &mut Tensor<F>,
        state_out: &mut Tensor<f32>,
        conv_out: &mut Tensor<F>, // [K−1, width]
        out_row: usize,
        #[comptime] dk: usize,
        #[comptime] normed: bool,
        #[comptime] units: usize,
        #[comptime] eps_bits: u32,
        #[define(F)] _dtype: StorageType,
    ) {
        delta_rule(
            qkv,
            ab,
            decay,
            state,
            z,
            w,
            conv_state,
            conv_weight,
            out,
            state_out,
            out_row,
            dk,
            normed,
            true,
            units,
            eps_bits,
        );
        let h = CUBE_POS_X as usize;
        let width = qkv.shape(1);
        let dv = state.shape(2);
        let (ratio, q0, k0, v0) = head_offsets(qkv, state, h, dk);
        let lag = conv_state.shape(0);
        // The first value head reading a key head (h / ratio) writes that key head's channels too.
        let owned = if (h / ratio) * ratio == h { 2 * dk + dv } else { dv };
        let mut e = UNIT_POS_X as usize;
        while e < lag * owned {
            let r = e / owned;
            let c = e % owned;
            let ch = if c < dv {
                v0 + c
            } else if c < dv + dk {
                q0 + c - dv
            } else {
                k0 + c - dv - dk
            };
            // Row r of the new state is window row T + r.
            conv_out[r * width + ch] = window(qkv, conv_state, qkv.shape(0) + r, ch);
            e += units;
        }
    }
}

/// Launches the kernel on the contiguous inputs, the projections (`qkv`, `ab`, `z`) in their own
/// dtype and the rest in f32; returns `o` `[T, nv, dv]` (in `qkv`'s dtype) and the f32 state.
pub fn gated_delta_rule<R, F, I, BT>(
    x: DeltaRule<Cube<R, F, I, BT>>,
    norm: Option<GatedNorm<Cube<R, F, I, BT>>>,
) -> (Tensor<Cube<R, F, I, BT>, 3>, Tensor<Cube<R, F, I, BT>, 3>)
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let (o, state, _) = launch(x, None, norm, None);
    (o, state)
}

/// Tensors the kernel binds with the conv (besides cubecl's metadata buffer).
const CONV_BINDINGS: u32 = 11;

/// Whether [`conv_delta_rule`] runs as one kernel: a convolution of at least two taps whose state
/// and weight have the projection's dtype (as [`crate::conv::cube::causal_conv_silu`] needs), on a
/// device that binds the kernel's [`CONV_BINDINGS`] storage buffers in one shader. Browsers' WebGPU
/// allows 8–10 per shader stage (Chromium's SwiftShader: 10, which refused a 12-buffer pipeline),
/// so the wasm build keeps the conv and the plain rule (8 buffers) two launches whatever the
/// adapter reports.
pub fn fits<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    x: &DeltaRule<Cube<R, F, I, BT>>,
    (state, weight): &(Tensor<Cube<R, F, I, BT>, 2>, Tensor<Cube<R, F, I, BT>, 2>),
) -> bool {
    let dtype = x.qkv.dtype();
    let ([t, width], [lag, c], [taps, cw]) = (x.qkv.dims(), state.dims(), weight.dims());
    let bindings = R::client(&x.qkv.device()).properties().hardware.max_bindings;
    lag > 0
        && t > 0
        && taps == lag + 1
        && c == width
        && cw == width
        && state.dtype() == dtype
        && weight.dtype() == dtype
        && bindings >= CONV_BINDINGS
        && !cfg!(target_family = "wasm")
}

/// The convolution (+ SiLU) of the raw projection and the delta rule in one kernel: each cube
/// convolves the channels its head reads as it reads them, token by token; returns `o`, the f32
/// state and the new conv state (in `qkv`'s dtype); `o` is written into its rows of `into` when
/// given. The caller checks [`fits`].
pub fn conv_delta_rule<R, F, I, BT>(
    x: DeltaRule<Cube<R, F, I, BT>>,
    conv: (Tensor<Cube<R, F, I, BT>, 2>, Tensor<Cube<R, F, I, BT>, 2>),
    norm: Option<GatedNorm<Cube<R, F, I, BT>>>,
    into: Option<PackedOut<Cube<R, F, I, BT>>>,
) -> (Tensor<Cube<R, F, I, BT>, 3>, Tensor<Cube<R, F, I, BT>, 3>, Tensor<Cube<R, F, I, BT>, 2>)
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let (o, state, conv_state) = launch(x, Some(conv), norm, into);
    (o, state, conv_state.expect("a conv state where a conv was given"))
}

/// The kernel over `x`, after the conv (`state`, `weight`) when given, writing `o` into its rows
/// of `into` when given (in place; a pack that shares its buffer is copied first).
#[allow(clippy::type_complexity)]
fn launch<R, F, I, BT>(
    x: DeltaRule<Cube<R, F, I, BT>>,
    conv: Option<(Tensor<Cube<R, F, I, BT>, 2>, Tensor<Cube<R, F, I, BT>, 2>)>,
    norm: Option<GatedNorm<Cube<R, F, I, BT>>>,
    into: Option<PackedOut<Cube<R, F, I, BT>>>,
) -> (Tensor<Cube<R, F, I, BT>, 3>, Tensor<Cube<R, F, I, BT>, 3>, Option<Tensor<Cube<R, F, I, BT>, 2>>)
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let dtype = x.qkv.dtype();
    let [_, nv, dk, dv] = x.heads();
    let [t_len, width] = x.qkv.dims();
    // The gates and the norm's gate in `qkv`'s dtype (the projection gives them all in one).
    let projected = |t: Tensor<Cube<R, F, I, BT>, 2>| {
        contiguous(if t.dtype() == dtype { t } else { t.cast(dtype) }.into_primitive().tensor())
    };
    let (qkv, state) = (projected(x.qkv), f32_contiguous(x.state));
    let (ab, decay) = (projected(x.ab), f32_contiguous(x.decay));
    let (normed, eps) = (norm.is_some(), norm.as_ref().map_or(0.0, |n| n.eps as f32));
    let (z, w) = match norm {
        Some(n) => (projected(n.z), f32_contiguous(n.weight)),
        None => (unused(&qkv), unused(&qkv)),
    };
    let client = qkv.client.clone();
    let empty = |shape: Vec<usize>, dtype| empty_device_dtype(client.clone(), qkv.device.clone(), shape.into(), dtype);
    let conv = conv.map(|(state, weight)| {
        let lag = state.dims()[0];
        (projected(state), projected(weight), empty(vec![lag, width], dtype))
    });
    let (out, out_row) = output_rows(into, [t_len, nv, dv], dtype, &qkv);
    let state_out = empty(vec![nv, dk, dv], DType::F32);
    let units = dv.next_power_of_two();
    let (cubes, dim) = (CubeCount::Static(nv as u32, 1, 1), CubeDim::new_1d(units as u32));
    let [qkv, ab, decay, state, z, w] = [qkv, ab, decay, state, z, w].map(|t| t.into_tensor_arg());
    let (o, s) = (out.clone().into_tensor_arg(), state_out.clone().into_tensor_arg());
    let eps = eps.to_bits();
    match conv {
        Some((conv_state, conv_weight, conv_out)) => {
            let [c_state, c_weight, c_out] = [conv_state, conv_weight, conv_out.clone()].map(|t| t.into_tensor_arg());
            kernel::conv_delta_rule_kernel::launch::<R>(
                &client,
                cubes,
                dim,
                qkv,
                ab,
                decay,
                state,
                z,
                w,
                c_state,
                c_weight,
                o,
                s,
                c_out,
                out_row,
                dk,
                normed,
                units,
                eps,
                dtype.into(),
            );
            (tensor(out), tensor(state_out), Some(tensor(conv_out)))
        }
        None => {
            kernel::gated_delta_rule_kernel::launch::<R>(
                &client,
                cubes,
                dim,
                qkv,
                ab,
                decay,
                state,
                z,
                w,
                o,
                s,
                out_row,
                dk,
                normed,
                units,
                eps,
                dtype.into(),
            );
            (tensor(out), tensor(state_out), None)
        }
    }
}
