//! What a decode step costs, measured by the runtime rather than estimated (docs/performance.md,
//! "Proxies"): kernel launches and autotune runs counted from cubecl's own loggers, device memory
//! in use from cubecl's memory manager, host reads and uploads from `rmas_models::traffic`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
use rmas_models::RmasBackend;

/// The module whose `log` records carry cubecl's profiling and autotune sinks.
const CUBECL_SINK: &str = "cubecl_common::config::logger";

static LAUNCHES: AtomicU64 = AtomicU64::new(0);
static AUTOTUNES: AtomicU64 = AtomicU64::new(0);
/// Whether [`install`] ran: without it cubecl logs nothing and the counters stay at 0.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Counts cubecl's sink records: launches arrive at `Info`, autotune results at `Debug`.
struct CountingLog;

impl log::Log for CountingLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target() == CUBECL_SINK
    }

    fn log(&self, record: &log::Record) {
        match (record.target() == CUBECL_SINK, record.level()) {
            (true, log::Level::Info) => LAUNCHES.fetch_add(1, Ordering::Relaxed),
            (true, log::Level::Debug) => AUTOTUNES.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    fn flush(&self) {}
}

/// Routes cubecl's launch log (profiling level `minimal`: one name per launch, no timing, so launches
/// stay asynchronous) and its autotune log into the counters, on top of the user's `cubecl.toml` and
/// `CUBECL_*` variables. Must run before any cubecl client exists (cubecl reads its config once).
pub fn install() -> Result<()> {
    let base = CubeClRuntimeConfig::from_current_dir().override_from_env();
    let mut config = serde_json::to_value(&base).context("reading cubecl's configuration")?;
    config["profiling"]["logger"]["level"] = "minimal".into();
    config["profiling"]["logger"]["log"] = "info".into();
    config["autotune"]["logger"]["level"] = "minimal".into();
    config["autotune"]["logger"]["log"] = "debug".into();
    let config: CubeClRuntimeConfig = serde_json::from_value(config).context("configuring cubecl's loggers")?;
    CubeClRuntimeConfig::set(config);
    log::set_logger(&CountingLog).map_err(|e| anyhow::anyhow!("installing the launch counter: {e}"))?;
    log::set_max_level(log::LevelFilter::Debug);
    INSTALLED.store(true, Ordering::Relaxed);
    Ok(())
}

/// The counters at one moment, after the device finished everything queued before it.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    /// Kernel launches and autotune runs: `None` off cubecl (the runtimes that report memory) or
    /// when the counters are not installed (`--no-counters`).
    pub launches: Option<u64>,
    pub autotunes: Option<u64>,
    pub reads: u64,
    pub read_bytes: u64,
    pub uploads: u64,
    pub memory_in_use: Option<u64>,
}

impl Snapshot {
    /// Syncs `device`, waits until cubecl's logger thread has passed on every launch record, and reads
    /// all counters.
    pub fn take<B: RmasBackend>(device: &B::Device) -> Result<Self> {
        let traffic = rmas_models::traffic::traffic(); // before the sync, which reads nothing back
        B::sync(device).map_err(|e| anyhow::anyhow!("device sync: {e:?}"))?;
        let memory_in_use = B::memory_in_use(device);
        let counted = memory_in_use.is_some() && INSTALLED.load(Ordering::Relaxed);
        Ok(Self {
            launches: counted.then(|| settled(&LAUNCHES)),
            autotunes: counted.then(|| AUTOTUNES.load(Ordering::Relaxed)),
            reads: traffic.reads,
            read_bytes: traffic.read_bytes,
            uploads: traffic.uploads,
            memory_in_use,
        })
    }

    /// Per-step averages from `self` to `later`, `steps` decode steps apart.
    pub fn per_step(&self, later: &Self, steps: usize) -> serde_json::Value {
        let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / steps as f64;
        let both = |a: Option<u64>, b: Option<u64>| a.zip(b);
        let growth = match (self.memory_in_use, later.memory_in_use) {
            (Some(a), Some(b)) => Some((b as f64 - a as f64) / steps as f64),
            _ => None,
        };
        serde_json::json!({
            "launches_per_token": both(self.launches, later.launches).map(|(a, b)| per(a, b)),
            "host_reads_per_token": per(self.reads, later.reads),
            "host_read_bytes_per_token": per(self.read_bytes, later.read_bytes),
            "host_uploads_per_token": per(self.uploads, later.uploads),
            "device_bytes_growth_per_token": growth,
            "autotune_runs_after_warmup": both(self.autotunes, later.autotunes).map(|(a, b)| b - a),
            "device_bytes_in_use": later.memory_in_use,
        })
    }
}

/// The value of `counter` once it has stopped moving for 50 ms (cubecl hands each launch record to a
/// logger thread through a channel, so the count trails the sync by a little).
fn settled(counter: &AtomicU64) -> u64 {
    let mut last = counter.load(Ordering::Relaxed);
    let mut still_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    while still_since.elapsed() < Duration::from_millis(50) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        let now = counter.load(Ordering::Relaxed);
        if now != last {
            (last, still_since) = (now, Instant::now());
        }
    }
    last
}
