//! cubecl kernels of the products over quantized blocks ([`crate::RmasBackend::quant_matmul`] on
//! CUDA, wgpu and WebGPU; docs/quantization.md, "On the GPU"), reading the device layout of
//! `device.rs`: for a few rows of activations (a decode step) or rows that must each take the
//! per-row path, one cube per weight row and [`ROWS_PER_CUBE`] activation rows sums the row's codes
//! times each `x` across its units; for more rows (a prompt), the blocks are decoded into a dense f32 matrix for one matmul
//! by the kernel that decodes looked-up rows (the embedding's).

use burn::tensor::ops::IntTensorOps;
use burn::tensor::{DType, FloatDType, Int, Tensor, TensorPrimitive};
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement, ops::numeric::empty_device_dtype};
use cubecl::prelude::{CubeCount, CubeDim};

use super::cpu::DOT_ROWS;
use super::{DeviceBlocks, DevicePart};
use crate::Rows;
use crate::cube_common::{Cube, ELEM_UNITS, MAX_CUBES, elementwise_cubes, f32_contiguous, tensor};

/// Units per cube of the product kernel (a power of two, for `cube_reduce`).
const UNITS: usize = 64;
/// Activation rows a cube of the product kernel takes: each weight word it reads serves them all.
const ROWS_PER_CUBE: usize = 8;

mod kernel {
    use cubecl::prelude::*;

    /// The code in bits `shift..shift + bits` of `word` (a nibble plus `bias`, or a signed byte).
    #[cube]
    fn code(word: u32, shift: u32, #[comptime] bits: u32, #[comptime] bias: i32) -> f32 {
        let raw = (word >> shift) & comptime!((1u32 << bits) - 1);
        if comptime!(bits == 4) {
            f32::cast_from(i32::cast_from(raw) + bias)
        } else {
            let v = i32::cast_from(raw);
            f32::cast_from(if v >= 128 { v - 256 } else { v })
        }
    }

    /// `out[m, col0 + r] = Σ_k x[m, k]·w[r, k]` for one run of rows: cube `(r, c)` (strided over
    /// `r`) takes activation rows `c·per_cube..` (up to `per_cube` of them), its units over the
    /// row's words. Each word is read and decoded once for all of them, and each row's sum runs in
    /// the same order whatever the rows beside it (a decode step's bits do not depend on the batch).
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub fn rows_dot_kernel(
        x: &Tensor<f32>,       // [M, K]
        words: &Tensor<u32>,   // [rows · K·bits/32]
        groups: &Tensor<f32>,  // [rows · K/group · 2]
        out: &mut Tensor<f32>, // [M, N ≥ col0 + rows]: this run's columns from col0 on
        col0: usize,
        #[comptime] units: usize,
        #[comptime] per_cube: usize,
        #[comptime] bits: u32,
        #[comptime] group: usize,
        #[comptime] bias: i32,
    ) {
        let (m_len, k_len) = (x.shape(0), x.shape(1));
        let n = out.shape(1);
        let m0 = CUBE_POS_Y as usize * per_cube;
        let per_word = comptime!(32 / bits as usize);
        let row_words = k_len / per_word;
        let row_groups = k_len / group;
        let rows = words.len() / row_words;
        let mut shared = SharedMemory::<f32>::new(comptime!(per_cube * units));
        let mut acc = Array::<f32>::new(per_cube);
        let mut r = CUBE_POS_X as usize;
        while r < rows {
            #[unroll]
            for j in 0..per_cube {
                acc[j] = 0.0f32;
            }
            let mut w = UNIT_POS_X as usize;
            while w < row_words {
                let word = words[r * row_words + w];
                let k0 = w * per_word;
                let at = (r * row_groups + k0 / group) * 2;
                let (scale, offset) = (groups[at], groups[at + 1]);
                #[unroll]
                for j in 0..per_cube {
                    let m = m0 + j;
                    if m < m_len {
                        let mut dot = 0.0f32;
                        let mut sum = 0.0f32;
                        #[unroll]
                        for i in 0..per_word {
                            let xv = x[m * k_len + k0 + i];
                            dot += code(word, comptime!((i as u32) * bits), bits, bias) * xv;
                            sum += xv;
                        }
                        acc[j] += scale * dot + offset * sum;
                    }
                }
                w += units;
            }
            // Each row's partial sums added over the units as `cube_common::cube_reduce` adds one
            // value's, every row in the same tree steps.
            let u = UNIT_POS_X as usize;
            #[unroll]
            for j in 0..per_cube {
                shared[j * units + u] = acc[j];
            }
            sync_cube();
            let mut stride = (CUBE_DIM_X / 2) as usize;
            while stride > 0 {
                if u < stride {
                    #[unroll]
                    for j in 0..per_cube {
                        let other = shared[j * units + u + stride];
                        shared[j * units + u] += other;
                    }
                }
                sync_cube();
                stride /= 2;
            }
            if u < per_cube && m0 + u < m_len {
                out[(m0 + u) * n + col0 + r] = shared[u * units];
            }
            sync_cube();
            r += CUBE_COUNT_X as usize;
        }
    }

    /// The rows `ids` of one run of rows decoded into `out` `[T, K]`, a word per step: `ids` `[T]`
    /// holds row indices as f32 values, counted from the run's first row; the others' rows are left
    /// to their runs' launches.
    #[cube(launch)]
    pub fn gather_kernel(
        ids: &Tensor<f32>,
        words: &Tensor<u32>,
        groups: &Tensor<f32>,
        out: &mut Tensor<f32>, // [T, K]
        #[comptime] bits: u32,
        #[comptime] group: usize,
        #[comptime] bias: i32,
    ) {
        let k_len = out.shape(1);
        let per_word = comptime!(32 / bits as usize);
        let row_words = k_len / per_word;
        let run_rows = words.len() / row_words;
        let step = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
        let mut at_out = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
        while at_out < ids.len() * row_words {
            let (t, w) = (at_out / row_words, at_out % row_words);
            let id = ids[t];
            if id >= 0.0 && id < f32::cast_from(run_rows) {
                let r = u32::cast_from(id) as usize;
                let word = words[r * row_words + w];
                let k = w * per_word;
                let at = (r * (k_len / group) + k / group) * 2;
                #[unroll]
                for i in 0..per_word {
                    out[t * k_len + k + i] =
                        code(word, comptime!((i as u32) * bits), bits, bias) * groups[at] + groups[at + 1];
                }
            }
            at_out += step;
        }
    }
}

/// `x·wᵀ` `[M, N]` in `x`'s dtype for activations `x` `[M, K]` and a matrix on this device, in f32:
/// the row kernel for up to [`DOT_ROWS`] rows or any number of [`Rows::PerRow`] rows (each output
/// then sums in the same order whatever the count), else the decoded matrix through one matmul
/// (below 2^24 weight rows, which the decode names by f32 values; the row kernel above that).
pub fn matmul<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    x: Tensor<Cube<R, F, I, BT>, 2>,
    w: &DeviceBlocks<Cube<R, F, I, BT>>,
    rows: Rows,
) -> Tensor<Cube<R, F, I, BT>, 2> {
    let ([m, k], dtype) = (x.dims(), x.dtype());
    assert_eq!(k, w.cols, "product of [{m}, {k}] by a quantized matrix of {} columns", w.cols);
    // The decode below names rows by f32 values, exact below 2^24 rows.
    let per_row = m <= DOT_ROWS || rows == Rows::PerRow || w.rows() >= 1 << f32::MANTISSA_DIGITS;
    if !per_row {
        // [N, K] f32: every row decoded, multiplied as a dense weight is (strict f32 where asked: no TF32).
        let all = Tensor::<Cube<R, F, I, BT>, 1, Int>::arange(0..w.rows() as i64, &x.device()).into_primitive();
        let all =
            Tensor::from_primitive(TensorPrimitive::Float(Cube::<R, F, I, BT>::int_into_float(all, FloatDType::F32)));
        let dense = lookup_rows(w, all);
        let x = crate::f32_of(x);
        let out = crate::linear::cube::strict_product(x.clone(), dense.clone())
            .unwrap_or_else(|| crate::linear::reference(x, dense, true));
        return out.cast(dtype);
    }
    let x = f32_contiguous(x);
    // A decode step of one row compiles the one-row kernel; each row's sums are the same in all.
    let per_cube = m.clamp(1, ROWS_PER_CUBE);
    // Each run of rows writes its columns of the one output: a launch per run, no copy after.
    let out = empty_device_dtype(x.client.clone(), x.device.clone(), [m, w.rows()].into(), DType::F32);
    let mut col0 = 0;
    for p in &w.parts {
        if m > 0 && p.rows > 0 {
            let (words, groups) = part_args::<R, F, I, BT>(p);
            kernel::rows_dot_kernel::launch::<R>(
                &x.client,
                CubeCount::Static(p.rows.min(MAX_CUBES) as u32, m.div_ceil(per_cube) as u32, 1),
                CubeDim::new_1d(UNITS as u32),
                x.clone().into_tensor_arg(),
                words.into_tensor_arg(),
                groups.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                col0,
                UNITS,
                per_cube,
                p.format.code_bits(),
                p.format.group(),
                p.format.code_bias(),
            );
        }
        col0 += p.rows;
    }
    tensor::<R, F, I, BT, 2>(out).cast(dtype)
}

/// Rows `ids` `[T]` (row indices as f32 values) of a matrix on this device, decoded: `[T, K]` f32.
pub fn lookup_rows<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    w: &DeviceBlocks<Cube<R, F, I, BT>>,
    ids: Tensor<Cube<R, F, I, BT>, 1>,
) -> Tensor<Cube<R, F, I, BT>, 2> {
    let t = ids.dims()[0];
    let ids = crate::f32_of(ids);
    let device = ids.device();
    let out = empty_device_dtype(R::client(&device), device, [t, w.cols].into(), DType::F32);
    let mut first = 0;
    for p in &w.parts {
        // Each run writes the rows of the ids in its range, counted from its first row.
        let local = f32_contiguous(if first == 0 { ids.clone() } else { ids.clone().sub_scalar(first as f32) });
        let (words, groups) = part_args::<R, F, I, BT>(p);
        let n = t * w.cols * p.format.code_bits() as usize / 32;
        if n > 0 && p.rows > 0 {
            kernel::gather_kernel::launch::<R>(
                &local.client.clone(),
                elementwise_cubes(n),
                CubeDim::new_1d(ELEM_UNITS as u32),
                local.into_tensor_arg(),
                words.into_tensor_arg(),
                groups.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                p.format.code_bits(),
                p.format.group(),
                p.format.code_bias(),
            );
        }
        first += p.rows;
    }
    tensor(out)
}

/// A part's words and groups as kernel arguments.
fn part_args<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    p: &DevicePart<Cube<R, F, I, BT>>,
) -> (burn_cubecl::tensor::CubeTensor<R>, burn_cubecl::tensor::CubeTensor<R>) {
    (p.words.clone().into_primitive().tensor(), p.groups.clone().into_primitive().tensor())
}
