//! The page's run options (`WebSystem.run(question, options)`) over the core run policy: a released
//! system gets `RunOptions::released` — the recommended settings, answer retry and choice
//! instruction `rmas run` applies — and the demo the demo's settings, each under the page's
//! overrides.

use chrono::NaiveDate;
use rmas::options::{RunOptions, RunOverrides};
use rmas_text::{Dataset, Style};
use serde_json::Value;

/// Run options for `style` (`None`: the demo) from the page's options object: `dataset`,
/// `rounds`, `latentSteps`, `maxNewTokens`, `chatDate` ("YYYY-MM-DD", default `today`), `greedy`,
/// `temperature` (0: greedy), `topK`, `topP`, `seed`, `answerRetry`.
pub fn run_options(style: Option<Style>, o: &Value, today: NaiveDate) -> Result<RunOptions, String> {
    let date = match o.get("chatDate").and_then(Value::as_str) {
        Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map_err(|e| format!("chatDate `{s}`: expected YYYY-MM-DD ({e})"))?,
        None => today,
    };
    let count = |key: &str| o.get(key).and_then(Value::as_u64).map(|v| v as usize);
    let dataset = match o.get("dataset").and_then(Value::as_str) {
        Some(name) => name.parse::<Dataset>().map_err(|e| e.to_string())?,
        None => Dataset::Math500,
    };
    let overrides = RunOverrides {
        rounds: count("rounds"),
        latent_steps: count("latentSteps"),
        max_new_tokens: count("maxNewTokens"),
        greedy: o.get("greedy").and_then(Value::as_bool).unwrap_or(false),
        temperature: o.get("temperature").and_then(Value::as_f64).map(|t| t as f32),
        top_p: o.get("topP").and_then(Value::as_f64).map(|p| p as f32),
        top_k: count("topK"),
        seed: o.get("seed").and_then(Value::as_u64),
        answer_retry: o.get("answerRetry").and_then(Value::as_bool),
        fn_name: o.get("fnName").and_then(Value::as_str).map(str::to_owned),
        summarize_every_round: None,
    };
    Ok(match style {
        Some(style) => RunOptions::released(style, dataset, date, &overrides),
        None => RunOptions { dataset, ..rmas::demo::run_options(date) }.overridden(&overrides),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, 1).unwrap()
    }

    #[test]
    fn released_systems_get_the_core_run_policy() {
        // What `rmas run --style S --dataset D` builds with no other flags (see rmas-cli's run tests).
        for style in Style::ALL {
            for dataset in [Dataset::Math500, Dataset::Gpqa, Dataset::MbppPlus] {
                let page = run_options(Some(style), &json!({"dataset": dataset.key()}), day()).unwrap();
                assert_eq!(
                    page,
                    RunOptions::released(style, dataset, day(), &RunOverrides::default()),
                    "{style:?} {dataset:?}"
                );
                assert!(page.answer_retry, "the answer retry is on, as rmas run");
            }
        }
        let page =
            run_options(Some(Style::Mixture), &json!({"rounds": 2, "temperature": 0, "chatDate": "2024-07-26"}), day())
                .unwrap();
        assert_eq!(
            (page.rounds, page.sampling, page.chat.date),
            (2, rmas_models::generate::Sampling::Greedy, NaiveDate::from_ymd_opt(2024, 7, 26).unwrap())
        );
    }

    #[test]
    fn the_demo_keeps_its_settings() {
        assert_eq!(run_options(None, &Value::Null, day()).unwrap(), rmas::demo::run_options(day()));
        let opts = run_options(None, &json!({"latentSteps": 2, "temperature": 0.7, "topK": 5}), day()).unwrap();
        assert_eq!(opts.latent_steps, 2);
        assert_eq!(opts.sampling, rmas_models::generate::Sampling::Sample { temperature: 0.7, top_k: 5, top_p: 1.0 });
        assert!(run_options(None, &json!({"dataset": "nope"}), day()).unwrap_err().contains("nope"));
        assert!(run_options(None, &json!({"chatDate": "26 Jul"}), day()).unwrap_err().contains("chatDate"));
    }
}
