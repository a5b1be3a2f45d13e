//! A [`QuantMatrix`] on a device (docs/quantization.md, "On the GPU"): every block format repacked
//! into one layout the cubecl kernels (`cube.rs`) read. Per run of rows in one format:
//!
//! * `words`: the codes along each row, [`BlockFormat::code_bits`] each (4 or 8) in u32 words,
//!   weight `k` of a row in word `k·bits/32` at bit `k·bits mod 32`; a nibble holds the code less
//!   [`BlockFormat::code_bias`], a byte the signed code. Kept in an f32 tensor bit for bit (burn's
//!   float tensors are the ones every backend, fusion included, hands to custom kernels).
//! * `groups`: `(scale, offset)` in f32 per [`BlockFormat::group`] of each row, so that a weight is
//!   `code·scale + offset` ([`BlockFormat::unpack`]).
//!
//! 4-bit formats take 6 bits a weight this way, Q8_0/Q5_K 10 and Q6_K 12 (the scales widened to f32
//! so that Q4_K/Q5_K/Q6_K's products of two scales stay exact).

use std::any::Any;
use std::sync::{Arc, Mutex};

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

use super::{BlockFormat, Part, QuantMatrix, SUPER_BLOCK};

/// One run of rows in one format, on a device.
#[derive(Clone, Debug)]
pub struct DevicePart<B: Backend> {
    pub format: BlockFormat,
    pub rows: usize,
    /// `[rows · cols·bits/32]` u32 words of codes, as f32 bit patterns.
    pub words: Tensor<B, 1>,
    /// `[rows · cols/group · 2]`: `(scale, offset)` per group, row after row.
    pub groups: Tensor<B, 1>,
}

/// A `[rows, cols]` quantized matrix on a device: its runs of rows in order.
#[derive(Clone, Debug)]
pub struct DeviceBlocks<B: Backend> {
    pub cols: usize,
    pub parts: Vec<DevicePart<B>>,
}

/// The device copies of one [`QuantMatrix`] made so far (one per backend type and device), shared by
/// its clones.
#[derive(Clone, Default)]
pub(super) struct DeviceCopies(Arc<Mutex<Vec<Arc<dyn Any + Send + Sync>>>>);

impl QuantMatrix {
    /// This matrix on `device` in the layout the cubecl kernels read: uploaded on the first call for
    /// a backend and device, the same copy after.
    pub fn on_device<B: Backend>(&self, device: &B::Device) -> Arc<DeviceBlocks<B>> {
        let mut copies = self.device.0.lock().unwrap_or_else(|e| e.into_inner());
        let found = copies.iter().find_map(|c| {
            let c = Arc::clone(c).downcast::<DeviceBlocks<B>>().ok()?;
            (c.parts.first().is_none_or(|p| p.words.device() == *device)).then_some(c)
        });
        if let Some(found) = found {
            return found;
        }
        assert!(self.host, "{self:?}: the host blocks were released to another device");
        let parts = self.parts.iter().map(|p| upload::<B>(p, self.cols, device)).collect();
        let copy = Arc::new(DeviceBlocks { cols: self.cols, parts });
        copies.push(copy.clone());
        copy
    }

    /// This matrix with its copy on `device` (uploaded now where not yet) and no blocks on the host:
    /// what a GPU backend keeps of a loaded model, so that the host (wasm32's 4 GiB above all) does
    /// not hold every weight twice. Only [`Self::on_device`] for `device` reads the result.
    pub fn released_to<B: Backend>(&self, device: &B::Device) -> Self {
        drop(self.on_device::<B>(device));
        let parts = self.parts.iter().map(|p| Part { format: p.format, rows: p.rows, blocks: Vec::new() }).collect();
        Self { cols: self.cols, parts, device: self.device.clone(), host: false }
    }
}

/// `part` repacked ([`pack`]) and copied to `device`.
fn upload<B: Backend>(part: &Part, cols: usize, device: &B::Device) -> DevicePart<B> {
    let (words, groups) = pack(part, cols);
    let f32s = |bytes: Vec<u8>| {
        let n = bytes.len() / 4;
        Tensor::<B, 1>::from_data(TensorData::from_bytes_vec(bytes, [n], DType::F32), (device, DType::F32))
    };
    let words = f32s(words.iter().flat_map(|w| w.to_le_bytes()).collect());
    let groups = f32s(groups.iter().flat_map(|g| g.to_le_bytes()).collect());
    DevicePart { format: part.format, rows: part.rows, words, groups }
}

/// A run of rows as the device layout's words and groups (see the module's comment).
pub(super) fn pack(part: &Part, cols: usize) -> (Vec<u32>, Vec<f32>) {
    let format = part.format;
    let (bits, n, g) = (format.code_bits() as usize, format.block_weights(), format.group());
    let (row_words, row_groups, row_bytes) = (cols * bits / 32, cols / g * 2, cols / n * format.block_bytes());
    let mut words = vec![0u32; part.rows * row_words];
    let mut groups = vec![0f32; part.rows * row_groups];
    let rows = words.par_chunks_mut(row_words.max(1)).zip(groups.par_chunks_mut(row_groups.max(1)));
    rows.zip(part.blocks.par_chunks(row_bytes.max(1))).for_each(|((words, groups), blocks)| {
        let (mut codes, mut scales) = ([0i8; SUPER_BLOCK], [(0f32, 0f32); SUPER_BLOCK / 16]);
        for (b, block) in blocks.chunks_exact(format.block_bytes()).enumerate() {
            format.unpack(block, &mut codes[..n], &mut scales[..n / g]);
            for (j, (scale, offset)) in scales[..n / g].iter().enumerate() {
                groups[2 * (b * n / g + j)..][..2].copy_from_slice(&[*scale, *offset]);
            }
            for (i, &code) in codes[..n].iter().enumerate() {
                let k = b * n + i;
                let stored = match bits {
                    4 => (code as i32 - format.code_bias()) as u32,
                    _ => code as u8 as u32,
                };
                words[k * bits / 32] |= stored << (k * bits % 32);
            }
        }
    });
    (words, groups)
}

impl<B: Backend> DeviceBlocks<B> {
    /// Output rows.
    pub fn rows(&self) -> usize {
        self.parts.iter().map(|p| p.rows).sum()
    }

    /// The matrix `[rows, cols]` decoded on the host from this copy's words and groups, row-major:
    /// the layout's definition in plain loops.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::new();
        for p in &self.parts {
            let bytes = |t: &Tensor<B, 1>| t.to_data().into_bytes();
            let words: Vec<u32> =
                bytes(&p.words).chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().expect("4"))).collect();
            let groups: Vec<f32> =
                bytes(&p.groups).chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4"))).collect();
            let (bits, g) = (p.format.code_bits() as usize, p.format.group());
            for r in 0..p.rows {
                for k in 0..self.cols {
                    let raw = words[(r * self.cols + k) * bits / 32] >> ((k * bits) % 32) & ((1 << bits) - 1);
                    let code = match bits {
                        4 => raw as i32 + p.format.code_bias(),
                        _ => raw as u8 as i8 as i32,
                    };
                    let at = 2 * (r * self.cols / g + k / g);
                    out.push(code as f32 * groups[at] + groups[at + 1]);
                }
            }
        }
        out
    }
}
