//! RecursiveLinks (docs/algorithm.md, "RecursiveLinks"), built from the models' [`Linear`] and
//! [`LayerNorm`] (plain structs of tensors, as the models are).
//!
//! * [`InnerLink`] (`ln_res_adapter`, H → H): `R_in(x) = LN_post(x + proj2(gelu(proj1(LN_pre(x)))))`
//! * [`OuterLink`] (`outer_ln_res_adapter`, Din → Dout):
//!   `R_out(x) = LN_target(proj2(gelu(proj1(LN_source(x)))) + residual_proj(x))`
//!
//! LayerNorms use eps 1e-5 with biased variance, GELU is the exact erf form, every Linear has a bias
//! (its weight transposed to `[in, out]` on the host, as the models' are). Links load from the released PyTorch `.pt` state
//! dicts ([`InnerLink::load`], [`OuterLink::load`], or their bytes with `from_pt_bytes`) or from
//! safetensors bytes with the same tensor names (`from_safetensors_bytes`). Loading is strict:
//! exactly the expected tensors with consistent shapes; every tensor is converted to f32 on the
//! host, the backend may cast later.

use std::collections::{BTreeMap, BTreeSet};
#[cfg(not(target_family = "wasm"))]
use std::path::Path;
use std::path::PathBuf;

use burn::prelude::*;
use rmas_kernels::RmasBackend;
use rmas_models::nn::{LayerNorm, Linear};
use rmas_models::weights::floats_to_f32;

use crate::error::{Result, RmasError};

/// Adapter type name of the inner link.
pub const INNER_LINK_TYPE: &str = "ln_res_adapter";
/// Adapter type name of the outer link.
pub const OUTER_LINK_TYPE: &str = "outer_ln_res_adapter";

const INNER_KEYS: [&str; 8] = [
    "pre_ln.weight",
    "pre_ln.bias",
    "proj1.weight",
    "proj1.bias",
    "proj2.weight",
    "proj2.bias",
    "post_ln.weight",
    "post_ln.bias",
];
const OUTER_KEYS: [&str; 10] = [
    "ln_source.weight",
    "ln_source.bias",
    "proj1.weight",
    "proj1.bias",
    "proj2.weight",
    "proj2.bias",
    "residual_proj.weight",
    "residual_proj.bias",
    "ln_target.weight",
    "ln_target.bias",
];
const OUTER_PREFIXES: [&str; 3] = ["ln_source.", "ln_target.", "residual_proj."];

/// `torch.nn.LayerNorm`'s epsilon, which the released links use.
const LAYER_NORM_EPS: f64 = 1e-5;

/// The loaders and widths of a link type (`kind` names the link in errors).
macro_rules! loaders {
    ($kind:literal) => {
        /// Loads a released PyTorch `.pt` state dict (bf16 tensors are converted to f32).
        #[cfg(not(target_family = "wasm"))]
        pub fn load(path: &Path, device: &B::Device) -> Result<Self> {
            Self::from_state_dict(StateDict::read_pytorch(path, $kind)?, device)
        }

        /// Loads the bytes of a released `.pt` state dict (`name` is used in errors).
        pub fn from_pt_bytes(bytes: &[u8], name: &str, device: &B::Device) -> Result<Self> {
            Self::from_state_dict(StateDict::from_pytorch(bytes, name.into(), $kind)?, device)
        }

        /// Loads a safetensors file with the same tensor names as the `.pt` state dict.
        pub fn from_safetensors_bytes(bytes: &[u8], device: &B::Device) -> Result<Self> {
            Self::from_state_dict(StateDict::from_safetensors(bytes, $kind)?, device)
        }

        /// Input (sender) width.
        pub fn in_dim(&self) -> usize {
            self.proj1.in_dim()
        }

        /// Output (receiver) width.
        pub fn out_dim(&self) -> usize {
            self.proj2.out_dim()
        }
    };
}

/// The inner RecursiveLink (`ln_res_adapter`, H → H).
#[derive(Clone, Debug)]
pub struct InnerLink<B: Backend> {
    /// LayerNorm applied to the input.
    pub pre_ln: LayerNorm<B>,
    /// First projection `[H, H]`.
    pub proj1: Linear<B>,
    /// Second projection `[H, H]`.
    pub proj2: Linear<B>,
    /// LayerNorm applied to the residual sum.
    pub post_ln: LayerNorm<B>,
}

impl<B: RmasBackend> InnerLink<B> {
    loaders!("inner");

    fn from_state_dict(mut sd: StateDict, device: &B::Device) -> Result<Self> {
        sd.require_keys(INNER_LINK_TYPE, &INNER_KEYS)?;
        sd.check_exact_keys(INNER_LINK_TYPE, &INNER_KEYS)?;
        let h = sd.dim0("pre_ln.weight");
        sd.check_shapes(&InnerLink::<B>::shapes(h))?;
        Ok(Self {
            pre_ln: sd.layer_norm("pre_ln", device),
            proj1: sd.linear("proj1", device),
            proj2: sd.linear("proj2", device),
            post_ln: sd.layer_norm("post_ln", device),
        })
    }

    /// State-dict tensor names and shapes of an inner link of width `h`.
    pub fn shapes(h: usize) -> Vec<(&'static str, Vec<usize>)> {
        vec![
            ("proj1.weight", vec![h, h]),
            ("proj1.bias", vec![h]),
            ("proj2.weight", vec![h, h]),
            ("proj2.bias", vec![h]),
            ("pre_ln.weight", vec![h]),
            ("pre_ln.bias", vec![h]),
            ("post_ln.weight", vec![h]),
            ("post_ln.bias", vec![h]),
        ]
    }

    /// Maps `[T, H]` last-layer hidden states to `[T, H]` input embeddings:
    /// `post_ln(x + proj2(gelu(proj1(pre_ln(x)))))`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2>
    where
        B: RmasBackend,
    {
        if let Some(empty) = no_rows(&x, self.out_dim()) {
            return empty;
        }
        let (x, a) = expand(&self.pre_ln, &self.proj1, x);
        self.post_ln.forward_sum(self.proj2.product(a), Some(x), Some(bias(&self.proj2)))
    }
}

/// An outer RecursiveLink (`outer_ln_res_adapter`, Din → Dout, hidden width 2·Dout).
#[derive(Clone, Debug)]
pub struct OuterLink<B: Backend> {
    /// LayerNorm over the sender's width.
    pub ln_source: LayerNorm<B>,
    /// First projection `[2·Dout, Din]`.
    pub proj1: Linear<B>,
    /// Second projection `[Dout, 2·Dout]`.
    pub proj2: Linear<B>,
    /// Residual projection of the un-normalised input `[Dout, Din]`.
    pub residual_proj: Linear<B>,
    /// LayerNorm over the receiver's width.
    pub ln_target: LayerNorm<B>,
}

impl<B: RmasBackend> OuterLink<B> {
    loaders!("outer");

    fn from_state_dict(mut sd: StateDict, device: &B::Device) -> Result<Self> {
        sd.require_prefixes(OUTER_LINK_TYPE, &OUTER_PREFIXES)?;
        sd.check_exact_keys(OUTER_LINK_TYPE, &OUTER_KEYS)?;
        let din = sd.dim0("ln_source.weight");
        let dout = sd.dim0("proj2.bias");
        sd.check_shapes(&OuterLink::<B>::shapes(din, dout))?;
        Ok(Self {
            ln_source: sd.layer_norm("ln_source", device),
            proj1: sd.linear("proj1", device),
            proj2: sd.linear("proj2", device),
            residual_proj: sd.linear("residual_proj", device),
            ln_target: sd.layer_norm("ln_target", device),
        })
    }

    /// State-dict tensor names and shapes of an outer link `din → dout`.
    pub fn shapes(din: usize, dout: usize) -> Vec<(&'static str, Vec<usize>)> {
        vec![
            ("proj1.weight", vec![2 * dout, din]),
            ("proj1.bias", vec![2 * dout]),
            ("proj2.weight", vec![dout, 2 * dout]),
            ("proj2.bias", vec![dout]),
            ("residual_proj.weight", vec![dout, din]),
            ("residual_proj.bias", vec![dout]),
            ("ln_source.weight", vec![din]),
            ("ln_source.bias", vec![din]),
            ("ln_target.weight", vec![dout]),
            ("ln_target.bias", vec![dout]),
        ]
    }

    /// Maps `[T, Din]` sender latents to a `[T, Dout]` message (T = 0 gives `[0, Dout]`):
    /// `ln_target(proj2(gelu(proj1(ln_source(x)))) + residual_proj(x))`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2>
    where
        B: RmasBackend,
    {
        if let Some(empty) = no_rows(&x, self.out_dim()) {
            return empty;
        }
        let (x, a) = expand(&self.ln_source, &self.proj1, x);
        let bias = bias(&self.proj2) + bias(&self.residual_proj);
        self.ln_target.forward_sum(self.proj2.product(a), Some(self.residual_proj.product(x)), Some(bias))
    }
}

/// Both links' first half: `x` in the link's dtype (f32, as the reference's `outer_dtype`, whatever
/// the agent's) and `gelu(proj1(ln(x)))`.
fn expand<B: RmasBackend>(ln: &LayerNorm<B>, proj1: &Linear<B>, x: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let x = x.cast(ln.weight.dtype());
    let a = B::bias_gelu(proj1.product(ln.forward_sum(x.clone(), None, None)), bias(proj1));
    (x, a)
}

/// A link projection's bias (every link Linear has one: the loader requires it).
fn bias<B: Backend>(linear: &Linear<B>) -> Tensor<B, 1> {
    linear.bias.clone().expect("link projections are loaded with their bias")
}

/// `[0, out]` for an input without rows (T = 0), which some backends cannot multiply.
fn no_rows<B: Backend>(x: &Tensor<B, 2>, out: usize) -> Option<Tensor<B, 2>> {
    (x.dims()[0] == 0).then(|| Tensor::zeros([0, out], &x.device()))
}

/// A loaded link checkpoint: tensor name → f32 data, plus the file it came from.
struct StateDict {
    path: PathBuf,
    tensors: BTreeMap<String, TensorData>,
}

impl StateDict {
    /// Reads a PyTorch checkpoint file.
    #[cfg(not(target_family = "wasm"))]
    fn read_pytorch(path: &Path, link: &'static str) -> Result<Self> {
        let what = if link == "inner" { "inner link" } else { "outer link" };
        let meta = std::fs::metadata(path).map_err(|e| RmasError::io(what, path, e))?;
        if !meta.is_file() {
            return Err(RmasError::LinkFormat { link, path: path.into(), msg: "not a regular file".into() });
        }
        let bytes = std::fs::read(path).map_err(|e| RmasError::io(what, path, e))?;
        Self::from_pytorch(&bytes, path.into(), link)
    }

    /// Parses the bytes of a PyTorch checkpoint named `path` (BF16 / F16 / F32 / F64 tensors).
    fn from_pytorch(bytes: &[u8], path: PathBuf, link: &'static str) -> Result<Self> {
        match crate::pt::read_state_dict(bytes) {
            Ok(tensors) => Ok(Self { path, tensors }),
            Err(msg) => Err(RmasError::LinkFormat { link, path, msg }),
        }
    }

    /// Parses safetensors bytes (BF16 / F16 / F32 tensors).
    fn from_safetensors(bytes: &[u8], link: &'static str) -> Result<Self> {
        let path = PathBuf::from("<in-memory safetensors>");
        let format_err = |msg: String| RmasError::LinkFormat { link, path: path.clone(), msg };
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| format_err(format!("not a safetensors file ({e})")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let values = floats_to_f32(view.dtype(), view.data()).ok_or_else(|| {
                format_err(format!("tensor `{name}` has dtype {:?}, expected F64, F32, F16 or BF16", view.dtype()))
            })?;
            tensors.insert(name, TensorData::new(values, view.shape().to_vec()));
        }
        Ok(Self { path, tensors })
    }

    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    /// The reference's link-type check for inner links: all of `keys` must be present.
    fn require_keys(&self, link_type: &'static str, keys: &[&str]) -> Result<()> {
        let missing: Vec<String> =
            keys.iter().filter(|k| !self.tensors.contains_key(**k)).map(|k| k.to_string()).collect();
        self.unsupported_if(link_type, missing)
    }

    /// The reference's link-type check for outer links: some tensor must start with each prefix.
    fn require_prefixes(&self, link_type: &'static str, prefixes: &[&str]) -> Result<()> {
        let missing: Vec<String> = prefixes
            .iter()
            .filter(|p| !self.tensors.keys().any(|k| k.starts_with(**p)))
            .map(|p| format!("{p}*"))
            .collect();
        self.unsupported_if(link_type, missing)
    }

    fn unsupported_if(&self, supported: &'static str, missing: Vec<String>) -> Result<()> {
        if missing.is_empty() {
            return Ok(());
        }
        Err(RmasError::UnsupportedLinkType { path: self.path.clone(), supported, missing, found: self.names() })
    }

    /// Strict loading: the tensor names must be exactly `keys`.
    fn check_exact_keys(&self, link_type: &'static str, keys: &[&str]) -> Result<()> {
        let expected: BTreeSet<&str> = keys.iter().copied().collect();
        let missing: Vec<String> =
            expected.iter().filter(|k| !self.tensors.contains_key(**k)).map(|k| k.to_string()).collect();
        let unexpected: Vec<String> = self.tensors.keys().filter(|k| !expected.contains(k.as_str())).cloned().collect();
        if missing.is_empty() && unexpected.is_empty() {
            return Ok(());
        }
        Err(RmasError::LinkKeys { path: self.path.clone(), link_type, missing, unexpected })
    }

    /// First dimension of a (present) tensor, 0 for scalars.
    fn dim0(&self, name: &str) -> usize {
        self.tensors.get(name).and_then(|t| t.shape.first().copied()).unwrap_or(0)
    }

    fn check_shapes(&self, expected: &[(&'static str, Vec<usize>)]) -> Result<()> {
        for (name, shape) in expected {
            let found = self.tensors.get(*name).map(|t| t.shape.to_vec()).unwrap_or_default();
            if &found != shape {
                return Err(RmasError::LinkShape {
                    path: self.path.clone(),
                    tensor: name.to_string(),
                    expected: shape.clone(),
                    found,
                });
            }
        }
        Ok(())
    }

    /// Moves a tensor (already checked to exist with rank `D`) to the device.
    fn take<B: Backend, const D: usize>(&mut self, name: &str, device: &B::Device) -> Tensor<B, D> {
        let data = self.tensors.remove(name).unwrap_or_else(|| TensorData::new(Vec::<f32>::new(), [0; D]));
        Tensor::from_data(data, device)
    }

    /// `prefix.weight` `[out, in]` (in the backend's layout) and `prefix.bias`.
    fn linear<B: RmasBackend>(&mut self, prefix: &str, device: &B::Device) -> Linear<B> {
        let name = format!("{prefix}.weight");
        let weight = self.tensors.remove(&name).unwrap_or_else(|| TensorData::new(Vec::<f32>::new(), [0, 0]));
        Linear::from_hf(weight, Some(self.take(&format!("{prefix}.bias"), device)), device)
    }

    fn layer_norm<B: Backend>(&mut self, prefix: &str, device: &B::Device) -> LayerNorm<B> {
        LayerNorm {
            weight: self.take(&format!("{prefix}.weight"), device),
            bias: self.take(&format!("{prefix}.bias"), device),
            eps: LAYER_NORM_EPS,
        }
    }
}
