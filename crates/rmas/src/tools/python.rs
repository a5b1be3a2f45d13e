//! The sandboxed `python` tool (docs/algorithm.md, "Deliberation tool loop").
//!
//! # Python sandbox
//! Each call writes the release prelude + code to a fresh private directory and runs the
//! interpreter (default `python3`) on it in the sandbox of [`super::sandbox`] (bubblewrap:
//! namespaces, a read-only minimal root, a tmpfs scratch, seccomp), in its own process group,
//! with these limits on top:
//! * time: the whole sandbox is killed at the timeout (default 10 s);
//! * memory / files: `RLIMIT_AS` (default 2 GiB) per process, `RLIMIT_FSIZE` (64 MiB), at most
//!   [`PythonConfig::scratch_bytes`] in the scratch tmpfs, 256 open files, no core dumps;
//! * the whole tree: where a cgroup can be made ([`super::cgroup`]), the memory limit holds for
//!   all the script's processes together and at most [`MAX_TREE_PROCESSES`] exist at once;
//!   elsewhere a non-root user gets `RLIMIT_NPROC` (its processes now + that many);
//! * output: stdout and stderr are drained concurrently; at most `max_output_bytes` of each are
//!   kept, the rest is discarded (so a chatty process neither blocks nor exhausts memory).
//!
//! Without a working sandbox the tool refuses (fail closed) unless
//! [`PythonConfig::unsafe_no_isolation`] is set (`--unsafe-tools`), which runs the interpreter as
//! a plain child with the environment cleared and the limits above.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rmas_text::pystr::{py_rstrip, py_strip};

use super::PYTHON_PRELUDE;
use super::cgroup::{MAX_TREE_PROCESSES, RunCgroup, TreeLimits};
use super::sandbox::{self, Interpreter, Isolation};

/// The script's file name in its directory.
const SCRIPT: &str = "script.py";

/// Environment variables passed to an unisolated interpreter (`--unsafe-tools`).
const ENV_PASSTHROUGH: [&str; 6] = ["PATH", "LANG", "LC_ALL", "LC_CTYPE", "PYENV_ROOT", "PYENV_VERSION"];
/// Open files per sandboxed process.
const MAX_OPEN_FILES: u64 = 256;

/// Settings of the python tool.
#[derive(Clone, Debug)]
pub struct PythonConfig {
    /// Interpreter to run (a name looked up in `PATH`, or a path).
    pub interpreter: PathBuf,
    /// Wall-clock limit per call.
    pub timeout: Duration,
    /// Address-space limit in bytes (`RLIMIT_AS`), if any.
    pub memory_limit: Option<u64>,
    /// Largest file the script may write (`RLIMIT_FSIZE`), if limited.
    pub max_file_size: Option<u64>,
    /// Bytes kept from each of stdout and stderr.
    pub max_output_bytes: usize,
    /// Size of the sandbox's writable scratch (a tmpfs).
    pub scratch_bytes: u64,
    /// Run without isolation (`--unsafe-tools`, `RMAS_UNSAFE_TOOLS=1`): only for trusted code.
    pub unsafe_no_isolation: bool,
}

impl Default for PythonConfig {
    fn default() -> Self {
        Self {
            interpreter: PathBuf::from("python3"),
            timeout: Duration::from_secs(10),
            memory_limit: Some(2 << 30),
            max_file_size: Some(64 << 20),
            max_output_bytes: 256 << 10,
            scratch_bytes: 64 << 20,
            unsafe_no_isolation: false,
        }
    }
}

impl PythonConfig {
    /// The default limits with the interpreter `RMAS_PYTHON` (default `python3`); isolation off
    /// only when `RMAS_UNSAFE_TOOLS=1`.
    pub fn from_env() -> Self {
        let interpreter = std::env::var_os("RMAS_PYTHON").filter(|v| !v.is_empty());
        Self {
            interpreter: interpreter.map_or_else(|| PathBuf::from("python3"), PathBuf::from),
            unsafe_no_isolation: std::env::var("RMAS_UNSAFE_TOOLS").is_ok_and(|v| v == "1"),
            ..Self::default()
        }
    }

    /// Whether code can run under this configuration: the sandbox works here, or isolation was
    /// explicitly turned off. The error says what is missing and how to allow it.
    pub fn check_isolation(&self) -> Result<(), String> {
        match (self.unsafe_no_isolation, Isolation::probe()) {
            (true, _) | (false, Isolation::Bubblewrap(_)) => Ok(()),
            (false, Isolation::Unavailable(why)) => Err(format!(
                "the python sandbox is not available: {why}. Model-written code is not run without it; pass --unsafe-tools (or set RMAS_UNSAFE_TOOLS=1) to run it unisolated at your own risk. `rmas doctor` shows what this machine offers"
            )),
        }
    }
}

/// The sandboxed python tool.
#[derive(Clone, Debug, Default)]
pub struct PythonTool {
    config: PythonConfig,
}

impl PythonTool {
    /// A tool with the given settings.
    pub fn new(config: PythonConfig) -> Self {
        Self { config }
    }

    /// The settings.
    pub fn config(&self) -> &PythonConfig {
        &self.config
    }

    /// Runs prelude + `code` and formats the result as the reference does (not yet sanitized). Never panics:
    /// failures to start the interpreter become a `[python error] …` result.
    pub fn run(&self, code: &str) -> String {
        match self.execute(code) {
            Ok(None) => format!("[timeout] Python tool exceeded {:?} seconds.", self.config.timeout.as_secs_f64()),
            Ok(Some(output)) => output.format(),
            Err(e) => format!("[python error] cannot run `{}`: {e}", self.config.interpreter.display()),
        }
    }

    /// Runs the script; `None` on timeout.
    fn execute(&self, code: &str) -> std::io::Result<Option<PythonOutput>> {
        self.run_program(&format!("{PYTHON_PRELUDE}{code}\n"), None)
    }

    /// Runs `source` as a whole program in the sandbox, with `stdin` as its standard input (else
    /// none), under this tool's limits; `None` when it ran past the timeout (it is then killed).
    pub fn run_program(&self, source: &str, stdin: Option<&[u8]>) -> std::io::Result<Option<PythonOutput>> {
        let scratch = ScratchDir::create()?;
        std::fs::write(scratch.path.join(SCRIPT), source)?;
        let (mut command, seccomp) = self.command(&scratch.path)?;
        // Dropped last: kills whatever of the tree is left and removes the cgroup.
        let cgroup = TreeLimits::probe().create(self.config.memory_limit, MAX_TREE_PROCESSES)?;
        self.limit(&mut command, cgroup.as_ref());
        command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = command.spawn()?;
        drop(seccomp);
        // Fed from a thread: a program that does not read its input must not block us.
        let feeder = stdin.zip(child.stdin.take()).map(|(bytes, mut pipe)| {
            let bytes = bytes.to_vec();
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = pipe.write_all(&bytes);
            })
        });
        let cap = self.config.max_output_bytes;
        let stdout = child.stdout.take().map(|p| OutputReader::spawn(p, cap));
        let stderr = child.stderr.take().map(|p| OutputReader::spawn(p, cap));
        let pid = child.id() as libc::pid_t;
        let exited = wait_exited(pid, Instant::now() + self.config.timeout);
        // SAFETY: `pid` is our unreaped child, so its process group id cannot have been reused.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let status = child.wait()?;
        let grace = Instant::now() + Duration::from_millis(500);
        let (stdout, stderr) = (OutputReader::finish(stdout, grace), OutputReader::finish(stderr, grace));
        drop(feeder);
        drop(cgroup);
        Ok(exited.then(|| PythonOutput { stdout, stderr, exit_code: exit_code(status) }))
    }

    /// The interpreter on the script in `dir`: sandboxed, or plain when no sandbox works here and
    /// isolation was turned off; with the sandbox's seccomp descriptor, to keep until the command
    /// is spawned.
    fn command(&self, dir: &Path) -> std::io::Result<(Command, Option<OwnedFd>)> {
        self.config.check_isolation().map_err(std::io::Error::other)?;
        let program = sandbox::resolve_program(&self.config.interpreter)?;
        // The sandbox whenever it works; unisolated only when it does not and the user opted out.
        let Isolation::Bubblewrap(bwrap) = Isolation::probe() else {
            return Ok((self.unisolated(&program, dir)?, None));
        };
        let interpreter = Interpreter::resolve(&program)?;
        let sandbox = sandbox::python_command(bwrap, &interpreter, dir, self.config.scratch_bytes)?;
        let mut command = sandbox.command;
        command.arg(format!("{}/{SCRIPT}", sandbox::SCRIPT_DIR));
        Ok((command, Some(sandbox.seccomp)))
    }

    /// The interpreter as a plain child (`--unsafe-tools`): cleared environment, a scratch cwd.
    fn unisolated(&self, program: &Path, dir: &Path) -> std::io::Result<Command> {
        let work = dir.join("work");
        std::fs::create_dir(&work)?;
        let mut cmd = Command::new(program);
        cmd.arg(dir.join(SCRIPT)).current_dir(&work).env_clear();
        for key in ENV_PASSTHROUGH {
            if let Some(value) = std::env::var_os(key) {
                cmd.env(key, value);
            }
        }
        cmd.env("HOME", &work)
            .env("TMPDIR", &work)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONIOENCODING", "utf-8");
        Ok(cmd)
    }

    /// Pipes, a process group of its own, the run's cgroup (joined before the sandbox starts)
    /// and the resource limits.
    fn limit(&self, cmd: &mut Command, cgroup: Option<&RunCgroup>) {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let join = cgroup.map(RunCgroup::join_fds).unwrap_or_default();
        // Without a cgroup, a non-root user's process count is the only bound on a fork bomb
        // (root is exempt from RLIMIT_NPROC).
        // SAFETY: `getuid` cannot fail.
        let uid = unsafe { libc::getuid() };
        let nproc = (cgroup.is_none() && uid != 0).then(|| processes_of(uid) + MAX_TREE_PROCESSES);
        let limits = [
            (libc::RLIMIT_AS, self.config.memory_limit),
            (libc::RLIMIT_FSIZE, self.config.max_file_size),
            (libc::RLIMIT_NOFILE, Some(MAX_OPEN_FILES)),
            (libc::RLIMIT_CORE, Some(0)),
            (libc::RLIMIT_NPROC, nproc),
        ];
        // SAFETY: the closure only writes to the open `cgroup.procs` descriptors and calls
        // `setrlimit`, both async-signal-safe; the cgroup outlives the spawn.
        unsafe {
            cmd.pre_exec(move || {
                RunCgroup::join(&join)?;
                for (resource, limit) in limits {
                    if let Some(limit) = limit {
                        let rlim = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                        if libc::setrlimit(resource, &rlim) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                }
                Ok(())
            });
        }
    }
}

/// How many processes the real user `uid` has now (from `/proc`).
fn processes_of(uid: libc::uid_t) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let owned = |status: &str| {
        let line = status.lines().find(|l| l.starts_with("Uid:"))?;
        line.split_whitespace().nth(1)?.parse::<libc::uid_t>().ok()
    };
    let count = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|e| std::fs::read_to_string(e.path().join("status")).ok().as_deref().and_then(owned) == Some(uid))
        .count();
    count as u64
}

/// Waits (without reaping) until `pid` exits or `deadline` passes; true if it exited.
fn wait_exited(pid: libc::pid_t, deadline: Instant) -> bool {
    loop {
        // SAFETY: `info` is a valid out-parameter; WNOWAIT leaves the child reapable.
        let (rc, exited_pid) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            let rc = libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags);
            (rc, info.si_pid())
        };
        if rc != 0 || exited_pid != 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Python's `returncode`: the exit code, or minus the signal number.
fn exit_code(status: ExitStatus) -> i32 {
    status.code().or_else(|| status.signal().map(|s| -s)).unwrap_or(-1)
}

/// Captured output of a finished script (each stream cut at the tool's output limit, read with
/// universal newlines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonOutput {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Python's `returncode`: the exit code, or minus the signal that ended the process.
    pub exit_code: i32,
}

impl PythonOutput {
    /// The reference's layout: stdout, `[stderr]` block, `[exit_code]` line, joined, stripped, or `[no output]`; a
    /// stream takes part when it is non-empty before its right strip, as in the reference.
    fn format(&self) -> String {
        let mut parts = Vec::new();
        if !self.stdout.is_empty() {
            parts.push(py_rstrip(&self.stdout).to_string());
        }
        if !self.stderr.is_empty() {
            parts.push(format!("[stderr]\n{}", py_rstrip(&self.stderr)));
        }
        if self.exit_code != 0 {
            parts.push(format!("[exit_code] {}", self.exit_code));
        }
        let joined = parts.join("\n");
        match py_strip(&joined) {
            "" => "[no output]".to_string(),
            text => text.to_string(),
        }
    }
}

/// Drains a pipe on a thread, keeping at most `cap` bytes.
struct OutputReader {
    kept: Arc<Mutex<Vec<u8>>>,
    thread: JoinHandle<()>,
}

impl OutputReader {
    fn spawn(mut pipe: impl Read + Send + 'static, cap: usize) -> Self {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&kept);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let mut kept = sink.lock().unwrap_or_else(|p| p.into_inner());
                        let room = cap.saturating_sub(kept.len()).min(n);
                        kept.extend_from_slice(&buf[..room]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        });
        Self { kept, thread }
    }

    /// The text read so far (universal newlines), after waiting for end-of-stream until
    /// `deadline` (a process that escaped the kill may keep the pipe open; its reader is then left
    /// behind).
    fn finish(reader: Option<Self>, deadline: Instant) -> String {
        let Some(reader) = reader else {
            return String::new();
        };
        while !reader.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let kept = reader.kept.lock().unwrap_or_else(|p| p.into_inner());
        // Python's text mode reads universal newlines: `\r\n` and `\r` become `\n`.
        String::from_utf8_lossy(&kept).replace("\r\n", "\n").replace('\r', "\n")
    }
}

/// A private temporary directory, removed on drop.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn create() -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        loop {
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
            let path = std::env::temp_dir().join(format!("rmas-python-{}-{n}-{nanos}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
