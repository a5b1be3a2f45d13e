//! Choosing the compute backend, device and dtype at run time (docs/performance.md, "Choosing
//! the device"): `auto` probes CUDA, then a hardware wgpu adapter, then the CPU, and says which
//! it chose; an explicit backend that cannot start is a clear error, never a panic inside cubecl.

use anyhow::{Result, bail};
use burn::tensor::{DType, Tensor, backend::Backend};
use clap::{Args, ValueEnum};
use rmas_models::RmasBackend;
use serde::Serialize;

/// Where tensors live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// CUDA if built in and a device answers, else a hardware wgpu adapter (not a CPU Vulkan such
    /// as lavapipe), else the CPU.
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
    /// bf16 on CUDA, f32 elsewhere (the CPU backend computes in f32 only).
    Auto,
    F32,
    F16,
    Bf16,
}

/// Backend and dtype flags shared by every command.
#[derive(Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Compute backend.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendKind,
    /// Compute dtype of the agents (recurrent states stay f32).
    #[arg(long, value_enum, default_value = "auto")]
    pub dtype: Precision,
    /// Which GPU, when there are several: the CUDA ordinal, or the index among wgpu's hardware adapters.
    #[arg(long = "device", default_value_t = 0, value_name = "N")]
    pub device_index: usize,
    /// f32 weight products in plain f32 on tensor-core GPUs instead of TF32 (slower; results within
    /// the CPU's tolerances). Same as `RMAS_STRICT_F32=1`.
    #[arg(long)]
    pub strict_f32: bool,
}

/// The backend, device and dtype a command runs on, and why (printed on stderr, put in `--json`).
#[derive(Clone, Debug, Serialize)]
pub struct Choice {
    /// `cpu`, `wgpu` or `cuda`.
    pub backend: &'static str,
    /// The device as its runtime names it.
    pub device: String,
    /// `f32`, `f16` or `bf16`.
    pub dtype: &'static str,
    /// Why this backend: asked for, or what `auto` found.
    pub reason: String,
}

/// Where and how a job computes.
pub struct Target<B: Backend> {
    /// The device tensors live on.
    pub device: B::Device,
    /// The agents' compute dtype.
    pub dtype: DType,
    /// What was chosen and why.
    pub choice: Choice,
}

/// Gives Mesa's Vulkan drivers an `XDG_RUNTIME_DIR` where none is set (a headless shell): without one,
/// listing wgpu's adapters — which `--backend auto` does — prints "error: XDG_RUNTIME_DIR is invalid
/// or not set" though nothing is wrong. A private directory per user under the temp dir; left unset
/// if it cannot be made. Must run before any thread starts (it sets the process environment).
pub fn give_headless_vulkan_a_runtime_dir() {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
            return;
        }
        let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else { return };
        let dir = std::env::temp_dir().join(format!("rmas-runtime-{uid}"));
        let private = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)))
            .and_then(|()| std::fs::metadata(&dir))
            .is_ok_and(|m| m.uid() == uid && m.is_dir());
        if private {
            // SAFETY: called first in `main`, before any other thread exists to read the environment.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}

/// Work that runs on any backend.
pub trait Job {
    /// Runs on backend `B`.
    fn run<B: RmasBackend>(self, target: Target<B>) -> Result<()>;
}

/// Dispatches `job` to the backend chosen by `args`, after one line on stderr saying which.
pub fn dispatch(args: &DeviceArgs, job: impl Job) -> Result<()> {
    if args.strict_f32 {
        rmas_models::set_strict_f32(true);
    }
    let (kind, reason) = resolve(args)?;
    match kind {
        BackendKind::Cpu => {
            start::<burn::backend::NdArray>(args, Default::default(), "cpu", "the host CPU".into(), reason, job)
        }
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            let (device, name) = wgpu_probe::device(args.device_index)?;
            start::<burn::backend::Wgpu>(args, device, "wgpu", name, reason, job)
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            let device = burn::backend::cuda::CudaDevice::new(args.device_index);
            let name = format!("CUDA device {}", args.device_index);
            start::<burn::backend::Cuda>(args, device, "cuda", name, reason, job)
        }
        #[allow(unreachable_patterns)]
        other => bail!(
            "this rmas was built without the {other:?} backend; rebuild with `--features {}`",
            format!("{other:?}").to_lowercase()
        ),
    }
}

/// The backend to use and why.
fn resolve(args: &DeviceArgs) -> Result<(BackendKind, String)> {
    if args.backend != BackendKind::Auto {
        return Ok((args.backend, "--backend".into()));
    }
    #[cfg(feature = "cuda")]
    match answers::<burn::backend::Cuda>(&burn::backend::cuda::CudaDevice::new(args.device_index)) {
        Ok(()) => return Ok((BackendKind::Cuda, "auto: a CUDA device answered".into())),
        Err(e) => eprintln!("rmas: auto: CUDA device {} did not answer ({e}); trying wgpu", args.device_index),
    }
    #[cfg(feature = "wgpu")]
    match wgpu_probe::hardware() {
        Ok(list) if list.len() > args.device_index => {
            return Ok((BackendKind::Wgpu, format!("auto: hardware adapter {}", list[args.device_index])));
        }
        Ok(list) if !list.is_empty() => {
            bail!(
                "--device {} is out of range: wgpu has {} hardware adapter(s): {}",
                args.device_index,
                list.len(),
                list.join("; ")
            )
        }
        _ => {}
    }
    Ok((BackendKind::Cpu, "auto: no GPU found (no CUDA device, no hardware wgpu adapter)".into()))
}

/// Checks that `device` starts and computes, then runs `job` there.
fn start<B: RmasBackend>(
    args: &DeviceArgs,
    device: B::Device,
    backend: &'static str,
    name: String,
    reason: String,
    job: impl Job,
) -> Result<()> {
    if let Err(e) = answers::<B>(&device) {
        bail!("{}", start_failure(backend, &e));
    }
    let dtype = match (args.dtype, backend) {
        (Precision::Auto, "cuda") => DType::BF16,
        (Precision::Auto | Precision::F32, _) => DType::F32,
        (Precision::F16, _) => DType::F16,
        (Precision::Bf16, _) => DType::BF16,
    };
    if backend == "cpu" && dtype != DType::F32 {
        bail!("the CPU backend computes in f32 only; drop `--dtype` or pick a GPU backend");
    }
    let dtype_name = match dtype {
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        _ => "f32",
    };
    let choice = Choice { backend, device: name, dtype: dtype_name, reason };
    eprintln!("rmas: {} on {} ({}), {}", choice.backend, choice.device, choice.reason, choice.dtype);
    job.run(Target::<B> { device, dtype, choice })
}

/// What to do when an explicitly asked-for backend cannot start.
fn start_failure(backend: &str, error: &str) -> String {
    let fix = match backend {
        "cuda" => {
            "install the NVIDIA driver (libcuda) and the CUDA toolkit's NVRTC, or use `--backend wgpu` / `--backend cpu`"
        }
        "wgpu" => {
            "install a Vulkan driver (your GPU vendor's, or Mesa's `mesa-vulkan-drivers` for lavapipe, a CPU Vulkan), or use `--backend cpu`"
        }
        _ => "use another `--backend`",
    };
    format!("the {backend} backend could not start: {error}; {fix}")
}

/// Whether one small tensor round trip works on `device`: cubecl panics (on its own threads, then
/// in the caller) when a driver or adapter is missing, so the probe catches that panic quietly.
fn answers<B: Backend>(device: &B::Device) -> std::result::Result<(), String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Tensor::<B, 1>::ones([4], device).sum().into_data().to_vec::<f32>().map(|v| v[0])
    }));
    std::panic::set_hook(hook);
    match probe {
        Ok(Ok(sum)) => match sum == 4.0 {
            true => Ok(()),
            false => Err(format!("a test sum of four ones gave {sum}")),
        },
        Ok(Err(e)) => Err(format!("reading back a test tensor failed: {e:?}")),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the runtime panicked while starting".into())),
    }
}

/// wgpu's adapters, as cubecl will enumerate them.
#[cfg(feature = "wgpu")]
mod wgpu_probe {
    use anyhow::{Result, bail};
    use burn::backend::wgpu::{WgpuDevice, graphics::GraphicsApi};

    /// Every adapter of the graphics API cubecl uses here.
    fn adapters() -> Vec<wgpu::AdapterInfo> {
        let backend = burn::backend::wgpu::graphics::AutoGraphicsApi::backend();
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: backend.into(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        futures_lite::future::block_on(instance.enumerate_adapters(backend.into()))
            .iter()
            .map(|a| a.get_info())
            .collect()
    }

    fn is_hardware(t: wgpu::DeviceType) -> bool {
        matches!(t, wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu | wgpu::DeviceType::VirtualGpu)
    }

    fn describe(a: &wgpu::AdapterInfo) -> String {
        format!("{} ({:?}, {:?})", a.name, a.device_type, a.backend)
    }

    /// The hardware adapters (GPUs), described; an error when wgpu cannot enumerate.
    pub fn hardware() -> Result<Vec<String>> {
        Ok(adapters().iter().filter(|a| is_hardware(a.device_type)).map(describe).collect())
    }

    /// The `index`-th hardware adapter as a cubecl device, or the CPU adapter (lavapipe) for
    /// index 0 when there is no GPU; a clear error when neither exists.
    pub fn device(index: usize) -> Result<(WgpuDevice, String)> {
        let all = adapters();
        let hardware: Vec<_> = all.iter().filter(|a| is_hardware(a.device_type)).collect();
        if let Some(a) = hardware.get(index) {
            // cubecl numbers adapters within their type, in enumeration order.
            let nth = hardware[..index].iter().filter(|b| b.device_type == a.device_type).count();
            let device = match a.device_type {
                wgpu::DeviceType::DiscreteGpu => WgpuDevice::DiscreteGpu(nth),
                wgpu::DeviceType::IntegratedGpu => WgpuDevice::IntegratedGpu(nth),
                _ => WgpuDevice::VirtualGpu(nth),
            };
            return Ok((device, describe(a)));
        }
        let cpu = all.iter().find(|a| a.device_type == wgpu::DeviceType::Cpu);
        match (index, cpu) {
            (0, Some(a)) => Ok((WgpuDevice::Cpu, describe(a))),
            (_, _) if all.is_empty() => bail!(
                "the wgpu backend could not start: no {:?} adapter found; install a Vulkan driver (your GPU \
                 vendor's, or Mesa's `mesa-vulkan-drivers` for lavapipe, a CPU Vulkan), or use `--backend cpu`",
                burn::backend::wgpu::graphics::AutoGraphicsApi::backend()
            ),
            _ => bail!(
                "--device {index} is out of range: wgpu has {} hardware adapter(s) among: {}",
                hardware.len(),
                all.iter().map(describe).collect::<Vec<_>>().join("; ")
            ),
        }
    }
}
