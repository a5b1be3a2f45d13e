//! The server's counters, rendered in Prometheus' text format for `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rmas_models::batch::BatchStats;

/// Upper bounds (seconds) of the latency and time-to-first-token histograms.
const BUCKETS: [f64; 12] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// A cumulative histogram over [`BUCKETS`].
#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (count, bound) in self.counts.iter_mut().zip(BUCKETS) {
            *count += u64::from(seconds <= bound);
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (count, bound) in self.counts.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
            self.count, self.sum, self.count
        );
    }
}

#[derive(Debug, Default)]
struct Counters {
    requests: BTreeMap<u16, u64>,
    latency: Histogram,
    first_token: Histogram,
    generated_tokens: u64,
    generation_seconds: f64,
    cancelled: u64,
    /// The engine's packed model calls so far, and the sequence calls they served.
    packed: BatchStats,
}

/// What the server has done so far.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests waiting for the engine.
    pub queue_depth: AtomicUsize,
    counters: Mutex<Counters>,
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Counters) -> T) -> T {
        f(&mut self.counters.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A chat-completions response went out with `status`.
    pub fn request(&self, status: u16) {
        self.with(|c| *c.requests.entry(status).or_default() += 1);
    }

    /// A run finished: its latency from arrival, time to its first answer token (if any), its
    /// answer tokens and the time spent generating them.
    pub fn finished(&self, latency: Duration, first_token: Option<Duration>, tokens: usize, generating: Duration) {
        self.with(|c| {
            c.latency.observe(latency.as_secs_f64());
            if let Some(t) = first_token {
                c.first_token.observe(t.as_secs_f64());
            }
            c.generated_tokens += tokens as u64;
            c.generation_seconds += generating.as_secs_f64();
        });
    }

    /// The engine's batch has run `stats` so far.
    pub fn packed(&self, stats: BatchStats) {
        self.with(|c| c.packed = stats);
    }

    /// A run was stopped (client gone or time limit).
    pub fn cancelled(&self) {
        self.with(|c| c.cancelled += 1);
    }

    /// Mean latency so far (for `Retry-After`), if any run finished.
    pub fn mean_latency(&self) -> Option<f64> {
        self.with(|c| (c.latency.count > 0).then(|| c.latency.sum / c.latency.count as f64))
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let queue = self.queue_depth.load(Ordering::Relaxed);
        self.with(|c| {
            out.push_str("# HELP rmas_requests_total Chat-completion responses by HTTP status.\n# TYPE rmas_requests_total counter\n");
            for (status, n) in &c.requests {
                let _ = writeln!(out, "rmas_requests_total{{status=\"{status}\"}} {n}");
            }
            let _ = writeln!(out, "# HELP rmas_queue_depth Requests waiting for the engine.\n# TYPE rmas_queue_depth gauge\nrmas_queue_depth {queue}");
            c.latency.render(&mut out, "rmas_request_duration_seconds", "Time from arrival to the last answer token.");
            c.first_token.render(&mut out, "rmas_time_to_first_token_seconds", "Time from arrival to the first answer token.");
            let _ = writeln!(out, "# HELP rmas_generated_tokens_total Answer tokens generated.\n# TYPE rmas_generated_tokens_total counter\nrmas_generated_tokens_total {}", c.generated_tokens);
            let rate = if c.generation_seconds > 0.0 { c.generated_tokens as f64 / c.generation_seconds } else { 0.0 };
            let _ = writeln!(out, "# HELP rmas_tokens_per_second Answer tokens per second of final generation, over all runs.\n# TYPE rmas_tokens_per_second gauge\nrmas_tokens_per_second {rate}");
            let _ = writeln!(out, "# HELP rmas_cancelled_total Runs stopped because the client left or the time limit passed.\n# TYPE rmas_cancelled_total counter\nrmas_cancelled_total {}", c.cancelled);
            let _ = writeln!(out, "# HELP rmas_packed_calls_total Packed model calls (forwards, LM-head products) the engine ran.\n# TYPE rmas_packed_calls_total counter\nrmas_packed_calls_total {}", c.packed.calls);
            let _ = writeln!(out, "# HELP rmas_packed_sequences_total Requests' model calls those packed calls served (over rmas_packed_calls_total: the mean batch).\n# TYPE rmas_packed_sequences_total counter\nrmas_packed_sequences_total {}", c.packed.sequences);
        });
        out
    }
}
