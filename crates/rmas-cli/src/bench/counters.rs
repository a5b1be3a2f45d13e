//! What a decode step costs, measured by the runtime rather than estimated (docs/performance.md,
//! "Proxies"): kernel launches (each kernel's, by cubecl's name for it, and with `--kernel-times`
//! its device time) and autotune runs counted from cubecl's own loggers, device memory in use from
//! cubecl's memory manager, host reads and uploads from `rmas_models::traffic`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
use rmas_models::RmasBackend;

/// The module whose `log` records carry cubecl's profiling and autotune sinks.
const CUBECL_SINK: &str = "cubecl_common::config::logger";

static LAUNCHES: AtomicU64 = AtomicU64::new(0);
static AUTOTUNES: AtomicU64 = AtomicU64::new(0);
/// Each kernel's launches (and device time, when timed) since [`install`].
static KERNELS: Mutex<BTreeMap<String, KernelCost>> = Mutex::new(BTreeMap::new());
/// Whether [`install`] ran: without it cubecl logs nothing and the counters stay at 0.
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// Whether [`install`] asked cubecl to time every launch.
static TIMED: AtomicBool = AtomicBool::new(false);

/// What one kernel has cost so far.
#[derive(Clone, Copy, Debug, Default)]
struct KernelCost {
    launches: u64,
    /// Device time of those launches (zero when untimed).
    time: Duration,
}

/// Counts cubecl's sink records: launches arrive at `Info`, autotune results at `Debug`.
struct CountingLog;

impl log::Log for CountingLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target() == CUBECL_SINK
    }

    fn log(&self, record: &log::Record) {
        match (record.target() == CUBECL_SINK, record.level()) {
            (true, log::Level::Info) => {
                let message = record.args().to_string();
                if let Some((name, time)) = parse_launch(&message) {
                    let mut kernels = KERNELS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    let cost = kernels.entry(name.to_string()).or_default();
                    cost.launches += 1;
                    cost.time += time.unwrap_or_default();
                    LAUNCHES.fetch_add(1, Ordering::Relaxed);
                }
            }
            (true, log::Level::Debug) => {
                AUTOTUNES.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    fn flush(&self) {}
}

/// One launch as cubecl's profiling sink words it (cubecl-runtime 0.10, `logging/server.rs`):
/// `Executing {name}` untimed (level `minimal`), `| {duration:?} | {name}` timed (level `basic`).
/// Anything else (the table `basic` prints at each sync) is not a launch.
fn parse_launch<'a>(message: &'a str) -> Option<(&'a str, Option<Duration>)> {
    // A kernel's name may run on over several lines; its first names it.
    let name = |text: &'a str| text.lines().next().unwrap_or(text).trim();
    if let Some(rest) = message.strip_prefix("Executing ") {
        return Some((name(rest), None));
    }
    let (time, rest) = message.strip_prefix("| ")?.split_once(" | ")?;
    Some((name(rest), Some(parse_duration(time.trim())?)))
}

/// A `Duration` from its `Debug` form (`850ns`, `12.5µs`, `1.25ms`, `2.000001s`).
fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)]
        .into_iter()
        .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|number| (number, unit)))?;
    Duration::try_from_secs_f64(number.parse::<f64>().ok()? * unit).ok()
}

/// Routes cubecl's launch log and its autotune log into the counters, on top of the user's
/// `cubecl.toml` and `CUBECL_*` variables. Untimed (profiling level `minimal`), each launch logs its
/// name and stays asynchronous; `timed` (level `basic`) brackets each launch with the device's
/// timer, which serializes the launches (a step then takes longer than it does untimed). Must run
/// before any cubecl client exists (cubecl reads its config once).
pub fn install(timed: bool) -> Result<()> {
    let base = CubeClRuntimeConfig::from_current_dir().override_from_env();
    let mut config = serde_json::to_value(&base).context("reading cubecl's configuration")?;
    config["profiling"]["logger"]["level"] = if timed { "basic" } else { "minimal" }.into();
    config["profiling"]["logger"]["log"] = "info".into();
    config["autotune"]["logger"]["level"] = "minimal".into();
    config["autotune"]["logger"]["log"] = "debug".into();
    let config: CubeClRuntimeConfig = serde_json::from_value(config).context("configuring cubecl's loggers")?;
    CubeClRuntimeConfig::set(config);
    log::set_logger(&CountingLog).map_err(|e| anyhow::anyhow!("installing the launch counter: {e}"))?;
    log::set_max_level(log::LevelFilter::Debug);
    INSTALLED.store(true, Ordering::Relaxed);
    TIMED.store(timed, Ordering::Relaxed);
    Ok(())
}

/// The counters at one moment, after the device finished everything queued before it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Kernel launches and autotune runs: `None` off cubecl (the runtimes that report memory) or
    /// when the counters are not installed (`--no-counters`).
    pub launches: Option<u64>,
    pub autotunes: Option<u64>,
    /// Each kernel's launches and time so far, when launches are counted.
    kernels: Option<BTreeMap<String, KernelCost>>,
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
        let launches = counted.then(|| settled(&LAUNCHES)); // first: the kernels are read after their last record
        Ok(Self {
            launches,
            autotunes: counted.then(|| AUTOTUNES.load(Ordering::Relaxed)),
            kernels: counted.then(|| KERNELS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()),
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
        let kernels = self.kernels.as_ref().zip(later.kernels.as_ref()).map(|(a, b)| kernels_per_step(a, b, steps));
        let timed = TIMED.load(Ordering::Relaxed);
        let kernel_us = kernels.as_ref().filter(|_| timed).map(|k| k.iter().map(|(_, _, us)| us).sum::<f64>());
        let kernels = kernels.map(|k| {
            let row = |(name, launches, us): (String, f64, f64)| {
                serde_json::json!({"name": name, "launches_per_token": launches, "us_per_token": timed.then_some(us)})
            };
            k.into_iter().map(row).collect::<Vec<_>>()
        });
        serde_json::json!({
            "launches_per_token": both(self.launches, later.launches).map(|(a, b)| per(a, b)),
            "host_reads_per_token": per(self.reads, later.reads),
            "host_read_bytes_per_token": per(self.read_bytes, later.read_bytes),
            "host_uploads_per_token": per(self.uploads, later.uploads),
            "device_bytes_growth_per_token": growth,
            "autotune_runs_after_warmup": both(self.autotunes, later.autotunes).map(|(a, b)| b - a),
            "device_bytes_in_use": later.memory_in_use,
            "kernel_us_per_token": kernel_us,
            "kernels": kernels,
        })
    }
}

/// Each kernel launched between `before` and `after`: its name, launches and device µs per step,
/// the costliest first (by time when timed, else by launches).
fn kernels_per_step(
    before: &BTreeMap<String, KernelCost>,
    after: &BTreeMap<String, KernelCost>,
    steps: usize,
) -> Vec<(String, f64, f64)> {
    let mut rows: Vec<(String, f64, f64)> = after
        .iter()
        .filter_map(|(name, cost)| {
            let was = before.get(name).copied().unwrap_or_default();
            let launches = cost.launches - was.launches;
            let us = (cost.time - was.time).as_secs_f64() * 1e6;
            (launches > 0).then(|| (name.clone(), launches as f64 / steps as f64, us / steps as f64))
        })
        .collect();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2).then(b.1.total_cmp(&a.1)).then_with(|| a.0.cmp(&b.0)));
    rows
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launches_parse_as_cubecl_logs_them() {
        let kernel = "burn_cubecl::kernel::matmul::Kernel<f32>";
        assert_eq!(parse_launch(&format!("Executing {kernel}")), Some((kernel, None)));
        for (time, want) in [
            (Duration::from_nanos(850), 850e-9),
            (Duration::from_nanos(12_500), 12.5e-6),
            (Duration::from_micros(1250), 1.25e-3),
            (Duration::from_micros(2_000_001), 2.000001),
        ] {
            let message = format!("| {time:<10?} | {kernel}\nits source");
            let (name, parsed) = parse_launch(&message).expect("a timed launch");
            assert_eq!(name, kernel);
            assert!((parsed.unwrap().as_secs_f64() - want).abs() <= want * 1e-9, "{message}: {parsed:?}");
        }
        // The table cubecl prints at a sync, and other records, are no launches.
        assert_eq!(parse_launch("|⎺⎺⎺⎺| \n| Name | Duration |"), None);
        assert_eq!(parse_launch("| Total | 12ms | 3 | 100 % |"), None);
    }
}
