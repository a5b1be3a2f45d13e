//! Each row's largest values with their column ids, for sampling's read-back (docs/batching.md,
//! "Packed read-backs"): a sampled step then reads `2m + 1` values per row instead of the vocabulary.

pub(crate) mod cube;

/// Most candidates [`crate::RmasBackend::top_values`] takes per row (one cube's shared memory
/// holds its units' lists of this many).
pub const MAX_CANDIDATES: usize = 64;

/// Vocabularies up to this size have every id exact as an f32 (2^24), as the candidates carry them.
pub const MAX_F32_ID: usize = 1 << 24;

/// Whether `n` rows of `len` values have a device top `m`: `1 ≤ m ≤` [`MAX_CANDIDATES`], `m ≤ len
/// ≤` [`MAX_F32_ID`], and the rows fit one launch dimension.
pub fn fits(n: usize, len: usize, m: usize) -> bool {
    (1..=MAX_CANDIDATES).contains(&m) && m <= len && len <= MAX_F32_ID && (1..=u16::MAX as usize).contains(&n)
}

/// Host form of what [`crate::RmasBackend::top_values`] computes, for tests: the `m` largest of
/// `row` (larger first in `f32::total_cmp` order, the lower id first among equal values), then
/// their ids.
pub fn reference(row: &[f32], m: usize) -> Vec<f32> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    let top = &order[..m.min(row.len())];
    top.iter().map(|&i| row[i]).chain(top.iter().map(|&i| i as f32)).collect()
}
