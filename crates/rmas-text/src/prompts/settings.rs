//! Recommended run settings per (style, dataset) (recursivemas.md §12).

use super::{Dataset, Style};

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
}

/// T and R from the 2026-06 table where it has an entry, else the release defaults (T 32, R 3);
/// max_new_tokens and temperature from the release rules (plus the newer datasets' budgets).
pub fn recommended_settings(style: Style, dataset: Dataset) -> RecommendedSettings {
    let (latent_steps, rounds) = latent_steps_and_rounds(style, dataset).unwrap_or((32, 3));
    RecommendedSettings {
        latent_steps,
        rounds,
        max_new_tokens: max_new_tokens(style, dataset),
        temperature: temperature(style, dataset),
        top_p: 0.95,
        seed: 42,
    }
}

/// The 2026-06 T/R table (deliberation's "2-3" rounds taken as 3, the release default).
fn latent_steps_and_rounds(style: Style, dataset: Dataset) -> Option<(usize, usize)> {
    use Dataset as D;
    use Style as S;
    Some(match (style, dataset) {
        (S::SequentialLight, D::Math500 | D::Aime25) => (32, 3),
        (S::SequentialLight, D::MedQa | D::Aime26) => (32, 2),
        (S::SequentialLight, D::Gpqa | D::MbppPlus) => (48, 3),
        (S::SequentialScaled, D::Math500) => (64, 2),
        (S::SequentialScaled, D::MedQa | D::MbppPlus) => (32, 3),
        (S::SequentialScaled, D::Gpqa) => (32, 2),
        (S::SequentialScaled, D::Aime25) => (48, 3),
        (S::SequentialScaled, D::Aime26) => (64, 3),
        (S::SequentialScaled, D::LiveCodeBench) => (48, 2),
        (S::Mixture, D::Math500) => (64, 3),
        (S::Mixture, D::MedQa) => (48, 2),
        (S::Mixture, D::Gpqa) => (48, 3),
        (S::Mixture, D::MbppPlus) => (32, 3),
        (S::Mixture, D::Aime25) => (16, 3),
        (S::Mixture, D::Aime26) => (32, 2),
        (S::Mixture, D::LiveCodeBench) => (16, 2),
        (S::Distillation, D::Math500 | D::Gpqa) => (64, 3),
        (S::Distillation, D::MedQa | D::LiveCodeBench) => (64, 2),
        (S::Distillation, D::MbppPlus) => (16, 2),
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
        let s = recommended_settings(Style::SequentialLight, Dataset::Math500);
        assert_eq!((s.latent_steps, s.rounds, s.max_new_tokens), (32, 3, 1000));
        let s = recommended_settings(Style::Mixture, Dataset::MbppPlus);
        assert_eq!(
            (s.latent_steps, s.rounds, s.max_new_tokens, s.temperature),
            (32, 3, 4000, 0.2)
        );
        let s = recommended_settings(Style::SequentialLight, Dataset::LiveCodeBench);
        assert_eq!((s.latent_steps, s.rounds, s.max_new_tokens), (32, 3, 4096));
        let s = recommended_settings(Style::Distillation, Dataset::Aime26);
        assert_eq!(
            (s.latent_steps, s.rounds, s.max_new_tokens, s.top_p, s.seed),
            (32, 3, 16000, 0.95, 42)
        );
    }
}
