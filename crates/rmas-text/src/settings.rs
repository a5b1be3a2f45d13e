//! Recommended run settings per (style, dataset) (docs/algorithm.md, "Recommended settings").

use crate::style::Style;
use crate::vocab::Dataset;

/// Recommended settings of one (style, dataset) pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecommendedSettings {
    /// Latent steps T.
    pub latent_steps: usize,
    /// Recursion rounds R.
    pub rounds: usize,
    /// Generation budget of the final agent.
    pub max_new_tokens: usize,
    /// Sampling temperature.
    pub temperature: f32,
    /// Nucleus-sampling threshold.
    pub top_p: f32,
    /// RNG seed.
    pub seed: u64,
    /// Questions per batch in an evaluation.
    pub batch_size: usize,
}

/// T and R of the release `run.py` (the reference pipeline): its table for the sequential styles on
/// MATH500, MedQA, GPQA and MBPP+, else T 32 and R 3; datasets that only the 2026-06 release knows
/// (AIME, LiveCodeBench, HotpotQA, Bamboogle) take that release's table. max_new_tokens and
/// temperature follow the release rules (plus the newer datasets' budgets).
pub fn recommended_settings(style: Style, dataset: Dataset) -> RecommendedSettings {
    let (latent_steps, rounds) = release_latent_steps(style, dataset)
        .map(|t| (t, 3))
        .or_else(|| newer_latent_steps_and_rounds(style, dataset))
        .unwrap_or((32, 3));
    RecommendedSettings {
        latent_steps,
        rounds,
        max_new_tokens: max_new_tokens(style, dataset),
        temperature: temperature(style, dataset),
        top_p: 0.95,
        seed: 42,
        batch_size: batch_size(style, dataset),
    }
}

/// The release `run.py`'s batch: 32 for sequential_light on MATH500, 16 for every other pair it
/// lists; 16 where it lists none.
fn batch_size(style: Style, dataset: Dataset) -> usize {
    match (style, dataset) {
        (Style::SequentialLight, Dataset::Math500) => 32,
        _ => 16,
    }
}

/// The release `run.py` T (with R = 3) for the datasets it evaluates.
fn release_latent_steps(style: Style, dataset: Dataset) -> Option<usize> {
    use Dataset as D;
    use Style as S;
    match (style, dataset) {
        (S::SequentialLight, D::Math500) => Some(48),
        (S::SequentialLight, D::MedQa | D::Gpqa) | (S::SequentialScaled, D::Math500) => Some(32),
        (S::SequentialScaled, D::MedQa | D::Gpqa) => Some(48),
        (S::SequentialLight | S::SequentialScaled, D::MbppPlus) => Some(16),
        (_, D::Math500 | D::MedQa | D::Gpqa | D::MbppPlus) => Some(32),
        _ => None,
    }
}

/// The 2026-06 T/R table for the datasets the release does not evaluate (deliberation's "2-3"
/// rounds taken as 3, the release default).
fn newer_latent_steps_and_rounds(style: Style, dataset: Dataset) -> Option<(usize, usize)> {
    use Dataset as D;
    use Style as S;
    Some(match (style, dataset) {
        (S::SequentialLight, D::Aime25) => (32, 3),
        (S::SequentialLight, D::Aime26) => (32, 2),
        (S::SequentialScaled, D::Aime25) => (48, 3),
        (S::SequentialScaled, D::Aime26) => (64, 3),
        (S::SequentialScaled, D::LiveCodeBench) => (48, 2),
        (S::Mixture, D::Aime25) => (16, 3),
        (S::Mixture, D::Aime26) => (32, 2),
        (S::Mixture, D::LiveCodeBench) => (16, 2),
        (S::Distillation, D::LiveCodeBench) => (64, 2),
        (S::Distillation, D::Aime25 | D::Aime26) => (32, 3),
        (S::Deliberation, D::HotpotQa) => (32, 2),
        (S::Deliberation, _) => (16, 3),
        _ => return None,
    })
}

/// Release: MATH500 1000 (sequential_light) / 2000, others 4000; AIME 8192 / 16000; LCB 4096.
fn max_new_tokens(style: Style, dataset: Dataset) -> usize {
    let light = style == Style::SequentialLight;
    match dataset {
        Dataset::Math500 if light => 1000,
        Dataset::Math500 => 2000,
        Dataset::Aime25 | Dataset::Aime26 if light => 8192,
        Dataset::Aime25 | Dataset::Aime26 => 16000,
        Dataset::LiveCodeBench => 4096,
        _ => 4000,
    }
}

/// 0.6, except MBPP+ 0.2 and LiveCodeBench 0.2 (distillation: 0.6).
fn temperature(style: Style, dataset: Dataset) -> f32 {
    match dataset {
        Dataset::MbppPlus => 0.2,
        Dataset::LiveCodeBench if style != Style::Distillation => 0.2,
        _ => 0.6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_entries() {
        // The release run.py table (R = 3 throughout).
        let s = recommended_settings(Style::SequentialLight, Dataset::Math500);
        assert_eq!((s.latent_steps, s.rounds, s.max_new_tokens, s.batch_size), (48, 3, 1000, 32));
        let s = recommended_settings(Style::SequentialScaled, Dataset::Gpqa);
        assert_eq!((s.latent_steps, s.rounds, s.max_new_tokens, s.batch_size), (48, 3, 4000, 16));
        let s = recommended_settings(Style::SequentialLight, Dataset::MbppPlus);
        assert_eq!((s.latent_steps, s.rounds, s.temperature), (16, 3, 0.2));
        let s = recommended_settings(Style::Mixture, Dataset::MbppPlus);
        assert_eq!((s.latent_steps, s.rounds, s.max_new_tokens, s.temperature), (32, 3, 4000, 0.2));
        let s = recommended_settings(Style::Deliberation, Dataset::Math500);
        assert_eq!((s.latent_steps, s.rounds, s.max_new_tokens), (32, 3, 2000));
        // Datasets of the 2026-06 release only.
        let s = recommended_settings(Style::SequentialLight, Dataset::LiveCodeBench);
        assert_eq!((s.latent_steps, s.rounds, s.max_new_tokens), (32, 3, 4096));
        let s = recommended_settings(Style::Distillation, Dataset::Aime26);
        assert_eq!((s.latent_steps, s.rounds, s.max_new_tokens, s.top_p, s.seed), (32, 3, 16000, 0.95, 42));
        let s = recommended_settings(Style::Deliberation, Dataset::HotpotQa);
        assert_eq!((s.latent_steps, s.rounds), (32, 2));
    }
}
