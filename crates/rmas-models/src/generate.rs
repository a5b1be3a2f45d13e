//! Token generation with HF `generate` semantics: greedy or temperature → top-k → top-p → multinomial.

use burn::tensor::{Tensor, TensorData, activation};
use rand::{Rng, SeedableRng, rngs::StdRng};
use web_time::Instant;

use crate::RmasBackend;
use crate::batch::Calls;
use crate::error::{ModelError, Result};
use crate::model::{Cache, Model};

/// How the next token is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampling {
    /// Argmax (first maximal index).
    Greedy,
    /// HF sampling: temperature, then top-k (`0` disables), then top-p (`1.0` disables).
    Sample { temperature: f32, top_k: usize, top_p: f32 },
}

/// Picks tokens from logits; owns the RNG so a seed reproduces a whole run.
pub struct Sampler {
    sampling: Sampling,
    rng: StdRng,
}

impl Sampler {
    /// A sampler seeded with `seed`.
    pub fn new(sampling: Sampling, seed: u64) -> Self {
        Self { sampling, rng: StdRng::seed_from_u64(seed) }
    }

    /// How this sampler chooses.
    pub(crate) fn sampling(&self) -> Sampling {
        self.sampling
    }

    /// Chooses a token from one row of logits `[1, V]` (one asynchronous host read-back).
    pub async fn sample<B: RmasBackend>(&mut self, logits: Tensor<B, 2>) -> Result<u32> {
        let read = self.sampling.read(logits).await?;
        self.choose(&read, 0)
    }

    /// Chooses the token of row `row` of what [`Sampling::read`] read back for this sampler.
    pub(crate) fn choose(&mut self, read: &TensorData, row: usize) -> Result<u32> {
        let missing = || ModelError::Device(format!("read-back of shape {:?} has no row {row}", read.shape));
        match self.sampling {
            Sampling::Greedy => {
                let id = *host_slice::<i64>(read, "the argmax token ids")?.get(row).ok_or_else(missing)?;
                Ok(id as u32)
            }
            Sampling::Sample { temperature, top_k, top_p } => {
                let width = read.shape.get(1).copied().unwrap_or(0);
                let scores =
                    host_slice::<f32>(read, "the logits")?.chunks(width.max(1)).nth(row).ok_or_else(missing)?;
                Ok(sample_scores(scores, temperature, top_k, top_p, self.rng.random::<f64>()))
            }
        }
    }
}

/// A host read-back in flight.
pub(crate) type ReadBack = std::pin::Pin<Box<dyn std::future::Future<Output = Result<TensorData>>>>;

impl Sampling {
    /// What choosing reads back from logits `[n, V]`, in one read for all `n` rows: the argmax ids
    /// `[n, 1]` (i64) when greedy, else the logits in f32.
    pub(crate) fn read<B: RmasBackend>(self, logits: Tensor<B, 2>) -> ReadBack {
        match self {
            Sampling::Greedy => Box::pin(async move { Ok(read_back(logits.argmax(1)).await?.convert::<i64>()) }),
            Sampling::Sample { .. } => {
                Box::pin(async move { Ok(read_back(rmas_kernels::f32_of(logits)).await?.convert::<f32>()) })
            }
        }
    }
}

/// The values of a tensor read back to the host; a device error names `what` if they are not `T`.
fn host_slice<'a, T: burn::tensor::Element>(data: &'a TensorData, what: &str) -> Result<&'a [T]> {
    data.as_slice::<T>().map_err(|e| ModelError::Device(format!("reading back {what}: {e:?}")))
}

/// Copies a tensor to the host without blocking the thread (required on WebGPU); counted in [`crate::traffic`].
pub async fn read_back<B: burn::tensor::backend::Backend, const D: usize, K>(t: Tensor<B, D, K>) -> Result<TensorData>
where
    K: burn::tensor::BasicOps<B>,
{
    crate::traffic::count_read();
    t.into_data_async().await.map_err(|e| ModelError::Device(format!("{e:?}")))
}

/// Fails with [`ModelError::NonFinite`] naming `what` if `t` holds a NaN or an infinity. One
/// scalar is read back: any NaN or infinity makes the f32 sum non-finite (finite model values
/// are far too small for the sum to overflow).
pub async fn check_finite<B: burn::tensor::backend::Backend, const D: usize>(
    t: Tensor<B, D>,
    what: &'static str,
) -> Result<()> {
    let sum = read_back(rmas_kernels::f32_of(t).sum()).await?.convert::<f32>();
    match host_slice::<f32>(&sum, what)?[0].is_finite() {
        true => Ok(()),
        false => Err(ModelError::NonFinite { what }),
    }
}

/// HF's warper chain on host scores, then inverse-CDF sampling with `u ∈ [0, 1)`.
pub fn sample_scores(scores: &[f32], temperature: f32, top_k: usize, top_p: f32, u: f64) -> u32 {
    let mut s: Vec<f32> =
        if temperature != 1.0 { scores.iter().map(|x| x / temperature).collect() } else { scores.to_vec() };
    if top_k > 0 && top_k < s.len() {
        let mut sorted = s.clone();
        sorted.sort_unstable_by(|a, b| b.total_cmp(a));
        let kth = sorted[top_k - 1];
        s.iter_mut().filter(|x| **x < kth).for_each(|x| *x = f32::NEG_INFINITY);
    }
    if top_p < 1.0 {
        let mut order: Vec<usize> = (0..s.len()).collect();
        order.sort_by(|&a, &b| s[a].total_cmp(&s[b])); // ascending, stable like torch.sort
        let probs = softmax(&order.iter().map(|&i| s[i]).collect::<Vec<_>>());
        let mut cum = 0.0f32;
        let last = order.len() - 1;
        for (rank, &i) in order.iter().enumerate() {
            cum += probs[rank];
            if cum <= 1.0 - top_p && rank != last {
                s[i] = f32::NEG_INFINITY;
            }
        }
    }
    let probs = softmax(&s);
    let mut acc = 0.0f64;
    for (i, p) in probs.iter().enumerate() {
        acc += *p as f64;
        if u < acc {
            return i as u32;
        }
    }
    probs.iter().rposition(|p| *p > 0.0).unwrap_or(0) as u32
}

fn softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// Limits and extras of one generation.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// Generation stops after emitting any of these (the token is kept in the output).
    pub stop_ids: Vec<u32>,
    /// Also return each token's log-probability (log-softmax of its step's logits, f32).
    pub logprobs: bool,
}

/// Generated ids with timings.
#[derive(Clone, Debug, Default)]
pub struct Generation {
    pub ids: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

impl Generation {
    /// Decode throughput (tokens after the first, per second).
    pub fn decode_tokens_per_s(&self) -> f64 {
        if self.ids.len() > 1 && self.decode_ms > 0.0 {
            (self.ids.len() - 1) as f64 * 1000.0 / self.decode_ms
        } else {
            0.0
        }
    }
}

/// Feeds `prompt` `[L, H]` (embeddings) after `cache`, then generates; `on_token` sees the ids so far after
/// each step and returns `true` to stop there. Native callers drive it with [`crate::block_on`].
pub async fn generate<B: RmasBackend>(
    model: &Model<B>,
    prompt: Tensor<B, 2>,
    cache: &mut Cache<B>,
    opts: &GenerateOptions,
    sampler: &mut Sampler,
    on_token: impl FnMut(&[u32]) -> bool,
) -> Result<Generation> {
    generate_with(Calls::Alone, model, prompt, cache, opts, sampler, on_token).await
}

/// [`generate`] with its model calls made through `calls` (packed with other sequences' in a
/// [`crate::batch::Batch`]); the ids do not depend on the other sequences.
pub async fn generate_with<B: RmasBackend>(
    calls: Calls<'_, B>,
    model: &Model<B>,
    prompt: Tensor<B, 2>,
    cache: &mut Cache<B>,
    opts: &GenerateOptions,
    sampler: &mut Sampler,
    on_token: impl FnMut(&[u32]) -> bool,
) -> Result<Generation> {
    check_room(cache, prompt.dims()[0] + opts.max_new_tokens.saturating_sub(1))?;
    let start = Instant::now();
    let h = prefill(calls, model, prompt, cache).await?;
    let prompt_ms = start.elapsed().as_secs_f64() * 1e3;
    let mut out = generate_from(calls, model, h, cache, opts, sampler, on_token).await?;
    out.prefill_ms += prompt_ms;
    Ok(out)
}

/// Fails before any work when `cache` has no room for `rows` more positions.
fn check_room<B: RmasBackend>(cache: &Cache<B>, rows: usize) -> Result<()> {
    let needed = cache.len() + rows;
    if needed > cache.capacity() {
        return Err(ModelError::ContextOverflow { needed, limit: cache.capacity(), what: "cache capacity" });
    }
    Ok(())
}

/// Runs `prompt` `[T, H]` into `cache` and returns the final-norm hidden state of its last row
/// `[1, H]`; an empty prompt is an error (it has no last row).
pub async fn prefill<B: RmasBackend>(
    calls: Calls<'_, B>,
    model: &Model<B>,
    prompt: Tensor<B, 2>,
    cache: &mut Cache<B>,
) -> Result<Tensor<B, 2>> {
    if prompt.dims()[0] == 0 {
        return Err(ModelError::Input("a prompt needs at least one row".into()));
    }
    Ok(last_row(calls.forward(model, prompt, cache).await?))
}

/// [`generate_with`] after its prompt: `h` `[1, H]` is the final-norm hidden state of the prompt's
/// last row, whose positions `cache` already holds (a prompt run once for two continuations).
pub async fn generate_from<B: RmasBackend>(
    calls: Calls<'_, B>,
    model: &Model<B>,
    mut h: Tensor<B, 2>,
    cache: &mut Cache<B>,
    opts: &GenerateOptions,
    sampler: &mut Sampler,
    mut on_token: impl FnMut(&[u32]) -> bool,
) -> Result<Generation> {
    check_room(cache, opts.max_new_tokens.saturating_sub(1))?;
    let mut out = Generation::default();
    let start = Instant::now();
    for step in 0..opts.max_new_tokens {
        // The first step also checks the logits, and log-probabilities need them at every step;
        // otherwise only the choice comes back, read once for all the sequences of a pack.
        let id = if step == 0 || opts.logprobs {
            let logits = calls.logits(model, h).await?;
            if step == 0 {
                // Where argmax would quietly pick token 0 (NaN weights decoded as "!!!!").
                check_finite(logits.clone(), "logits").await?;
            }
            let id = sampler.sample(logits.clone()).await?;
            if opts.logprobs {
                let lp = activation::log_softmax(rmas_kernels::f32_of(logits), 1).narrow(1, id as usize, 1);
                let lp = read_back(lp).await?.convert::<f32>();
                out.logprobs.push(host_slice::<f32>(&lp, "a log-probability")?[0]);
            }
            id
        } else {
            calls.token(model, h, sampler).await?
        };
        if step == 0 {
            out.prefill_ms = start.elapsed().as_secs_f64() * 1e3;
        }
        out.ids.push(id);
        let stop = on_token(&out.ids);
        if stop || opts.stop_ids.contains(&id) || step + 1 == opts.max_new_tokens {
            break;
        }
        h = last_row(calls.forward_tokens(model, &[id], cache).await?);
    }
    out.decode_ms = start.elapsed().as_secs_f64() * 1e3 - out.prefill_ms;
    Ok(out)
}

/// The last row `[1, H]` of `[T, H]`.
pub fn last_row<B: burn::tensor::backend::Backend>(h: Tensor<B, 2>) -> Tensor<B, 2> {
    let t = h.dims()[0];
    h.narrow(0, t - 1, 1)
}
