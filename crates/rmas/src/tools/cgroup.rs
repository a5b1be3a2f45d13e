//! Limits on a sandbox's whole process tree through a cgroup of its own (SECURITY.md, "Python
//! sandbox"): memory and process count summed over every process the script starts, which
//! per-process rlimits cannot bound.
//!
//! Each run gets a fresh cgroup below rmas's own one — in the unified (v2) hierarchy when the
//! memory and pids controllers can be enabled there, else in the v1 `memory` and `pids`
//! hierarchies — that the child joins before it executes the sandbox, so bubblewrap and every
//! descendant are in it. A cgroup is never made outside rmas's own, so a container's limits keep
//! holding. Where neither works (no write access, controllers not delegated) the tree limits are
//! unavailable: [`TreeLimits::probe`] says why, `rmas doctor` reports it and the per-process
//! limits still apply.

use std::fs::{self, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Processes one sandbox may have at once (interpreter, bubblewrap and their children).
pub const MAX_TREE_PROCESSES: u64 = 64;

/// One controller's directory (rmas's own cgroup) and the limit files written in a run's child.
#[derive(Clone, Debug)]
pub struct Hierarchy {
    /// rmas's own cgroup in this hierarchy.
    parent: PathBuf,
    /// `(file, which limit)` in the order they are written.
    limits: &'static [(&'static str, Limit)],
}

/// Which value a limit file takes.
#[derive(Clone, Copy, Debug)]
enum Limit {
    /// The memory limit (the file is left alone when there is none).
    Memory,
    /// Zero (no swap).
    Zero,
    /// The process limit.
    Pids,
}

const V2_LIMITS: &[(&str, Limit)] =
    &[("memory.max", Limit::Memory), ("memory.swap.max", Limit::Zero), ("pids.max", Limit::Pids)];
const V1_MEMORY_LIMITS: &[(&str, Limit)] =
    &[("memory.limit_in_bytes", Limit::Memory), ("memory.memsw.limit_in_bytes", Limit::Memory)];
const V1_PIDS_LIMITS: &[(&str, Limit)] = &[("pids.max", Limit::Pids)];

/// Whether this machine can limit a sandbox's whole tree.
#[derive(Clone, Debug)]
pub enum TreeLimits {
    /// Usable: the cgroup version and the hierarchies a run's cgroup is made in.
    Cgroup {
        /// `"v2"` or `"v1"`.
        version: &'static str,
        /// rmas's own cgroups (one per hierarchy) the runs' cgroups are made below.
        hierarchies: Vec<Hierarchy>,
    },
    /// Not usable here, and why.
    Unavailable(String),
}

impl TreeLimits {
    /// A line for `rmas doctor`: which cgroups hold the limits, or why none can.
    pub fn describe(&self) -> String {
        match self {
            Self::Cgroup { version, hierarchies } => {
                let parents: Vec<String> = hierarchies.iter().map(|h| h.parent.display().to_string()).collect();
                format!("cgroup {version} below {}", parents.join(", "))
            }
            Self::Unavailable(why) => format!("unavailable ({why}); per-process limits only"),
        }
    }

    /// What this process can use (probed once by making and removing a cgroup).
    pub fn probe() -> &'static TreeLimits {
        static PROBE: OnceLock<TreeLimits> = OnceLock::new();
        PROBE.get_or_init(|| {
            let found = find_hierarchies().and_then(|(version, hierarchies)| {
                RunCgroup::create(&hierarchies, Some(64 << 20), 8)?;
                Ok(Self::Cgroup { version, hierarchies })
            });
            found.unwrap_or_else(Self::Unavailable)
        })
    }

    /// A fresh cgroup for one run with these limits, or `None` when tree limits are unavailable.
    pub fn create(&self, memory_bytes: Option<u64>, max_processes: u64) -> std::io::Result<Option<RunCgroup>> {
        match self {
            Self::Cgroup { hierarchies, .. } => {
                RunCgroup::create(hierarchies, memory_bytes, max_processes).map(Some).map_err(std::io::Error::other)
            }
            Self::Unavailable(_) => Ok(None),
        }
    }
}

/// The cgroup of one sandbox run (a directory per hierarchy); its processes are killed and the
/// directories removed on drop.
#[derive(Debug)]
pub struct RunCgroup {
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each directory, open for the child to join by writing `0`.
    procs: Vec<OwnedFd>,
}

impl RunCgroup {
    fn create(hierarchies: &[Hierarchy], memory_bytes: Option<u64>, max_processes: u64) -> Result<Self, String> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!("rmas-sandbox-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut run = Self { dirs: Vec::new(), procs: Vec::new() };
        for hierarchy in hierarchies {
            let dir = hierarchy.parent.join(&name);
            fs::create_dir(&dir).map_err(|e| format!("cannot create the cgroup {}: {e}", dir.display()))?;
            run.dirs.push(dir.clone());
            for (file, limit) in hierarchy.limits {
                let value = match limit {
                    Limit::Memory => memory_bytes,
                    Limit::Zero => Some(0),
                    Limit::Pids => Some(max_processes),
                };
                let Some(value) = value else { continue };
                let path = dir.join(file);
                // Swap accounting is optional (kernels built without it have no such file).
                let optional = matches!(limit, Limit::Zero) || file.contains("memsw");
                match fs::write(&path, value.to_string()) {
                    Ok(()) => {}
                    Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(format!("cannot set {}: {e}", path.display())),
                }
            }
            let procs = dir.join("cgroup.procs");
            let file = OpenOptions::new()
                .write(true)
                .open(&procs)
                .map_err(|e| format!("cannot open {}: {e}", procs.display()))?;
            run.procs.push(file.into());
        }
        Ok(run)
    }

    /// Descriptors the child writes `0` to (moving itself in) before it executes the sandbox.
    pub fn join_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Moves the calling process into this cgroup. Only async-signal-safe calls: meant for
    /// `pre_exec`.
    ///
    /// # Safety
    /// Every descriptor must be one of [`Self::join_fds`], still open.
    pub unsafe fn join(fds: &[RawFd]) -> std::io::Result<()> {
        for &fd in fds {
            // SAFETY: writing one byte from a static buffer to an open descriptor.
            if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        self.procs.clear();
        let deadline = Instant::now() + Duration::from_secs(2);
        for dir in self.dirs.iter().rev() {
            // A directory is removable once no process is left in it; kill stragglers until then.
            while fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
                for pid in fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines() {
                    if let Ok(pid) = pid.trim().parse::<libc::pid_t>() {
                        // SAFETY: a plain signal to a process of this run's cgroup.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// rmas's own cgroups that can take children with the memory and pids limits: v2 when both
/// controllers can be enabled for its children, else v1's two hierarchies.
fn find_hierarchies() -> Result<(&'static str, Vec<Hierarchy>), String> {
    let cgroups = fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let mounts =
        fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let mut why = Vec::new();
    match own_dir(&cgroups, &mounts, None).and_then(|dir| enable_v2(&dir).map(|()| dir)) {
        Ok(parent) => return Ok(("v2", vec![Hierarchy { parent, limits: V2_LIMITS }])),
        Err(e) => why.push(format!("cgroup v2: {e}")),
    }
    let v1 = [("memory", V1_MEMORY_LIMITS), ("pids", V1_PIDS_LIMITS)]
        .into_iter()
        .map(|(controller, limits)| Ok(Hierarchy { parent: own_dir(&cgroups, &mounts, Some(controller))?, limits }))
        .collect::<Result<Vec<_>, String>>();
    match v1 {
        Ok(hierarchies) => Ok(("v1", hierarchies)),
        Err(e) => {
            why.push(format!("cgroup v1: {e}"));
            Err(why.join("; "))
        }
    }
}

/// The directory of this process's cgroup in the v2 hierarchy (`controller: None`) or the v1
/// hierarchy holding `controller`, found through `/proc/self/cgroup` and the mount table.
fn own_dir(cgroups: &str, mounts: &str, controller: Option<&str>) -> Result<PathBuf, String> {
    let what = controller.unwrap_or("the unified hierarchy");
    let path = cgroups
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            Some((parts.next()?, parts.next()?, parts.next()?))
        })
        .find(|(id, names, _)| match controller {
            None => *id == "0" && names.is_empty(),
            Some(c) => names.split(',').any(|n| n == c),
        })
        .map(|(_, _, path)| path)
        .ok_or_else(|| format!("this process is in no cgroup of {what}"))?;
    // mountinfo: id parent major:minor root mount-point options … - fstype source super-options
    let dir = mounts
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            Some((*fields.get(3)?, *fields.get(4)?, *right.first()?, *right.get(2)?))
        })
        .find(|(_, _, fstype, options)| match controller {
            None => *fstype == "cgroup2",
            Some(c) => *fstype == "cgroup" && options.split(',').any(|o| o == c),
        })
        .and_then(|(root, mount_point, _, _)| {
            let relative = Path::new(path).strip_prefix(root).ok()?;
            Some(Path::new(mount_point).join(relative))
        })
        .ok_or_else(|| format!("{what} is not mounted where this process's cgroup `{path}` is visible"))?;
    if !dir.is_dir() {
        return Err(format!("{} does not exist", dir.display()));
    }
    Ok(dir)
}

/// Enables the memory and pids controllers for the children of the v2 cgroup `dir`.
fn enable_v2(dir: &Path) -> Result<(), String> {
    let available = fs::read_to_string(dir.join("cgroup.controllers")).map_err(|e| e.to_string())?;
    for controller in ["memory", "pids"] {
        if !available.split_whitespace().any(|c| c == controller) {
            return Err(format!("the {controller} controller is not delegated to {}", dir.display()));
        }
    }
    let control = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&control).unwrap_or_default();
    if ["memory", "pids"].iter().all(|c| enabled.split_whitespace().any(|e| e == *c)) {
        return Ok(());
    }
    // Fails (EBUSY) in a non-root cgroup that holds processes itself.
    fs::write(&control, "+memory +pids")
        .map_err(|e| format!("cannot enable memory and pids in {}: {e}", control.display()))
}
