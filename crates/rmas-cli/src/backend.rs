//! Choosing the compute backend, device and dtype at run time (docs/performance.md, "Choosing
//! the device"): `auto` probes CUDA, then a hardware wgpu adapter, then the CPU, and says which
//! it chose; an explicit backend that cannot start is a clear error, never a panic inside cubecl.

use std::path::PathBuf;

use anyhow::{Result, bail};
use burn::tensor::{DType, Tensor, backend::Backend};
use clap::{Args, ValueEnum};
use rmas_models::{BlockFormat, Blocks, RmasBackend};
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

/// Weights quantized at load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Quantize {
    /// Weights as the checkpoint stores them.
    None,
    /// Layer weights as Q8_0 blocks (8.5 bits a weight).
    Int8,
    /// Layer weights as Q4_1 blocks (5 bits a weight).
    Int4,
}

/// How weights are held in memory (docs/quantization.md).
#[derive(Args, Clone, Debug)]
pub struct WeightArgs {
    /// Quantize at load: layer weights to `int8` (Q8_0) or `int4` (Q4_1) blocks, the embedding and LM
    /// head to Q8_0; products decode the blocks as they go (on a GPU the blocks live on the device
    /// only). A GGUF file's block-quantized tensors stay as stored either way.
    #[arg(long, value_enum, default_value = "none")]
    pub quantize: Quantize,
    /// Dequantize a GGUF file's blocks to the compute dtype at load (the reference path: 4–7× the
    /// memory and bytes per token).
    #[arg(long, conflicts_with = "quantize")]
    pub dequantize: bool,
    /// Where `--quantize` keeps its blocks, one GGUF file per checkpoint and format, so that the next
    /// load of the same checkpoint reads them instead of quantizing [default: $XDG_CACHE_HOME/rmas/quantized,
    /// else ~/.cache/rmas/quantized]
    #[arg(long, env = "RMAS_QUANTIZE_CACHE", value_name = "DIR")]
    pub quantize_cache: Option<PathBuf>,
    /// Quantize at every load; read and write no cache.
    #[arg(long, conflicts_with = "quantize_cache")]
    pub no_quantize_cache: bool,
}

impl WeightArgs {
    /// The precision to load with on backend `B`; an error where `B` cannot multiply blocks.
    pub fn precision<B: RmasBackend>(&self, dtype: DType) -> Result<rmas_models::Precision> {
        let blocks = match (self.quantize, self.dequantize) {
            (_, true) => Blocks::Dense,
            (Quantize::None, false) => Blocks::Stored,
            (Quantize::Int8, false) => Blocks::Quantize(BlockFormat::Q8_0),
            (Quantize::Int4, false) => Blocks::Quantize(BlockFormat::Q4_1),
        };
        if matches!(blocks, Blocks::Quantize(_)) && !B::QUANTIZED_PRODUCTS {
            bail!("--quantize needs a backend that multiplies quantized blocks (cpu, wgpu or cuda)");
        }
        let cache = match (&self.quantize_cache, self.no_quantize_cache) {
            (_, true) => None,
            (Some(dir), false) => Some(dir.clone()),
            (None, false) => default_quantize_cache(),
        };
        Ok(rmas_models::Precision { dtype, blocks, cache: cache.map(Into::into) })
    }
}

/// `$XDG_CACHE_HOME/rmas/quantized`, else `$HOME/.cache/rmas/quantized`.
fn default_quantize_cache() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let root = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|home| home.join(".cache")))?;
    Some(root.join("rmas").join("quantized"))
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
pub trait Job: Send {
    /// Runs on backend `B`.
    fn run<B: RmasBackend>(self, target: Target<B>) -> Result<()>;
}

/// Dispatches `job` to the backend chosen by `args`, after one line on stderr saying which.
pub fn dispatch(args: &DeviceArgs, job: impl Job) -> Result<()> {
    if args.strict_f32 {
        rmas_models::set_strict_f32(true);
    }
    let (pick, reason) = resolve(args)?;
    match pick {
        Pick::Cpu => rmas_models::on_cpu_pool(|| {
            start::<burn::backend::NdArray>(args, Default::default(), "cpu", "the host CPU".into(), reason, job)
        }),
        #[cfg(feature = "wgpu")]
        Pick::Wgpu(device, name) => start::<burn::backend::Wgpu>(args, device, "wgpu", name, reason, job),
        #[cfg(feature = "cuda")]
        Pick::Cuda => {
            let device = burn::backend::cuda::CudaDevice::new(args.device_index);
            let name = format!("CUDA device {}", args.device_index);
            start::<burn::backend::Cuda>(args, device, "cuda", name, reason, job)
        }
    }
}

/// The device [`resolve`] picked (a wgpu adapter is picked from the one listing that chose it).
enum Pick {
    Cpu,
    #[cfg(feature = "wgpu")]
    Wgpu(burn::backend::wgpu::WgpuDevice, String),
    #[cfg(feature = "cuda")]
    Cuda,
}

/// The device to use and why.
fn resolve(args: &DeviceArgs) -> Result<(Pick, String)> {
    let asked = || "--backend".to_string();
    match args.backend {
        BackendKind::Cpu => return Ok((Pick::Cpu, asked())),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            let (device, name) = wgpu_probe::Adapters::list().device(args.device_index)?;
            return Ok((Pick::Wgpu(device, name), asked()));
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => return Ok((Pick::Cuda, asked())),
        BackendKind::Auto => {}
        #[allow(unreachable_patterns)]
        other => bail!(
            "this rmas was built without the {other:?} backend; rebuild with `--features {}`",
            format!("{other:?}").to_lowercase()
        ),
    }
    #[cfg(feature = "cuda")]
    match answers::<burn::backend::Cuda>(&burn::backend::cuda::CudaDevice::new(args.device_index)) {
        Ok(()) => return Ok((Pick::Cuda, "auto: a CUDA device answered".into())),
        Err(e) => eprintln!("rmas: auto: CUDA device {} did not answer ({e}); trying wgpu", args.device_index),
    }
    #[cfg(feature = "wgpu")]
    {
        let adapters = wgpu_probe::Adapters::list();
        if adapters.has_hardware() {
            let (device, name) = adapters.device(args.device_index)?;
            let reason = format!("auto: hardware adapter {name}");
            return Ok((Pick::Wgpu(device, name), reason));
        }
    }
    Ok((Pick::Cpu, "auto: no GPU found (no CUDA device, no hardware wgpu adapter)".into()))
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

    /// Every adapter of the graphics API cubecl uses here, listed once.
    pub struct Adapters(Vec<wgpu::AdapterInfo>);

    fn is_hardware(t: wgpu::DeviceType) -> bool {
        matches!(t, wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu | wgpu::DeviceType::VirtualGpu)
    }

    fn describe(a: &wgpu::AdapterInfo) -> String {
        format!("{} ({:?}, {:?})", a.name, a.device_type, a.backend)
    }

    impl Adapters {
        /// Lists the adapters.
        pub fn list() -> Self {
            let backend = burn::backend::wgpu::graphics::AutoGraphicsApi::backend();
            let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
                backends: backend.into(),
                ..wgpu::InstanceDescriptor::new_without_display_handle()
            });
            let adapters = futures_lite::future::block_on(instance.enumerate_adapters(backend.into()));
            Self(adapters.iter().map(|a| a.get_info()).collect())
        }

        /// Whether any adapter is a GPU (not a CPU Vulkan such as lavapipe).
        pub fn has_hardware(&self) -> bool {
            self.0.iter().any(|a| is_hardware(a.device_type))
        }

        /// The `index`-th hardware adapter as a cubecl device, or the CPU adapter (lavapipe) for
        /// index 0 when there is no GPU; a clear error when neither exists.
        pub fn device(&self, index: usize) -> Result<(WgpuDevice, String)> {
            let all = &self.0;
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
}
