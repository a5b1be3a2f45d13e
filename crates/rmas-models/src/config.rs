//! `config.json` of every supported family, mapped onto one decoder description.
//!
//! Families differ only by these fields: norms, biases, q/k norms, gating, MLP activation,
//! embedding scale, RoPE tables, sliding windows and (Qwen3.5) Gated-DeltaNet mixers.

use std::path::Path;

use serde_json::Value;

use crate::error::{ModelError, Result};

/// Model families rmas implements (the `model_type` values they come with).
pub const SUPPORTED: &[(&str, Family)] = &[
    ("qwen3_5", Family::Qwen35),
    ("qwen3_5_text", Family::Qwen35),
    ("qwen2", Family::Qwen2),
    ("qwen3", Family::Qwen3),
    ("llama", Family::Llama),
    ("mistral", Family::Mistral),
    ("gemma3", Family::Gemma3),
    ("gemma3_text", Family::Gemma3),
];

/// Most decoder layers a config may declare (real checkpoints have under 200).
const MAX_LAYERS: usize = 4096;

/// A model family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Qwen35,
    Qwen2,
    Qwen3,
    Llama,
    Mistral,
    Gemma3,
}

/// transformers' config-class values for fields a `config.json` leaves out (an explicit null keeps its own meaning).
struct Defaults {
    /// `None`: hidden_size / num_attention_heads.
    head_dim: Option<usize>,
    /// `None`: num_attention_heads.
    kv_heads: Option<usize>,
    window: Option<usize>,
    max_positions: usize,
    partial_rotary: Option<f64>,
    activation: Activation,
}

impl Family {
    fn defaults(self) -> Defaults {
        let base = Defaults {
            head_dim: None,
            kv_heads: None,
            window: None,
            max_positions: 32768,
            partial_rotary: None,
            activation: Activation::Silu,
        };
        match self {
            Family::Qwen2 => Defaults { kv_heads: Some(32), window: Some(4096), ..base },
            Family::Qwen3 => Defaults { head_dim: Some(128), kv_heads: Some(32), window: Some(4096), ..base },
            Family::Llama => Defaults { max_positions: 2048, ..base },
            Family::Mistral => Defaults { kv_heads: Some(8), window: Some(4096), max_positions: 131072, ..base },
            Family::Gemma3 => Defaults {
                head_dim: Some(256),
                kv_heads: Some(4),
                window: Some(4096),
                max_positions: 131072,
                activation: Activation::GeluTanh,
                ..base
            },
            Family::Qwen35 => Defaults { head_dim: Some(256), kv_heads: Some(4), partial_rotary: Some(0.25), ..base },
        }
    }
}

/// RMSNorm flavour: `w·x̂` (Llama, Qwen2/3, Mistral) or zero-centred `(1+w)·x̂` (Qwen3.5, Gemma 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    Plain,
    ZeroCentred,
}

/// MLP gate activation (`hidden_act`: silu or gelu_pytorch_tanh).
pub use rmas_kernels::Act as Activation;

/// Token mixer of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mixer {
    Attention,
    GatedDeltaNet,
}

/// RoPE frequency scaling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    Linear {
        factor: f64,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_positions: f64,
    },
    /// YaRN: interpolation ramped between the `beta_fast`/`beta_slow` rotation counts, cos/sin × `attention_factor`.
    Yarn {
        factor: f64,
        beta_fast: f64,
        beta_slow: f64,
        original_max_positions: f64,
        truncate: bool,
        attention_factor: f64,
    },
}

/// One rotary table: base, rotated width (≤ head_dim, rotate-half inside it) and scaling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    pub dim: usize,
    pub scaling: RopeScaling,
}

/// Per-layer choices.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerConfig {
    pub mixer: Mixer,
    /// Index into [`Config::ropes`].
    pub rope: usize,
    /// Sliding attention window (key j visible from query i iff `i − w < j ≤ i`).
    pub window: Option<usize>,
}

/// Gated DeltaNet sizes (Qwen3.5 linear-attention layers).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GdnConfig {
    pub num_key_heads: usize,
    pub num_value_heads: usize,
    pub key_head_dim: usize,
    pub value_head_dim: usize,
    pub conv_kernel: usize,
}

impl GdnConfig {
    /// `nk·dk`.
    pub fn key_dim(&self) -> usize {
        self.num_key_heads * self.key_head_dim
    }
    /// `nv·dv`.
    pub fn value_dim(&self) -> usize {
        self.num_value_heads * self.value_head_dim
    }
    /// Channels of the causal depthwise convolution: `q ‖ k ‖ v`.
    pub fn conv_dim(&self) -> usize {
        2 * self.key_dim() + self.value_dim()
    }
}

/// A decoder-only language model, whatever its family.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub family: Family,
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub norm: NormKind,
    pub qk_norm: bool,
    /// Biases on q/k/v_proj.
    pub qkv_bias: bool,
    /// Bias on o_proj.
    pub o_bias: bool,
    /// Biases on the MLP's gate/up/down_proj (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// Qwen3.5: q_proj also yields a sigmoid output gate per head.
    pub attn_output_gate: bool,
    /// Gemma 3: post-attention and pre/post-feed-forward norms.
    pub sandwich_norms: bool,
    pub activation: Activation,
    /// Gemma 3 multiplies token embeddings by √hidden.
    pub embed_scale: Option<f64>,
    pub attn_scale: f64,
    pub tie_embeddings: bool,
    /// `gemma3_text` (Gemma3ForCausalLM): logits become `cap·tanh(logits/cap)`.
    pub final_logit_softcap: Option<f64>,
    pub max_positions: usize,
    pub layers: Vec<LayerConfig>,
    pub ropes: Vec<RopeConfig>,
    pub gdn: Option<GdnConfig>,
}

/// Reads and maps `dir/config.json`.
pub fn load(dir: &Path) -> Result<Config> {
    let path = dir.join("config.json");
    let text = crate::weights::read_to_string(&path)?;
    parse(&text, &path)
}

/// Maps the text of a `config.json` (`path` is only used in errors).
pub fn parse(text: &str, path: &Path) -> Result<Config> {
    let root: Value = serde_json::from_str(text).map_err(|e| err(path, e.to_string()))?;
    let model_type = root["model_type"].as_str().ok_or_else(|| err(path, "missing string `model_type`".into()))?;
    let family = SUPPORTED.iter().find(|(t, _)| *t == model_type).map(|(_, f)| *f).ok_or_else(|| {
        ModelError::UnknownArchitecture {
            path: path.to_owned(),
            found: model_type.to_owned(),
            supported: SUPPORTED.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", "),
        }
    })?;
    // Multimodal checkpoints (Qwen3.5 upstream, Gemma 3) nest the text model's fields.
    let tied_top = root["tie_word_embeddings"].as_bool();
    let d = family.defaults();
    let c = Cfg { v: root.get("text_config").unwrap_or(&root), path };
    // The context length (unbounded when `max_position_embeddings` is null).
    let max_positions =
        c.or_absent("max_position_embeddings", Some(d.max_positions), Cfg::opt_usize)?.unwrap_or(usize::MAX);

    let hidden_size = c.usize("hidden_size")?;
    let num_heads = c.usize("num_attention_heads")?;
    let num_layers = c.usize("num_hidden_layers")?;
    if num_layers > MAX_LAYERS {
        return Err(err(
            path,
            format!("num_hidden_layers {num_layers} is implausible (expected at most {MAX_LAYERS})"),
        ));
    }
    let num_kv_heads = c.or_absent("num_key_value_heads", d.kv_heads, Cfg::opt_usize)?.unwrap_or(num_heads);
    if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
        return Err(err(
            path,
            format!(
                "num_attention_heads {num_heads} must be a positive multiple of num_key_value_heads {num_kv_heads}"
            ),
        ));
    }
    let head_dim = c.or_absent("head_dim", d.head_dim, Cfg::opt_usize)?.unwrap_or(hidden_size / num_heads);
    if head_dim == 0 {
        return Err(err(
            path,
            format!("head_dim is 0 (hidden_size {hidden_size}, {num_heads} heads); expected at least 1"),
        ));
    }
    let is = |f: &[Family]| f.contains(&family);
    // As transformers 5: Gemma3ForCausalLM caps its logits, Gemma3ForConditionalGeneration does not, and
    // Gemma 3 attention never reads `attn_logit_softcapping`.
    let final_logit_softcap = match model_type {
        "gemma3_text" => {
            c.opt_f64("final_logit_softcapping")?.map(|x| positive(path, "final_logit_softcapping", x)).transpose()?
        }
        _ => None,
    };
    if c.v["use_bidirectional_attention"].as_bool() == Some(true) {
        return Err(err(path, "`use_bidirectional_attention` = true is not supported (rmas attends causally)".into()));
    }
    // Qwen2/Qwen3 drop the window unless `use_sliding_window` (as their transformers configs do).
    let window = match family {
        Family::Qwen2 | Family::Qwen3 if c.v["use_sliding_window"].as_bool() != Some(true) => None,
        _ => c.or_absent("sliding_window", d.window, Cfg::opt_usize)?,
    };
    let mixers = layer_types(&c, family, num_layers, window)?;
    let (ropes, rope_of) = ropes(&c, family, head_dim, d.partial_rotary, max_positions)?;
    if let Some(r) = ropes.iter().find(|r| r.dim == 0 || r.dim % 2 != 0 || r.dim > head_dim) {
        return Err(err(
            path,
            format!(
                "rotary width {} (head_dim {head_dim} × partial_rotary_factor) must be even, positive and at most head_dim",
                r.dim
            ),
        ));
    }
    let sliding_everywhere = family == Family::Mistral;
    let layers: Vec<LayerConfig> = mixers
        .iter()
        .map(|(mixer, ty)| LayerConfig {
            mixer: *mixer,
            rope: rope_of(ty),
            window: if ty == "sliding_attention" || sliding_everywhere { window } else { None },
        })
        .collect();
    // Configs without sliding layers may write 0 for "no window"; a sliding layer needs one key.
    if layers.iter().any(|l| l.window == Some(0)) {
        return Err(err(path, "`sliding_window` is 0 but layers slide: every key would be hidden; expected at least 1 (or null for no window)".into()));
    }
    let gdn = if family == Family::Qwen35 {
        let size = |key: &str, absent: usize| {
            c.or_absent(key, Some(absent), Cfg::opt_usize)?
                .ok_or_else(|| err(path, format!("`{key}` is null; expected an integer")))
        };
        Some(GdnConfig {
            num_key_heads: size("linear_num_key_heads", 16)?,
            num_value_heads: size("linear_num_value_heads", 32)?,
            key_head_dim: size("linear_key_head_dim", 128)?,
            value_head_dim: size("linear_value_head_dim", 128)?,
            conv_kernel: size("linear_conv_kernel_dim", 4)?,
        })
    } else {
        None
    };
    if let Some(g) = &gdn {
        let sizes = [g.num_key_heads, g.num_value_heads, g.key_head_dim, g.value_head_dim, g.conv_kernel];
        if sizes.contains(&0) || g.num_value_heads % g.num_key_heads != 0 {
            return Err(err(
                path,
                format!(
                    "linear attention sizes {g:?} must be positive with linear_num_value_heads a multiple of linear_num_key_heads"
                ),
            ));
        }
    }
    let attn_scale = match family {
        Family::Gemma3 => {
            c.or_absent("query_pre_attn_scalar", Some(256.0), Cfg::opt_f64)?.unwrap_or(head_dim as f64).powf(-0.5)
        }
        _ => (head_dim as f64).powf(-0.5),
    };
    let activation = match c.v.get("hidden_activation").or(c.v.get("hidden_act")).and_then(Value::as_str) {
        None => d.activation,
        Some("silu") => Activation::Silu,
        Some("gelu_pytorch_tanh") => Activation::GeluTanh,
        Some(other) => {
            return Err(err(path, format!("unsupported activation `{other}` (expected silu or gelu_pytorch_tanh)")));
        }
    };
    // As transformers builds them: Qwen2 always has q/k/v biases, Mistral never any.
    let attention_bias = c.v["attention_bias"].as_bool() == Some(true);
    Ok(Config {
        family,
        model_type: model_type.to_owned(),
        hidden_size,
        intermediate_size: c.usize("intermediate_size")?,
        vocab_size: c.usize("vocab_size")?,
        num_heads,
        num_kv_heads,
        head_dim,
        rms_norm_eps: c.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
        norm: if is(&[Family::Qwen35, Family::Gemma3]) { NormKind::ZeroCentred } else { NormKind::Plain },
        qk_norm: is(&[Family::Qwen35, Family::Qwen3, Family::Gemma3]),
        qkv_bias: family == Family::Qwen2 || (family != Family::Mistral && attention_bias),
        o_bias: !is(&[Family::Qwen2, Family::Mistral]) && attention_bias,
        mlp_bias: family == Family::Llama && c.v["mlp_bias"].as_bool() == Some(true),
        // transformers builds Qwen3.5's gate whatever `attn_output_gate` says.
        attn_output_gate: family == Family::Qwen35,
        sandwich_norms: family == Family::Gemma3,
        activation,
        embed_scale: (family == Family::Gemma3).then(|| (hidden_size as f64).sqrt()),
        attn_scale,
        // transformers' default: tied for Gemma 3 only.
        tie_embeddings: c.v["tie_word_embeddings"].as_bool().or(tied_top).unwrap_or(family == Family::Gemma3),
        final_logit_softcap,
        max_positions,
        layers,
        ropes,
        gdn,
    })
}

fn err(path: &Path, msg: String) -> ModelError {
    ModelError::Config { path: path.to_owned(), msg }
}

/// A JSON object with typed, path-naming accessors.
struct Cfg<'a> {
    v: &'a Value,
    path: &'a Path,
}

impl Cfg<'_> {
    /// `get(key)`, or `absent` when the config does not mention `key` (null stays `None`).
    fn or_absent<T>(
        &self,
        key: &str,
        absent: Option<T>,
        get: fn(&Self, &str) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        match self.v.get(key) {
            None => Ok(absent),
            Some(_) => get(self, key),
        }
    }
    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match &self.v[key] {
            Value::Null => Ok(None),
            v => v
                .as_u64()
                .map(|x| Some(x as usize))
                .ok_or_else(|| err(self.path, format!("`{key}` must be a non-negative integer, found {v}"))),
        }
    }
    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| err(self.path, format!("missing integer `{key}`")))
    }
    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        opt_f64(self.v, key, self.path)
    }
}

fn opt_f64(v: &Value, key: &str, path: &Path) -> Result<Option<f64>> {
    match &v[key] {
        Value::Null => Ok(None),
        x => x.as_f64().map(Some).ok_or_else(|| err(path, format!("`{key}` must be a number, found {x}"))),
    }
}

/// Mixer and HF layer type name of every layer (`window`: the sliding window, if any).
fn layer_types(c: &Cfg, family: Family, n: usize, window: Option<usize>) -> Result<Vec<(Mixer, String)>> {
    let names: Vec<String> = match c.v["layer_types"].as_array() {
        Some(list) => list.iter().map(|t| t.as_str().unwrap_or_default().to_owned()).collect(),
        None => {
            let period = |key: &str, default: usize| match c.opt_usize(key)?.unwrap_or(default) {
                0 => Err(err(c.path, format!("`{key}` is 0; expected at least 1"))),
                k => Ok(k),
            };
            // transformers' defaults: which layers attend to every key.
            let full: Box<dyn Fn(usize) -> bool> = match family {
                Family::Qwen35 => {
                    let k = period("full_attention_interval", 4)?;
                    Box::new(move |i| (i + 1) % k == 0)
                }
                Family::Gemma3 => {
                    // transformers reads only `sliding_window_pattern` here (not `_sliding_window_pattern`).
                    let k = period("sliding_window_pattern", 6)?;
                    Box::new(move |i| (i + 1) % k == 0)
                }
                // Qwen2/Qwen3: with a window on, layers from `max_window_layers` on slide.
                Family::Qwen2 | Family::Qwen3 => {
                    let m = c.opt_usize("max_window_layers")?.unwrap_or(28);
                    Box::new(move |i| window.is_none() || i < m)
                }
                _ => Box::new(|_| true),
            };
            let other = if family == Family::Qwen35 { "linear_attention" } else { "sliding_attention" };
            (0..n).map(|i| (if full(i) { "full_attention" } else { other }).to_owned()).collect()
        }
    };
    if names.len() != n {
        return Err(err(c.path, format!("layer_types has {} entries, num_hidden_layers is {n}", names.len())));
    }
    names
        .into_iter()
        .map(|t| match t.as_str() {
            "full_attention" | "sliding_attention" => Ok((Mixer::Attention, t)),
            "linear_attention" if family == Family::Qwen35 => Ok((Mixer::GatedDeltaNet, t)),
            other => Err(err(c.path, format!("unsupported layer type `{other}`"))),
        })
        .collect()
}

type RopeOf = Box<dyn Fn(&str) -> usize>;

/// The RoPE tables and which one each layer type uses (Gemma 3 has one per attention type);
/// `max_positions`: the context length, the scalings' default original context.
fn ropes(
    c: &Cfg,
    family: Family,
    head_dim: usize,
    partial_rotary: Option<f64>,
    max_positions: usize,
) -> Result<(Vec<RopeConfig>, RopeOf)> {
    let params = &c.v["rope_parameters"];
    // A top-level θ for objects without one, named in its own errors.
    let top = |key: &str, default: f64| c.opt_f64(key)?.map_or(Ok(default), |x| positive(c.path, key, x));
    if family == Family::Gemma3 {
        // As transformers 5 builds them: each type's object (default RoPE if absent), a transformers-4
        // `rope_scaling` merged into the global one, θ from `rope_theta` (global) or `rope_local_base_freq`.
        let table = |ty: &str, theta_key: &str, theta: f64| {
            let mut p = params.get(ty).filter(|v| v.is_object()).cloned().unwrap_or_else(|| serde_json::json!({}));
            if let (true, Some(scaling), Some(obj)) =
                (ty == "full_attention", c.v["rope_scaling"].as_object(), p.as_object_mut())
            {
                obj.extend(scaling.clone());
            }
            rope(c, &p, head_dim, top(theta_key, theta)?, max_positions, true)
        };
        let tables =
            vec![table("sliding_attention", "rope_local_base_freq", 1e4)?, table("full_attention", "rope_theta", 1e6)?];
        return Ok((tables, Box::new(|t: &str| usize::from(t != "sliding_attention"))));
    }
    // A transformers 4 `rope_scaling` object wins over `rope_parameters`, as in transformers (neither: default RoPE).
    let scaling = &c.v["rope_scaling"];
    let p = if scaling.as_object().is_some_and(|o| !o.is_empty()) { scaling } else { params };
    let mut table = rope(c, p, head_dim, top("rope_theta", 1e4)?, max_positions, false)?;
    let partial = match opt_f64(p, "partial_rotary_factor", c.path)? {
        Some(f) => Some(f),
        None => c.or_absent("partial_rotary_factor", partial_rotary, Cfg::opt_f64)?,
    };
    if let Some(f) = partial {
        table.dim = (head_dim as f64 * f) as usize;
    }
    Ok((vec![table], Box::new(|_: &str| 0)))
}

/// `x` if it is a positive finite number, else an error naming the field `key`.
fn positive(path: &Path, key: &str, x: f64) -> Result<f64> {
    match x > 0.0 && x.is_finite() {
        true => Ok(x),
        false => Err(err(path, format!("`{key}` is {x}; expected a positive number"))),
    }
}

/// One transformers-5 `rope_parameters` object (also accepts `type` for `rope_type`); missing fields
/// come from the top level of the config as transformers fills them (`nested`: one of Gemma 3's per-type objects).
fn rope(
    c: &Cfg,
    p: &Value,
    head_dim: usize,
    default_theta: f64,
    max_positions: usize,
    nested: bool,
) -> Result<RopeConfig> {
    let path = c.path;
    let kind = p["rope_type"].as_str().or(p["type"].as_str()).unwrap_or("default");
    let theta = positive(path, "rope_theta", opt_f64(p, "rope_theta", path)?.unwrap_or(default_theta))?;
    let num = |k: &str| {
        positive(path, k, opt_f64(p, k, path)?.ok_or_else(|| err(path, format!("rope type `{kind}` needs `{k}`")))?)
    };
    // A top-level `original_max_position_embeddings` wins over the object's; else `max_position_embeddings`.
    let original_max = || -> Result<f64> {
        let top = if nested { None } else { c.opt_f64("original_max_position_embeddings")? };
        let found = top.or(opt_f64(p, "original_max_position_embeddings", path)?).unwrap_or(max_positions as f64);
        positive(path, "original_max_position_embeddings", found)
    };
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: num("factor")? },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_positions: original_max()?,
        },
        "yarn" => {
            let factor = num("factor")?;
            let mscale = |m: f64| if factor <= 1.0 { 1.0 } else { 0.1 * m * factor.ln() + 1.0 };
            // Zero or absent betas and mscales fall back to the defaults, as transformers' `or` does.
            let nonzero = |k: &str| Ok::<_, ModelError>(opt_f64(p, k, path)?.filter(|x| *x != 0.0));
            let attention_factor =
                match (opt_f64(p, "attention_factor", path)?, nonzero("mscale")?, nonzero("mscale_all_dim")?) {
                    (Some(a), _, _) => positive(path, "attention_factor", a)?,
                    (None, Some(m), Some(all)) => mscale(m) / mscale(all),
                    _ => mscale(1.0),
                };
            RopeScaling::Yarn {
                factor,
                beta_fast: nonzero("beta_fast")?.unwrap_or(32.0),
                beta_slow: nonzero("beta_slow")?.unwrap_or(1.0),
                original_max_positions: original_max()?,
                // transformers reads `truncate` from the whole `rope_parameters`, so Gemma 3's per-type objects always truncate.
                truncate: nested || p["truncate"].as_bool().unwrap_or(true),
                attention_factor,
            }
        }
        other => {
            return Err(err(
                path,
                format!("unsupported rope type `{other}` (supported: default, linear, llama3, yarn)"),
            ));
        }
    };
    Ok(RopeConfig { theta, dim: head_dim, scaling })
}

impl Config {
    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
}
