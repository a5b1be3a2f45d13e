//! Shared helpers of the conformance suite and the benches: fixture paths, golden tensors, backends.

use std::path::PathBuf;

use burn::tensor::{Tensor, TensorData, backend::Backend};

/// `tests/fixtures/golden/<rel>` inside the repository (`RMAS_REPO_ROOT` relocates it, e.g. for test
/// binaries copied to a GPU machine).
pub fn golden(rel: &str) -> PathBuf {
    let root =
        std::env::var_os("RMAS_REPO_ROOT").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    root.join("tests/fixtures/golden").join(rel)
}

/// The case directories under `tests/fixtures/golden/<kind>` (`models`, `systems`) that hold `file`,
/// sorted: every case present is checked, including ones added after this suite was written.
pub fn cases(kind: &str, file: &str) -> Vec<String> {
    let dir = golden(kind);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path())
        .filter(|path| path.join(file).is_file())
        .map(|path| path.file_name().expect("a case directory has a name").to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 2, "golden cases missing under {}", dir.display());
    names
}

/// The run options a golden case's reference used (greedy).
pub fn golden_options(name: &str, settings: &serde_json::Value) -> rmas::options::RunOptions {
    let date = chrono::NaiveDate::parse_from_str(settings["chat_template_date"].as_str().unwrap(), "%d %b %Y").unwrap();
    assert_eq!(settings["do_sample"], false, "{name}: the conformance cases decode greedily");
    let mut chat = rmas_text::ChatOptions::recursivemas(date);
    chat.enable_thinking = Some(settings["enable_thinking"].as_bool().unwrap_or(false));
    rmas::options::RunOptions {
        dataset: settings["dataset_arg"].as_str().unwrap().parse::<rmas_text::Dataset>().unwrap(),
        fn_name: None,
        latent_steps: settings["latent_steps"].as_u64().unwrap() as usize,
        rounds: settings["num_recursive_rounds"].as_u64().unwrap() as usize,
        max_new_tokens: settings["max_new_tokens"].as_u64().unwrap() as usize,
        sampling: rmas_models::generate::Sampling::Greedy,
        seed: settings["seed"].as_u64().unwrap_or(42),
        chat,
        answer_retry: settings["ans_retry"].as_bool().unwrap_or(false),
        summarize_every_round: true,
    }
}

/// Tensors of a golden `.safetensors` file, as f32 (float) or i64 (int) host data.
pub struct Golden {
    bytes: Vec<u8>,
}

impl Golden {
    /// Reads `tests/fixtures/golden/<rel>`.
    pub fn open(rel: &str) -> Self {
        let path = golden(rel);
        Self { bytes: std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) }
    }

    /// Whether the file holds tensor `name`.
    pub fn has(&self, name: &str) -> bool {
        safetensors::SafeTensors::deserialize(&self.bytes).expect("golden safetensors").tensor(name).is_ok()
    }

    /// Tensor `name` as host data (F32 or I64).
    pub fn data(&self, name: &str) -> TensorData {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).expect("golden safetensors");
        let view = st.tensor(name).unwrap_or_else(|_| panic!("golden tensor {name} missing"));
        let shape = view.shape().to_vec();
        let b = view.data();
        match view.dtype() {
            safetensors::Dtype::F32 => TensorData::new(
                b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>(),
                shape,
            ),
            safetensors::Dtype::I64 => TensorData::new(
                b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>(),
                shape,
            ),
            d => panic!("golden tensor {name}: unexpected dtype {d:?}"),
        }
    }

    /// Integer tensor `name` as u32 token ids.
    pub fn ids(&self, name: &str) -> Vec<u32> {
        self.data(name).convert::<i64>().to_vec::<i64>().unwrap().into_iter().map(|x| x as u32).collect()
    }

    /// Float tensor `name` on a device.
    pub fn tensor<B: Backend, const D: usize>(&self, name: &str, device: &B::Device) -> Tensor<B, D> {
        Tensor::from_data(self.data(name), device)
    }
}

/// Asserts `|a − b| ≤ atol + rtol·|b|` elementwise and reports the worst element.
pub fn assert_close<B: Backend, const D: usize>(what: &str, a: Tensor<B, D>, b: Tensor<B, D>, atol: f32, rtol: f32) {
    assert_eq!(a.dims(), b.dims(), "{what}: shape mismatch");
    let a = a.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let b = b.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let (mut worst, mut at, mut max_abs) = (0.0f32, 0usize, 0.0f32);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let d = (x - y).abs();
        max_abs = max_abs.max(d);
        let excess = d - (atol + rtol * y.abs());
        if excess.is_nan() || excess > worst {
            worst = excess;
            at = i;
        }
    }
    assert!(
        worst <= 0.0,
        "{what}: element {at}: got {} expected {} (max |Δ| {max_abs}, atol {atol}, rtol {rtol})",
        a[at],
        b[at]
    );
}

/// The wgpu backend without burn's fusion (what `burn::backend::Wgpu` is without the `fusion` feature).
#[cfg(all(feature = "wgpu", feature = "fusion"))]
pub type WgpuUnfused = burn_cubecl::CubeBackend<burn::backend::wgpu::WgpuRuntime, f32, i32, u32>;

/// The CUDA backend without burn's fusion.
#[cfg(all(feature = "cuda", feature = "fusion"))]
pub type CudaUnfused = burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;

/// Instantiates a generic test body `fn(&B::Device)` for every compiled backend:
/// `ndarray` always, `wgpu` with the `wgpu` feature, `cuda` with the `cuda` feature; with the
/// `fusion` feature those two are burn's fusion backend and `wgpu_unfused`/`cuda_unfused` run the
/// bodies on the plain cubecl backends as well.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident => $body:ident),* $(,)?) => {
        mod ndarray {
            $(#[test] fn $name() { super::$body::<burn::backend::NdArray>(&Default::default()) })*
        }
        #[cfg(feature = "wgpu")]
        mod wgpu {
            $(#[test] fn $name() { super::$body::<burn::backend::Wgpu>(&Default::default()) })*
        }
        // On CUDA the suite runs f32 products in strict mode: tensor cores would compute them in TF32.
        #[cfg(feature = "cuda")]
        mod cuda {
            $(#[test] fn $name() {
                rmas_kernels::linear::cube::set_strict_f32(true);
                super::$body::<burn::backend::Cuda>(&Default::default())
            })*
        }
        #[cfg(all(feature = "wgpu", feature = "fusion"))]
        mod wgpu_unfused {
            $(#[test] fn $name() { super::$body::<$crate::WgpuUnfused>(&Default::default()) })*
        }
        #[cfg(all(feature = "cuda", feature = "fusion"))]
        mod cuda_unfused {
            $(#[test] fn $name() {
                rmas_kernels::linear::cube::set_strict_f32(true);
                super::$body::<$crate::CudaUnfused>(&Default::default())
            })*
        }
    };
}

pub use rmas_models::demo::uniform;

/// A `[rows, cols]` matrix in any block format with pseudo-random weights of varied scale per row:
/// quantized from [`uniform`] values where rmas quantizes the format, else (K-quants) uniform code
/// bytes with finite f16 super-block scales of 10⁻³ to 10⁻².
pub fn random_blocks(
    seed: u64,
    format: rmas_kernels::quant::BlockFormat,
    rows: usize,
    cols: usize,
) -> rmas_kernels::quant::QuantMatrix {
    use rmas_kernels::quant::{BlockFormat, QuantMatrix};
    let values = uniform(seed, rows * cols);
    if format.quantizes() {
        let v: Vec<f32> = values.iter().enumerate().map(|(i, x)| x * (1.0 + (i / cols % 5) as f32)).collect();
        return QuantMatrix::quantize(format, &v, rows, cols).expect("whole blocks");
    }
    let blocks = rows * cols / format.block_weights();
    let mut bytes: Vec<u8> =
        uniform(seed ^ 0x5eed, blocks * format.block_bytes()).iter().map(|x| ((x + 1.0) * 128.0) as u8).collect();
    let scales: &[usize] = if format == BlockFormat::Q6K { &[208] } else { &[0, 2] };
    for (block, x) in bytes.chunks_exact_mut(format.block_bytes()).zip(values.chunks(cols * rows / blocks)) {
        for &at in scales {
            let d = half::f16::from_f32(1e-3 * (1.0 + 4.5 * (x[at] + 1.0)));
            block[at..at + 2].copy_from_slice(&d.to_le_bytes());
        }
    }
    QuantMatrix::from_blocks(format, rows, cols, bytes).expect("whole blocks")
}
