//! Choosing the compute backend and dtype at run time.

use anyhow::{Result, bail};
use burn::tensor::DType;
use clap::{Args, ValueEnum};
use rmas_models::RmasBackend;

/// Where tensors live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// CUDA if this build has it, else the CPU.
    Auto,
    /// The CPU reference backend (ndarray).
    Cpu,
    /// wgpu: Vulkan/Metal/DX12, or lavapipe on machines without a GPU.
    Wgpu,
    /// NVIDIA GPUs (build with `--features cuda`).
    Cuda,
}

/// Compute precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    F32,
    F16,
    Bf16,
}

impl Precision {
    /// The burn dtype.
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
        }
    }
}

/// Backend and dtype flags shared by every command.
#[derive(Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Compute backend.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendKind,
    /// Compute dtype of the agents (recurrent state stays f32); the CPU backend supports f32 only.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: Precision,
}

/// Work that runs on any backend.
pub trait Job {
    /// Runs on backend `B`.
    fn run<B: RmasBackend>(self, device: B::Device) -> Result<()>;
}

/// Dispatches `job` to the backend chosen by `args`.
pub fn dispatch(args: &DeviceArgs, job: impl Job) -> Result<()> {
    let kind = match args.backend {
        BackendKind::Auto if cfg!(feature = "cuda") => BackendKind::Cuda,
        BackendKind::Auto => BackendKind::Cpu,
        other => other,
    };
    match kind {
        BackendKind::Cpu => job.run::<burn::backend::NdArray>(Default::default()),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => job.run::<burn::backend::Wgpu>(Default::default()),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => job.run::<burn::backend::Cuda>(Default::default()),
        #[allow(unreachable_patterns)]
        other => bail!(
            "this rmas was built without the {other:?} backend; rebuild with `--features {}`",
            format!("{other:?}").to_lowercase()
        ),
    }
}
