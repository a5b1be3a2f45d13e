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
    pub(crate) fn choose(&mut self, read: &Choices, row: usize) -> Result<u32> {
        let missing = || ModelError::Device(format!("the read-back has no row {row}"));
        match read {
            Choices::Argmax(ids) => ids.get(row).copied().ok_or_else(missing),
            Choices::Kept { rows, top_p } => {
                Ok(sample_kept(rows.get(row).ok_or_else(missing)?, *top_p, self.rng.random::<f64>()))
            }
        }
    }
}

/// What choosing needs of `n` rows of logits, read back to the host at once.
pub(crate) enum Choices {
    /// Greedy: each row's argmax id.
    Argmax(Vec<u32>),
    /// Sampling: each row's tokens that top-k keeps, and the top-p to apply to them.
    Kept { rows: Vec<Kept>, top_p: f32 },
}

/// The tokens of one row that temperature and top-k leave a chance: their ids, ascending, and
/// their scores (logit / temperature). HF sets the others to −∞, whose probability is exactly 0
/// in every softmax and sum after it, so leaving them out changes no bit of the choice.
pub(crate) struct Kept {
    ids: Vec<u32>,
    scores: Vec<f32>,
}

/// A host read-back in flight.
pub(crate) type ReadBack = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Choices>>>>;

impl Sampling {
    /// What choosing reads back from logits `[n, V]`, in one read for all `n` rows (docs/batching.md,
    /// "Packed read-backs"): the argmax ids when greedy. When sampling, each row's logits, or on a
    /// device ([`RmasBackend::top_values`]) with top-k on, only its `k + 1` largest with their
    /// ids ([`candidates`]); a row whose candidates cannot settle top-k (a tie at the k-th score, a
    /// non-finite logit) has the logits read after all.
    pub(crate) fn read<B: RmasBackend>(self, logits: Tensor<B, 2>) -> ReadBack {
        match self {
            Sampling::Greedy => Box::pin(async move {
                let ids = read_back(logits.argmax(1)).await?.convert::<i64>();
                Ok(Choices::Argmax(
                    host_slice::<i64>(&ids, "the argmax token ids")?.iter().map(|&i| i as u32).collect(),
                ))
            }),
            Sampling::Sample { temperature, top_k, top_p } => Box::pin(async move {
                let [n, vocab] = logits.dims();
                if let Some(top) = (temperature > 0.0 && top_k > 0).then(|| candidates(&logits, top_k + 1)).flatten() {
                    let read = read_back(top).await?.convert::<f32>();
                    let rows = host_slice::<f32>(&read, "the top-k candidates")?.chunks(2 * (top_k + 1) + 1);
                    let kept: Option<Vec<Kept>> =
                        rows.map(|row| Kept::of_candidates(row, temperature, top_k, vocab)).collect();
                    if let Some(rows) = kept.filter(|k| k.len() == n) {
                        return Ok(Choices::Kept { rows, top_p });
                    }
                }
                let read = read_back(rmas_kernels::f32_of(logits)).await?.convert::<f32>();
                let rows = host_slice::<f32>(&read, "the logits")?.chunks(vocab.max(1));
                let rows = rows.map(|row| Kept::of_scores(row, temperature, top_k)).collect();
                Ok(Choices::Kept { rows, top_p })
            }),
        }
    }
}

/// Each row's `m` largest logits of `[n, V]` with their ids ([`RmasBackend::top_values`]) and the
/// sum of the whole row: `[n, 2m + 1]` f32 (values ‖ ids ‖ sum), so that a sampled step reads back
/// `2m + 1` values per row instead of `V`; `None` where the backend reads whole rows.
fn candidates<B: RmasBackend>(logits: &Tensor<B, 2>, m: usize) -> Option<Tensor<B, 2>> {
    let top = B::top_values(logits.clone(), m)?; // [n, 2m]
    let sum = rmas_kernels::f32_of(logits.clone()).sum_dim(1); // [n, 1]
    Some(Tensor::cat(vec![top, sum], 1))
}

impl Kept {
    /// HF's temperature and top-k on one row of logits: the ids whose score is not below the k-th
    /// largest (all ties kept), or every id when top-k is off (`0` or at least `V`).
    fn of_scores(logits: &[f32], temperature: f32, top_k: usize) -> Self {
        let s: Vec<f32> = logits.iter().map(|&x| scaled(x, temperature)).collect();
        let ids: Vec<u32> = if top_k > 0 && top_k < s.len() {
            // The k-th largest in O(V): the value a full descending sort puts at k − 1.
            let kth = *s.clone().select_nth_unstable_by(top_k - 1, |a, b| b.total_cmp(a)).1;
            // HF masks `scores < kth`: a NaN is not below it, so it stays.
            let below = |x: f32| x.partial_cmp(&kth) == Some(std::cmp::Ordering::Less);
            (0..s.len()).filter(|&i| !below(s[i])).map(|i| i as u32).collect()
        } else {
            (0..s.len() as u32).collect()
        };
        let scores = ids.iter().map(|&i| s[i as usize]).collect();
        Self { ids, scores }
    }

    /// [`Self::of_scores`] from one row of [`candidates`] (`k + 1` values, their ids, the row's
    /// sum), or `None` where they cannot settle it: a non-finite logit, or a (k+1)-th score equal
    /// to the k-th, whose ties may reach past the candidates. Otherwise the k largest are exactly
    /// the ids kept: dividing by the temperature keeps the order, so every id past the (k+1)-th
    /// scores below the k-th too. A value at `f32::MIN` (the kernel's empty slot) or an id not
    /// below `vocab` is not taken either.
    fn of_candidates(row: &[f32], temperature: f32, top_k: usize, vocab: usize) -> Option<Self> {
        let m = top_k + 1;
        let (values, rest) = row.split_at_checked(m)?;
        let (ids, sum) = rest.split_at_checked(m)?;
        let valid = sum.first()?.is_finite()
            && values.iter().all(|v| v.is_finite() && *v > f32::MIN)
            && ids.iter().all(|&i| i >= 0.0 && (i as usize) < vocab && i.fract() == 0.0);
        if !valid || scaled(values[top_k], temperature) >= scaled(values[top_k - 1], temperature) {
            return None;
        }
        let mut kept: Vec<(u32, f32)> =
            ids[..top_k].iter().zip(&values[..top_k]).map(|(&i, &v)| (i as u32, scaled(v, temperature))).collect();
        kept.sort_unstable_by_key(|&(i, _)| i);
        let (ids, scores) = kept.into_iter().unzip();
        Some(Self { ids, scores })
    }
}

/// A logit after HF's temperature (no division at 1.0, as HF skips it).
fn scaled(x: f32, temperature: f32) -> f32 {
    if temperature != 1.0 { x / temperature } else { x }
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
    crate::traffic::count_read(t.shape().num_elements() * t.dtype().size());
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

/// HF's warper chain on one row of host logits (temperature → top-k → top-p), then inverse-CDF
/// sampling with `u ∈ [0, 1)`.
pub fn sample_scores(logits: &[f32], temperature: f32, top_k: usize, top_p: f32, u: f64) -> u32 {
    sample_kept(&Kept::of_scores(logits, temperature, top_k), top_p, u)
}

/// Top-p over the ids that top-k kept, then inverse-CDF sampling with `u`. HF runs this over the
/// whole vocabulary, the removed ids at −∞: each adds an exact 0 to every sum (and sorts before
/// the kept ones), so the kept ids alone, in id order, give the same bits in O(k log k).
fn sample_kept(kept: &Kept, top_p: f32, u: f64) -> u32 {
    let mut s = kept.scores.clone();
    if top_p < 1.0 {
        let mut order: Vec<usize> = (0..s.len()).collect();
        order.sort_by(|&a, &b| s[a].total_cmp(&s[b])); // ascending, stable like torch.sort
        let probs = softmax(&order.iter().map(|&i| s[i]).collect::<Vec<_>>());
        let mut cum = 0.0f32;
        let last = order.len().saturating_sub(1);
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
            return kept.ids[i];
        }
    }
    probs.iter().rposition(|p| *p > 0.0).map_or(0, |i| kept.ids[i])
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
        // otherwise a step forwards the last token and only its choice comes back, read once for
        // all the sequences of a pack.
        let last = out.ids.last().copied();
        let id = if step == 0 || opts.logprobs {
            if let Some(last) = last {
                h = last_row(calls.forward_tokens(model, &[last], cache).await?);
            }
            let logits = calls.logits(model, h.clone()).await?;
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
            calls.step(model, last.expect("a step after the first"), cache, sampler).await?
        };
        if step == 0 {
            out.prefill_ms = start.elapsed().as_secs_f64() * 1e3;
        }
        out.ids.push(id);
        let stop = on_token(&out.ids);
        if stop || opts.stop_ids.contains(&id) || step + 1 == opts.max_new_tokens {
            break;
        }
    }
    out.decode_ms = start.elapsed().as_secs_f64() * 1e3 - out.prefill_ms;
    Ok(out)
}

/// The last row `[1, H]` of `[T, H]`.
pub fn last_row<B: burn::tensor::backend::Backend>(h: Tensor<B, 2>) -> Tensor<B, 2> {
    let t = h.dims()[0];
    h.narrow(0, t - 1, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HF's temperature and top-k as its warpers run them — a sort of the whole row, the removed
    /// ids set to −∞ — then top-p and the draw over every id of the vocabulary: the oracle that
    /// [`sample_scores`] (a selection, then only the kept ids) must match bit for bit.
    fn hf_whole_vocabulary(scores: &[f32], temperature: f32, top_k: usize, top_p: f32, u: f64) -> u32 {
        let mut s: Vec<f32> = scores.iter().map(|&x| scaled(x, temperature)).collect();
        if top_k > 0 && top_k < s.len() {
            let mut sorted = s.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[top_k - 1];
            s.iter_mut().filter(|x| **x < kth).for_each(|x| *x = f32::NEG_INFINITY);
        }
        sample_kept(&Kept { ids: (0..s.len() as u32).collect(), scores: s }, top_p, u)
    }

    /// Logits with many exact ties (values on a grid of 1/4), a few −∞, and a spread that leaves
    /// top-p real choices.
    fn logits(rng: &mut StdRng, vocab: usize) -> Vec<f32> {
        (0..vocab)
            .map(|_| match rng.random_range(0..40) {
                0 => f32::NEG_INFINITY,
                _ => (rng.random_range(-24..24) as f32) * 0.25,
            })
            .collect()
    }

    #[test]
    fn kept_ids_sample_as_hf_over_the_whole_vocabulary() {
        let mut rng = StdRng::seed_from_u64(3);
        for case in 0..400 {
            let vocab = [1, 2, 7, 64, 300][case % 5];
            let scores = logits(&mut rng, vocab);
            for top_k in [0, 1, 3, 50, vocab.saturating_sub(1), vocab, vocab + 3] {
                for (temperature, top_p) in [(1.0, 1.0), (0.6, 0.95), (1.3, 0.5), (0.7, 0.0), (2.0, 0.999)] {
                    let u = rng.random::<f64>();
                    assert_eq!(
                        sample_scores(&scores, temperature, top_k, top_p, u),
                        hf_whole_vocabulary(&scores, temperature, top_k, top_p, u),
                        "case {case}: V {vocab}, t {temperature}, top-k {top_k}, top-p {top_p}, u {u}"
                    );
                }
            }
        }
    }

    /// A row as [`candidates`] builds it: the `m` largest (lower id first among equals), their
    /// ids, the row's sum.
    fn candidate_row(logits: &[f32], m: usize) -> Vec<f32> {
        let mut row = rmas_kernels::topk::reference(logits, m);
        row.push(logits.iter().sum());
        row
    }

    #[test]
    fn candidates_keep_what_the_whole_row_keeps_or_defer_to_it() {
        let mut rng = StdRng::seed_from_u64(5);
        let (mut settled, mut deferred) = (0, 0);
        for case in 0..2000 {
            let vocab = 200;
            // Finite logits on a coarse grid (ties at the k-th often) or a fine one (rarely).
            let (steps, grid) = if case % 2 == 0 { (40, 0.25) } else { (4000, 1e-3) };
            let mut scores: Vec<f32> = (0..vocab).map(|_| rng.random_range(-steps..steps) as f32 * grid).collect();
            if case % 97 == 0 {
                scores[rng.random_range(0..vocab)] = f32::NAN;
            }
            let (top_k, temperature) = ([1, 5, 50][case % 3], [1.0, 0.6, 1.3][case % 3]);
            let row = candidate_row(&scores, top_k + 1);
            match Kept::of_candidates(&row, temperature, top_k, vocab) {
                Some(kept) => {
                    settled += 1;
                    let whole = Kept::of_scores(&scores, temperature, top_k);
                    assert_eq!(kept.ids, whole.ids, "case {case}: ids kept");
                    assert_eq!(kept.scores, whole.scores, "case {case}: scores kept");
                }
                None => {
                    deferred += 1;
                    let (k, t) = (top_k, temperature);
                    let tie = scaled(row[k], t) >= scaled(row[k - 1], t);
                    assert!(tie || scores.iter().any(|x| x.is_nan()), "case {case}: deferred without a tie or a NaN");
                }
            }
        }
        assert!(settled > 1000 && deferred > 50, "{settled} rows settled, {deferred} deferred: both paths ran");
        // What a faulty read-back could hold is never taken: an empty slot, an id past the vocabulary.
        let row = candidate_row(&[3.0, 2.0, 1.0, 0.0], 3);
        assert!(Kept::of_candidates(&row, 1.0, 2, 4).is_some());
        assert!(Kept::of_candidates(&row, 1.0, 2, 2).is_none(), "ids 0..2 only");
        let mut empty = row.clone();
        empty[2] = f32::MIN;
        assert!(Kept::of_candidates(&empty, 1.0, 2, 4).is_none(), "an empty slot");
    }
}
