//! Block-quantized weight matrices (docs/quantization.md): ggml's Q8_0, Q4_0 and Q4_1 blocks of 32
//! weights and its Q4_K, Q5_K and Q6_K super-blocks of 256 along a row, kept as a GGUF file stores
//! them or made at load (`--quantize`: the 32-weight formats), and decoded inside the products
//! ([`crate::RmasBackend::quant_matmul`]), so that a decode step reads the blocks (4.5–8.5 bits a
//! weight) instead of f32 copies.
//!
//! The encoders are ggml's reference quantizers (`quantize_row_q*_ref`), the decoders its
//! `dequantize_row_q*`: a file rmas quantizes holds the blocks llama.cpp would write.

use std::borrow::Cow;
use std::fmt;

use half::f16;
use rayon::prelude::*;

pub(crate) mod cpu;
pub mod cube;
mod device;

pub use device::{DeviceBlocks, DevicePart};

/// Weights per block of the 32-weight formats (Q8_0, Q4_0, Q4_1), the unit `--quantize` makes.
pub const BLOCK: usize = 32;
/// Weights per super-block of the K-quants, the most any format's block holds.
pub const SUPER_BLOCK: usize = 256;

/// One of ggml's block formats: a block of [`BlockFormat::block_weights`] weights along a row,
/// its codes and its f16 scales.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockFormat {
    /// `d`, 32 signed bytes: `w = q·d`.
    Q8_0,
    /// `d`, 16 bytes of nibbles: `w = (q − 8)·d`.
    Q4_0,
    /// `d`, minimum `m`, 16 bytes of nibbles: `w = q·d + m`.
    Q4_1,
    /// `d`, `dmin`, 12 bytes of 6-bit scales `s` and mins `m` for 8 sub-blocks of 32, 128 bytes of
    /// nibbles: `w = d·s·q − dmin·m`.
    Q4K,
    /// Q4_K's layout with a fifth bit per weight (32 bytes of high bits before the nibbles).
    Q5K,
    /// 128 bytes of low nibbles, 64 of high bit pairs, 16 signed 8-bit scales `s` for sub-blocks of
    /// 16, `d`: `w = d·s·(q − 32)` with 6-bit `q`.
    Q6K,
}

impl BlockFormat {
    /// Every format, the 32-weight ones first.
    pub const ALL: [Self; 6] = [Self::Q8_0, Self::Q4_0, Self::Q4_1, Self::Q4K, Self::Q5K, Self::Q6K];

    /// Weights per block: 32, or 256 for the K-quants.
    pub const fn block_weights(self) -> usize {
        match self {
            Self::Q8_0 | Self::Q4_0 | Self::Q4_1 => BLOCK,
            Self::Q4K | Self::Q5K | Self::Q6K => SUPER_BLOCK,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            Self::Q8_0 => 34,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }

    /// ggml's name of the format.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Q8_0 => "Q8_0",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
        }
    }

    /// Whether [`QuantMatrix::quantize`] makes this format (rmas has ggml's reference encoders of
    /// the 32-weight formats only; K-quants come from GGUF files).
    pub const fn quantizes(self) -> bool {
        self.block_weights() == BLOCK
    }

    /// Weights per group sharing one scale and offset in [`Self::unpack`]: 16 for Q6_K, else 32.
    pub const fn group(self) -> usize {
        match self {
            Self::Q6K => 16,
            _ => 32,
        }
    }

    /// Bits per code in the device layout ([`QuantMatrix::on_device`]): 4 where every code is one of 16
    /// values from [`Self::code_bias`], else 8 (a signed byte).
    pub const fn code_bits(self) -> u32 {
        match self {
            Self::Q4_0 | Self::Q4_1 | Self::Q4K => 4,
            Self::Q8_0 | Self::Q5K | Self::Q6K => 8,
        }
    }

    /// Bits per weight of the device layout: the codes and an f32 scale and offset per group (6 for
    /// the 4-bit formats, 10 for Q8_0/Q5_K, 12 for Q6_K).
    pub const fn device_bits_per_weight(self) -> usize {
        self.code_bits() as usize + 64 / self.group()
    }

    /// The smallest code of a 4-bit format (Q4_0's −8; 0 for the others): a stored nibble is the code
    /// minus this.
    pub const fn code_bias(self) -> i32 {
        match self {
            Self::Q4_0 => -8,
            _ => 0,
        }
    }

    /// One block (`block_bytes()` long) as its integer codes (`block_weights()` of them) and, per
    /// [`Self::group`], `(scale, offset)`: weight `i` is `codes[i]·scale + offset` of its group, in
    /// that order of operations, which gives ggml's `dequantize_row_*` bit for bit. The first 16
    /// codes of a Q4_0/Q4_1 block are the low nibbles, the last 16 the high ones.
    #[inline(always)]
    pub fn unpack(self, b: &[u8], codes: &mut [i8], groups: &mut [(f32, f32)]) {
        assert_eq!(b.len(), self.block_bytes(), "one {self} block");
        assert_eq!((codes.len(), groups.len() * self.group()), (self.block_weights(), self.block_weights()));
        match self {
            Self::Q8_0 => {
                groups[0] = (f16_at(b, 0), 0.0);
                for (c, &q) in codes.iter_mut().zip(&b[2..34]) {
                    *c = q as i8;
                }
            }
            Self::Q4_0 | Self::Q4_1 => {
                let (qs, group) = match self {
                    Self::Q4_0 => (&b[2..18], (f16_at(b, 0), 0.0)),
                    _ => (&b[4..20], (f16_at(b, 0), f16_at(b, 2))),
                };
                groups[0] = group;
                let bias = self.code_bias() as i8;
                let (lo, hi) = codes.split_at_mut(16);
                for j in 0..16 {
                    lo[j] = (qs[j] & 0xF) as i8 + bias;
                    hi[j] = (qs[j] >> 4) as i8 + bias;
                }
            }
            Self::Q4K | Self::Q5K => {
                let (d, dmin, scales) = (f16_at(b, 0), f16_at(b, 2), &b[4..16]);
                let (qh, ql) = if self == Self::Q5K { (Some(&b[16..48]), &b[48..176]) } else { (None, &b[16..144]) };
                // Sub-blocks 2j and 2j + 1 are the low and high nibbles of bytes 32j..32j + 32.
                for (sub, codes) in codes.chunks_exact_mut(32).enumerate() {
                    let (sc, m) = scale_min_k4(sub, scales);
                    groups[sub] = (d * sc as f32, -(dmin * m as f32));
                    let ql = &ql[32 * (sub / 2)..32 * (sub / 2 + 1)];
                    for (l, c) in codes.iter_mut().enumerate() {
                        let nibble = if sub % 2 == 0 { ql[l] & 0xF } else { ql[l] >> 4 };
                        let high = qh.map_or(0, |qh| ((qh[l] >> sub) & 1) << 4);
                        *c = (nibble | high) as i8;
                    }
                }
            }
            Self::Q6K => {
                let (ql, qh, sc, d) = (&b[0..128], &b[128..192], &b[192..208], f16_at(b, 208));
                for (g, group) in groups.iter_mut().enumerate() {
                    *group = (d * sc[g] as i8 as f32, 0.0);
                }
                // Each half of 128: codes 32i + l take nibble i / 2 of byte 32·(i % 2) + l and bit
                // pair i of high byte l, less 32.
                for (n, codes) in codes.chunks_exact_mut(128).enumerate() {
                    let (ql, qh) = (&ql[64 * n..], &qh[32 * n..]);
                    for (i, codes) in codes.chunks_exact_mut(32).enumerate() {
                        for (l, c) in codes.iter_mut().enumerate() {
                            let low = if i < 2 { ql[32 * i + l] & 0xF } else { ql[32 * (i - 2) + l] >> 4 };
                            *c = (low | (((qh[l] >> (2 * i)) & 3) << 4)) as i8 - 32;
                        }
                    }
                }
            }
        }
    }

    /// Decodes one block (`block_bytes()` long) into its `block_weights()` weights, as ggml's
    /// `dequantize_row_*` ([`Self::unpack`]).
    #[inline(always)]
    pub fn decode(self, b: &[u8], out: &mut [f32]) {
        let (n, g) = (self.block_weights(), self.group());
        let mut codes = [0i8; SUPER_BLOCK];
        let mut groups = [(0f32, 0f32); SUPER_BLOCK / 16];
        self.unpack(b, &mut codes[..n], &mut groups[..n / g]);
        for (i, o) in out[..n].iter_mut().enumerate() {
            let (scale, offset) = groups[i / g];
            *o = codes[i] as f32 * scale + offset;
        }
    }

    /// Encodes 32 weights into one block (`out` `block_bytes()` long), as ggml's reference quantizer;
    /// only formats that [`Self::quantizes`].
    fn encode(self, x: &[f32], out: &mut [u8]) {
        let x: &[f32; BLOCK] = x.try_into().expect("a block of 32 weights");
        let inverse = |d: f32| if d != 0.0 { 1.0 / d } else { 0.0 };
        match self {
            Self::Q8_0 => {
                let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = inverse(d);
                out[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
                for (o, v) in out[2..34].iter_mut().zip(x) {
                    *o = (v * id).round() as i8 as u8;
                }
            }
            Self::Q4_0 => {
                // The weight of largest magnitude, with its sign, maps to −8.
                let max = x.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                let d = max / -8.0;
                let id = inverse(d);
                out[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
                let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
                for j in 0..16 {
                    out[2 + j] = q(x[j]) | (q(x[16 + j]) << 4);
                }
            }
            Self::Q4_1 => {
                let (min, max) = x.iter().fold((f32::MAX, -f32::MAX), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                let d = (max - min) / 15.0;
                let id = inverse(d);
                out[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
                out[2..4].copy_from_slice(&f16::from_f32(min).to_le_bytes());
                let q = |v: f32| (((v - min) * id + 0.5) as i8).min(15) as u8;
                for j in 0..16 {
                    out[4 + j] = q(x[j]) | (q(x[16 + j]) << 4);
                }
            }
            Self::Q4K | Self::Q5K | Self::Q6K => unreachable!("QuantMatrix::quantize refuses {self}"),
        }
    }
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (of 8) of a Q4_K/Q5_K block,
/// from its 12 bytes of packed scales.
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

impl fmt::Display for BlockFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The little-endian f16 at byte `at`, as f32.
#[inline(always)]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Consecutive rows of a [`QuantMatrix`] in one format.
#[derive(Clone)]
struct Part {
    format: BlockFormat,
    rows: usize,
    /// `rows × cols/32` blocks, row by row.
    blocks: Vec<u8>,
}

impl Part {
    /// Appends `rows` rows of `format` blocks to `parts`: onto the last run where it has that
    /// format (one run, one product launch on a device), else as a new run.
    fn append(parts: &mut Vec<Part>, format: BlockFormat, rows: usize, blocks: Cow<[u8]>) {
        match parts.last_mut() {
            Some(last) if last.format == format => {
                last.blocks.extend_from_slice(&blocks);
                last.rows += rows;
            }
            _ => parts.push(Part { format, rows, blocks: blocks.into_owned() }),
        }
    }
}

/// A `[rows, cols]` weight matrix (HF's `[out, in]`) held as blocks along each row. Runs of rows may
/// differ in format: a fused projection concatenates layers a GGUF file stored in different types.
#[derive(Clone)]
pub struct QuantMatrix {
    cols: usize,
    parts: Vec<Part>,
    /// Copies on devices ([`QuantMatrix::on_device`]).
    device: device::DeviceCopies,
    /// Whether `parts` hold their blocks; `false` once [`QuantMatrix::released_to`] a device.
    host: bool,
}

impl fmt::Debug for QuantMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QuantMatrix([{}, {}], {})", self.rows(), self.cols, self.formats())
    }
}

impl QuantMatrix {
    /// A matrix of `parts`, with no device copies yet.
    fn new(cols: usize, parts: Vec<Part>) -> Self {
        Self { cols, parts, device: Default::default(), host: true }
    }

    /// A matrix over stored blocks; `None` unless `cols` is a whole number of blocks and `blocks`
    /// holds exactly `rows` rows of them.
    pub fn from_blocks(format: BlockFormat, rows: usize, cols: usize, blocks: Vec<u8>) -> Option<Self> {
        let expected = rows.checked_mul(cols / format.block_weights())?.checked_mul(format.block_bytes())?;
        (cols.is_multiple_of(format.block_weights()) && blocks.len() == expected)
            .then(|| Self::new(cols, vec![Part { format, rows, blocks }]))
    }

    /// Quantizes row-major `values` `[rows, cols]`; `None` unless the format [`BlockFormat::quantizes`]
    /// and `cols` is a whole number of its blocks.
    pub fn quantize(format: BlockFormat, values: &[f32], rows: usize, cols: usize) -> Option<Self> {
        if !format.quantizes() || !cols.is_multiple_of(BLOCK) || values.len() != rows.checked_mul(cols)? {
            return None;
        }
        let mut blocks = vec![0u8; rows * cols / BLOCK * format.block_bytes()];
        blocks.par_chunks_mut(format.block_bytes() * 1024).zip(values.par_chunks(BLOCK * 1024)).for_each(|(out, x)| {
            for (o, x) in out.chunks_exact_mut(format.block_bytes()).zip(x.chunks_exact(BLOCK)) {
                format.encode(x, o);
            }
        });
        Some(Self::new(cols, vec![Part { format, rows, blocks }]))
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.parts.iter().map(|p| p.rows).sum()
    }

    /// Input columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of the blocks (as stored, whether or not the host still holds them).
    pub fn bytes(&self) -> usize {
        self.parts.iter().map(|p| p.rows * self.cols / p.format.block_weights() * p.format.block_bytes()).sum()
    }

    /// Whether the host holds the blocks; where not, only a device copy multiplies
    /// ([`QuantMatrix::released_to`]).
    pub fn on_host(&self) -> bool {
        self.host
    }

    /// The formats of the row runs, `Q4_1` or `Q4_1+Q8_0`.
    pub fn formats(&self) -> String {
        self.format_names().collect::<Vec<_>>().join("+")
    }

    /// The names of the row runs' formats, in order, each run once.
    pub fn format_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        let mut last = None;
        self.parts.iter().map(|p| p.format.name()).filter(move |&name| last.replace(name) != Some(name))
    }

    /// The format and all blocks, row after row, when every row has the same format.
    pub fn single_format(&self) -> Option<(BlockFormat, &[u8])> {
        match self.parts.as_slice() {
            [part] if self.host => Some((part.format, &part.blocks)),
            _ => None,
        }
    }

    /// The format and blocks of row `r`. Panics where the host no longer holds them
    /// ([`QuantMatrix::on_host`]).
    pub fn row_blocks(&self, mut r: usize) -> (BlockFormat, &[u8]) {
        assert!(self.host, "{self:?}: the host blocks were released to a device");
        for p in &self.parts {
            if r < p.rows {
                let bytes = self.cols / p.format.block_weights() * p.format.block_bytes();
                return (p.format, &p.blocks[r * bytes..(r + 1) * bytes]);
            }
            r -= p.rows;
        }
        panic!("row {r} past the matrix's {} rows", self.rows())
    }

    /// Decodes row `r` into `out` (`cols` long).
    #[inline(always)]
    pub fn decode_row(&self, r: usize, out: &mut [f32]) {
        let (format, blocks) = self.row_blocks(r);
        for (b, o) in blocks.chunks_exact(format.block_bytes()).zip(out.chunks_exact_mut(format.block_weights())) {
            format.decode(b, o);
        }
    }

    /// The rows `rows` decoded, row-major `[rows.len(), cols]`.
    pub fn dequantize_rows(&self, rows: impl IntoIterator<Item = usize>) -> Vec<f32> {
        let rows: Vec<usize> = rows.into_iter().collect();
        let mut out = vec![0f32; rows.len() * self.cols];
        out.par_chunks_mut(self.cols).zip(rows).for_each(|(o, r)| self.decode_row(r, o));
        out
    }

    /// The whole matrix decoded, row-major `[rows, cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        self.dequantize_rows(0..self.rows())
    }

    /// The matrix whose row `i` is this one's row `order[i]` (all `< rows()`).
    pub fn select_rows(&self, order: &[usize]) -> Self {
        let mut parts: Vec<Part> = Vec::new();
        for &r in order {
            let (format, blocks) = self.row_blocks(r);
            Part::append(&mut parts, format, 1, Cow::Borrowed(blocks));
        }
        Self::new(self.cols, parts)
    }

    /// The matrix with its columns in `order` (column `c` is this matrix's column `order[c]`), moving
    /// whole blocks; `None` unless every block's columns stay together and in order.
    pub fn select_column_blocks(&self, order: &[usize]) -> Option<Self> {
        if order.len() != self.cols || !self.host {
            return None;
        }
        let parts = self.parts.iter().map(|p| {
            let (width, size) = (p.format.block_weights(), p.format.block_bytes());
            let blocks: Vec<usize> = order
                .chunks(width)
                .map(|run| {
                    let whole = run[0].is_multiple_of(width) && run.iter().enumerate().all(|(i, &c)| c == run[0] + i);
                    whole.then_some(run[0] / width)
                })
                .collect::<Option<_>>()?;
            let row = self.cols / width * size;
            let bytes =
                p.blocks.chunks_exact(row).flat_map(|r| blocks.iter().flat_map(move |&b| &r[b * size..(b + 1) * size]));
            Some(Part { format: p.format, rows: p.rows, blocks: bytes.copied().collect() })
        });
        Some(Self::new(self.cols, parts.collect::<Option<_>>()?))
    }

    /// The matrices stacked row-wise (their outputs side by side), adjacent runs of one format
    /// merged into one (a fused projection quantized in one format is one run: one product launch
    /// on a device); `None` unless all have the same number of columns (each already a whole number
    /// of its formats' blocks) and hold their blocks on the host.
    pub fn concat(matrices: Vec<Self>) -> Option<Self> {
        let cols = matrices.first()?.cols;
        if matrices.iter().any(|m| m.cols != cols || !m.host) {
            return None;
        }
        let mut parts: Vec<Part> = Vec::new();
        for part in matrices.into_iter().flat_map(|m| m.parts) {
            Part::append(&mut parts, part.format, part.rows, Cow::Owned(part.blocks));
        }
        Some(Self::new(cols, parts))
    }
}
