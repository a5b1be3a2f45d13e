//! Host↔device traffic of the model code: every host read-back ([`crate::generate::read_back`])
//! and every upload of host data ([`upload`]) is counted here, so `rmas bench --json` can report
//! reads and uploads per decoded token and a test can hold them to a budget (docs/performance.md).

use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::{Tensor, TensorData, TensorKind, backend::Backend};

static READS: AtomicU64 = AtomicU64::new(0);
static UPLOADS: AtomicU64 = AtomicU64::new(0);
static READ_BYTES: AtomicU64 = AtomicU64::new(0);

/// Host reads and uploads counted since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Tensors read back to the host.
    pub reads: u64,
    /// Host buffers copied to the device.
    pub uploads: u64,
    /// Bytes of the tensors read back.
    pub read_bytes: u64,
}

/// The counts so far (process-wide).
pub fn traffic() -> Traffic {
    Traffic {
        reads: READS.load(Ordering::Relaxed),
        uploads: UPLOADS.load(Ordering::Relaxed),
        read_bytes: READ_BYTES.load(Ordering::Relaxed),
    }
}

/// Counts one read-back of `bytes`.
pub(crate) fn count_read(bytes: usize) {
    READS.fetch_add(1, Ordering::Relaxed);
    READ_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
}

/// Copies `data` to `device` as a tensor, counting one upload.
pub(crate) fn upload<B: Backend, const D: usize, K: TensorKind<B> + burn::tensor::BasicOps<B>>(
    data: TensorData,
    device: &B::Device,
) -> Tensor<B, D, K> {
    UPLOADS.fetch_add(1, Ordering::Relaxed);
    Tensor::from_data(data, device)
}
