//! The decoder shared by every family: embeddings, layers (attention or Gated DeltaNet + MLP), final norm, LM head.

use std::path::Path;

use burn::tensor::{DType, Tensor, backend::Backend};
use rmas_kernels::RmasBackend;
use rmas_kernels::quant::QuantMatrix;

use crate::attention::{Attention, AttentionRow, KvCache};
use crate::config::{self, Config, Mixer};
use crate::error::{ModelError, Result};
use crate::gated_deltanet::{DeltaState, GatedDeltaNet};
use crate::nn::{Blocks, Linear, Loader, Mlp, Precision, RmsNorm, Rope, VocabMatrix};
use crate::quant_cache::QuantCache;
use crate::weights::Weights;

/// Per-frequency divisors of the rotary frequencies (llama.cpp's GGUF form of Llama 3's rope scaling).
const ROPE_FREQS: &str = "rope_freqs.weight";

/// Name prefixes of the text model in the layouts seen on the Hub.
const PREFIXES: &[&str] = &["model.language_model.", "language_model.model.", "model.", ""];

/// Per-sequence state: KV for attention layers, conv + recurrent state for Gated DeltaNet layers.
#[derive(Clone, Debug)]
pub struct Cache<B: Backend> {
    layers: Vec<LayerCache<B>>,
    /// Per rotary kind, `cos`/`sin` `[capacity, rot_dim]` in f32: built once here, so a decode step
    /// uploads nothing for positions (empty when no layer attends).
    ropes: Vec<(Tensor<B, 2>, Tensor<B, 2>)>,
    len: usize,
    capacity: usize,
}

#[derive(Clone, Debug)]
enum LayerCache<B: Backend> {
    Kv(KvCache<B>),
    Delta(DeltaState<B>),
}

/// An empty cache of no capacity (what a cache lent to a [`crate::batch::Batch`] leaves behind).
impl<B: Backend> Default for Cache<B> {
    fn default() -> Self {
        Self { layers: Vec::new(), ropes: Vec::new(), len: 0, capacity: 0 }
    }
}

impl<B: Backend> Cache<B> {
    /// Positions consumed so far.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether nothing has been consumed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Maximum number of positions.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

enum LayerMixer<B: Backend> {
    Attention(Attention<B>),
    Delta(GatedDeltaNet<B>),
}

/// One decoder layer: pre-norm mixer and MLP with residuals (Gemma 3 adds post-norms).
struct Layer<B: Backend> {
    mixer: LayerMixer<B>,
    rope: usize,
    attn_norm: RmsNorm<B>,
    attn_out_norm: Option<RmsNorm<B>>,
    mlp_norm: RmsNorm<B>,
    mlp_out_norm: Option<RmsNorm<B>>,
    mlp: Mlp<B>,
}

impl<B: RmasBackend> Layer<B> {
    /// The weight products: the mixer's, then the MLP's.
    fn linears(&self) -> [&Linear<B>; 4] {
        let [a, b] = match &self.mixer {
            LayerMixer::Attention(a) => a.linears(),
            LayerMixer::Delta(d) => d.linears(),
        };
        [a, b, &self.mlp.gate_up, &self.mlp.down]
    }

    /// [`Self::linears`], mutable.
    fn linears_mut(&mut self) -> [&mut Linear<B>; 4] {
        let [a, b] = match &mut self.mixer {
            LayerMixer::Attention(a) => a.linears_mut(),
            LayerMixer::Delta(d) => d.linears_mut(),
        };
        [a, b, &mut self.mlp.gate_up, &mut self.mlp.down]
    }
}

/// A loaded agent language model.
pub struct Model<B: Backend> {
    config: Config,
    embed: VocabMatrix<B>, // [V, H]
    layers: Vec<Layer<B>>,
    norm: RmsNorm<B>,
    lm_head: Option<VocabMatrix<B>>, // [V, H]; None: tied to `embed`
    ropes: Vec<Rope>,
    device: B::Device,
    dtype: DType,
}

impl<B: RmasBackend> Model<B> {
    /// Loads `config.json` and the safetensors weights of a checkpoint directory. Weights quantized
    /// at load ([`crate::nn::Blocks::Quantize`]) come from `precision.cache` when it holds this
    /// checkpoint's, and are put there otherwise ([`crate::quant_cache`]).
    pub fn load(dir: &Path, device: &B::Device, precision: impl Into<Precision>) -> Result<Self> {
        let precision = precision.into();
        let config = config::load(dir)?;
        let mut weights = Weights::from_dir(dir)?;
        // The cache entry this load fills: one that holds no blocks for the checkpoint yet.
        let miss = match (precision.blocks, &precision.cache) {
            (Blocks::Quantize(format), Some(cache)) if B::QUANTIZED_PRODUCTS => {
                let entry = QuantCache::entry(cache, dir, &weights, format)?;
                let hit = entry.apply(&mut weights);
                if !hit {
                    weights.record_quantized();
                }
                (!hit).then_some(entry)
            }
            _ => None,
        };
        let model = Self::from_weights(config, &weights, device, precision)?;
        if let Some(cache) = miss {
            // A cache that cannot be written (a read-only directory, a full disk) costs only the
            // next load's quantization; the model is whole either way.
            let _ = cache.store(&weights.take_quantized());
        }
        Ok(model)
    }

    /// Loads a GGUF file (llama architecture): the model and the file's header, which holds its
    /// tokenizer and chat template. Block-quantized matrices (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K) stay
    /// blocks unless `precision` says [`crate::nn::Blocks::Dense`] or the backend takes no blocks; the
    /// rest are dequantized.
    pub fn load_gguf(
        path: &Path,
        device: &B::Device,
        precision: impl Into<Precision>,
    ) -> Result<(Self, crate::gguf::GgufFile)> {
        let (weights, gguf) = Weights::from_gguf(path)?;
        let config = gguf.config()?;
        Ok((Self::from_weights(config, &weights, device, precision)?, gguf))
    }

    /// Builds the model from a parsed config and indexed weights.
    pub fn from_weights(
        config: Config,
        weights: &Weights,
        device: &B::Device,
        precision: impl Into<Precision>,
    ) -> Result<Self> {
        let Precision { dtype, blocks, .. } = precision.into();
        if !B::supports_dtype(device, dtype) {
            return Err(ModelError::UnsupportedDtype { dtype, backend: B::name(device) });
        }
        let prefix =
            PREFIXES.iter().find(|p| weights.contains(&format!("{p}embed_tokens.weight"))).ok_or_else(|| {
                ModelError::MissingTensor {
                    name: "embed_tokens.weight".into(),
                    files: format!("any of the prefixes {PREFIXES:?}"),
                }
            })?;
        let root = Loader::<B> { weights, prefix: prefix.to_string(), device, dtype, blocks };
        let c = &config;
        let (h, v) = (c.hidden_size, c.vocab_size);
        let max_bytes = B::max_buffer_bytes(device);
        let embed = VocabMatrix::load(&root, "embed_tokens.weight", [v, h], max_bytes)?;
        let layers = c
            .layers
            .iter()
            .enumerate()
            .map(|(i, lc)| {
                let l = root.at(format_args!("layers.{i}"));
                let norm = |name: &str| RmsNorm::load(&l, name, h, c.norm, c.rms_norm_eps);
                let mixer = match lc.mixer {
                    Mixer::Attention => LayerMixer::Attention(Attention::load(&l.at("self_attn"), c, lc)?),
                    Mixer::GatedDeltaNet => {
                        let gdn = c.gdn.ok_or_else(|| ModelError::Config {
                            path: "config.json".into(),
                            msg: format!("layer {i} is a Gated DeltaNet layer but the config has no linear_* sizes"),
                        })?;
                        LayerMixer::Delta(GatedDeltaNet::load(&l.at("linear_attn"), c, gdn)?)
                    }
                };
                let (attn_out_norm, mlp_norm, mlp_out_norm) = if c.sandwich_norms {
                    (
                        Some(norm("post_attention_layernorm")?),
                        norm("pre_feedforward_layernorm")?,
                        Some(norm("post_feedforward_layernorm")?),
                    )
                } else {
                    (None, norm("post_attention_layernorm")?, None)
                };
                Ok(Layer {
                    mixer,
                    rope: lc.rope,
                    attn_norm: norm("input_layernorm")?,
                    attn_out_norm,
                    mlp_norm,
                    mlp_out_norm,
                    mlp: Mlp::load(&l.at("mlp"), h, c.intermediate_size, c.activation, c.mlp_bias)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(&root, "norm", h, c.norm, c.rms_norm_eps)?;
        let lm_head = if c.tie_embeddings {
            None
        } else {
            let name = ["lm_head", "language_model.lm_head"]
                .into_iter()
                .find(|n| weights.contains(&format!("{n}.weight")))
                .unwrap_or("lm_head");
            let top = Loader::<B> { weights, prefix: String::new(), device, dtype, blocks };
            Some(VocabMatrix::load(&top, &format!("{name}.weight"), [v, h], max_bytes)?)
        };
        let ropes = c.ropes.iter().map(Rope::new).collect::<Vec<_>>();
        let ropes = match weights.shape(ROPE_FREQS) {
            Some(&[n]) => {
                let factors = weights.data(ROPE_FREQS, &[n])?.to_vec::<f32>().expect("weights are read as f32");
                let scaled: std::result::Result<Vec<_>, _> =
                    ropes.into_iter().map(|r| r.with_freq_factors(&factors)).collect();
                scaled.map_err(|msg| ModelError::Config { path: ROPE_FREQS.into(), msg })?
            }
            _ => ropes,
        };
        let mut model = Self { embed, layers, norm, lm_head, ropes, device: device.clone(), dtype, config };
        if B::BLOCKS_ON_DEVICE {
            // Each matrix's device copy now, so that a device short of memory fails the load rather
            // than the first step, and the host keeps none of the blocks (docs/quantization.md, "On
            // the GPU").
            model.layers.iter_mut().flat_map(Layer::linears_mut).for_each(|l| l.release_to(device));
            [Some(&mut model.embed), model.lm_head.as_mut()].into_iter().flatten().for_each(|m| m.release_to(device));
        }
        Ok(model)
    }

    /// The weight matrices held as quantized blocks (layer products, then the embedding and output
    /// matrices), each once.
    pub fn block_matrices(&self) -> impl Iterator<Item = &QuantMatrix> {
        let layers = self.layers.iter().flat_map(Layer::linears).filter_map(Linear::blocks);
        layers.chain([Some(&self.embed), self.lm_head.as_ref()].into_iter().flatten().filter_map(VocabMatrix::blocks))
    }

    /// The model's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// An empty cache for `prompt` positions and `new_positions` more, checked against the context
    /// window and the memory it would need before anything is allocated.
    pub fn new_cache(&self, prompt: usize, new_positions: usize) -> Result<Cache<B>> {
        let c = &self.config;
        let capacity = prompt.saturating_add(new_positions);
        if capacity > c.max_positions {
            return Err(ModelError::ContextOverflow {
                needed: capacity,
                limit: c.max_positions,
                what: "max_position_embeddings",
            });
        }
        self.check_cache_fits(capacity)?;
        let layers = self
            .layers
            .iter()
            .map(|l| match &l.mixer {
                LayerMixer::Attention(_) => {
                    LayerCache::Kv(KvCache::new(c.num_kv_heads, capacity, c.head_dim, &self.device, self.dtype))
                }
                LayerMixer::Delta(_) => LayerCache::Delta(DeltaState::new(
                    c.gdn.as_ref().expect("delta layers imply gdn config"),
                    &self.device,
                    self.dtype,
                )),
            })
            .collect();
        let attends = self.layers.iter().any(|l| matches!(l.mixer, LayerMixer::Attention(_)));
        let ropes = match attends {
            true => self.ropes.iter().map(|r| r.tables::<B>(0, capacity, &self.device)).collect(),
            false => Vec::new(),
        };
        Ok(Cache { layers, ropes, len: 0, capacity })
    }

    /// One attention layer's key (or value) buffer for `capacity` positions, in bytes.
    fn kv_buffer_bytes(&self, capacity: usize) -> u64 {
        let c = &self.config;
        [c.num_kv_heads, capacity, c.head_dim, self.dtype.size()]
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .unwrap_or(u64::MAX)
    }

    /// Bytes of a cache of `capacity` positions: keys and values of every attention layer, and the
    /// convolution and recurrent states of every Gated DeltaNet layer.
    pub fn cache_bytes(&self, capacity: usize) -> u64 {
        let per_layer = |l: &Layer<B>| match (&l.mixer, &self.config.gdn) {
            (LayerMixer::Attention(_), _) => self.kv_buffer_bytes(capacity).saturating_mul(2),
            (LayerMixer::Delta(_), Some(g)) => {
                ((g.conv_kernel - 1) * g.conv_dim() * self.dtype.size()
                    + g.num_value_heads * g.key_head_dim * g.value_head_dim * 4) as u64
            }
            (LayerMixer::Delta(_), None) => 0,
        };
        self.layers.iter().map(per_layer).fold(0u64, u64::saturating_add)
    }

    /// Estimates a cache of `capacity` positions before it is allocated: one layer's K buffer
    /// must fit one device buffer, and all of them the memory the device has left (where known).
    fn check_cache_fits(&self, capacity: usize) -> Result<()> {
        let per_buffer = self.kv_buffer_bytes(capacity);
        let total = self.cache_bytes(capacity);
        let too_large = |needed, limit, what| ModelError::CacheTooLarge { capacity, needed, limit, what };
        let max_buffer = B::max_buffer_bytes(&self.device);
        if per_buffer > max_buffer {
            return Err(too_large(per_buffer, max_buffer, "one layer's keys in one device buffer"));
        }
        match B::available_bytes(&self.device) {
            Some(available) if total > available => Err(too_large(total, available, "the caches of every layer")),
            _ => Ok(()),
        }
    }

    /// Input embeddings `[T, H]` of token ids (Gemma 3: scaled by √H).
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor<B, 2>> {
        let v = self.config.vocab_size;
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= v) {
            return Err(ModelError::Input(format!("token id {bad} is outside the vocabulary of {v}")));
        }
        let x = self.embed.rows(ids);
        Ok(match self.config.embed_scale {
            Some(s) => x * s,
            None => x,
        })
    }

    /// Runs `x` `[T, H]` (embeddings) after the cached positions; returns final-norm hidden states `[T, H]`.
    pub fn forward(&self, x: Tensor<B, 2>, cache: &mut Cache<B>) -> Result<Tensor<B, 2>> {
        let t = x.dims()[0];
        self.run(x, &[t], &mut [cache], None)
    }

    /// Runs several sequences in one pass (docs/batching.md): `x` `[ΣT, H]` packs sequence `i`'s
    /// `lens[i]` rows after those of the sequences before it, each continuing its own `caches[i]`.
    /// Returns their final-norm hidden states, packed the same way. Products run once on all rows;
    /// attention and the recurrent mixers run per sequence, so a sequence's result does not depend
    /// on the others in the pack.
    pub fn forward_packed(
        &self,
        x: Tensor<B, 2>,
        lens: &[usize],
        caches: &mut [&mut Cache<B>],
    ) -> Result<Tensor<B, 2>> {
        self.run(x, lens, caches, None)
    }

    /// Like [`Self::forward`] but also returns HF's `hidden_states`: the input, each layer's output, and the final norm.
    pub fn forward_traced(&self, x: Tensor<B, 2>, cache: &mut Cache<B>) -> Result<Vec<Tensor<B, 2>>> {
        let t = x.dims()[0];
        let mut trace = vec![x.clone()];
        let h = self.run(x, &[t], &mut [cache], Some(&mut trace))?;
        trace.pop(); // HF replaces the last layer's raw output by the normed one
        trace.push(h);
        Ok(trace)
    }

    fn run(
        &self,
        mut x: Tensor<B, 2>,
        lens: &[usize],
        caches: &mut [&mut Cache<B>],
        mut trace: Option<&mut Vec<Tensor<B, 2>>>,
    ) -> Result<Tensor<B, 2>> {
        let [n, h] = x.dims();
        if h != self.config.hidden_size {
            return Err(ModelError::Input(format!(
                "input rows have width {h}, the model's hidden size is {}",
                self.config.hidden_size
            )));
        }
        if lens.len() != caches.len() || lens.iter().sum::<usize>() != n {
            return Err(ModelError::Input(format!(
                "a packed input of {n} rows split as {lens:?} for {} caches",
                caches.len()
            )));
        }
        for (&t, cache) in lens.iter().zip(caches.iter()) {
            if cache.len + t > cache.capacity {
                return Err(ModelError::ContextOverflow {
                    needed: cache.len + t,
                    limit: cache.capacity,
                    what: "cache capacity",
                });
            }
        }
        // Per sequence and rotary kind, the tables at the sequence's own positions: [T, rot_dim]
        // views of its cache's tables, which its attention reads (no copy per sequence).
        let tables: Vec<Vec<_>> = lens
            .iter()
            .zip(caches.iter())
            .map(|(&t, c)| {
                let at = |table: &Tensor<B, 2>| table.clone().narrow(0, c.len, t);
                c.ropes.iter().map(|(cos, sin)| (at(cos), at(sin))).collect()
            })
            .collect();
        // Each block's output is added to the residual stream by the next norm (one kernel for both).
        let mut branch: Option<Tensor<B, 2>> = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let (stream, y) = layer.attn_norm.forward_residual(x, branch.take());
            x = stream;
            let states = caches.iter_mut().map(|c| &mut c.layers[i]).zip(lens);
            let y = match &layer.mixer {
                LayerMixer::Attention(a) => {
                    let rows = states.zip(&tables).map(|((state, &len), tables)| match state {
                        LayerCache::Kv(cache) => AttentionRow { len, cache, rope: tables[layer.rope].clone() },
                        LayerCache::Delta(_) => unreachable!("caches are built from the same layer list"),
                    });
                    a.forward(y, rows.collect())
                }
                LayerMixer::Delta(d) => {
                    let rows = states.map(|(state, &len)| match state {
                        LayerCache::Delta(s) => (len, s),
                        LayerCache::Kv(_) => unreachable!("caches are built from the same layer list"),
                    });
                    d.forward(y, rows.collect())
                }
            };
            let y = match &layer.attn_out_norm {
                Some(n) => n.forward(y),
                None => y,
            };
            let (stream, y) = layer.mlp_norm.forward_residual(x, Some(y));
            let y = layer.mlp.forward(y, lens);
            x = stream;
            branch = Some(match &layer.mlp_out_norm {
                Some(n) => n.forward(y),
                None => y,
            });
            if let Some(trace) = trace.as_deref_mut() {
                x = x + branch.take().expect("set above");
                trace.push(x.clone());
            }
        }
        for (&t, cache) in lens.iter().zip(caches.iter_mut()) {
            cache.len += t;
        }
        Ok(self.norm.forward_residual(x, branch).1)
    }

    /// LM-head logits `[T, V]` of final-norm hidden states.
    pub fn logits(&self, h: Tensor<B, 2>) -> Tensor<B, 2> {
        let t = h.dims()[0];
        self.logits_packed(h, &[t])
    }

    /// [`Self::logits`] of packed rows `[ΣT, H]` of sequences of `lens` rows (as [`Self::forward_packed`]).
    pub fn logits_packed(&self, h: Tensor<B, 2>, lens: &[usize]) -> Tensor<B, 2> {
        let logits = self.lm_head.as_ref().unwrap_or(&self.embed).logits(h, lens);
        match self.config.final_logit_softcap {
            Some(cap) => logits.div_scalar(cap).tanh().mul_scalar(cap),
            None => logits,
        }
    }
}
