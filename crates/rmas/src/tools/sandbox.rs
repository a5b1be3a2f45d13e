//! Isolation of model-written code (the python tool, the code scorer of `rmas eval`); see
//! SECURITY.md for what it guarantees and what it needs from the host.
//!
//! The building block is bubblewrap (`bwrap`, Debian's `bubblewrap` package), chosen over a
//! hand-rolled namespace setup because it is small, audited and packaged everywhere: each script
//! runs in new user, mount, PID, network, IPC, UTS and cgroup namespaces with
//! * a minimal read-only root: `/usr` (and the `/bin`, `/lib*` links into it) and the
//!   interpreter's own prefix, nothing else — no `/etc`, `/home`, HF cache or host sockets;
//! * the script's directory read-only at `/rmas` and a size-limited tmpfs at `/work` (cwd, HOME,
//!   TMPDIR), a fresh `/proc` (only the sandbox's processes) and a minimal `/dev`;
//! * no capabilities, no new privileges, no further user namespaces, a new session, death with its
//!   parent, a cleared environment;
//! * a seccomp filter ([`seccomp_program`]) that denies ptrace, process_vm_*, keyctl, mount,
//!   bpf, perf_event_open, kernel modules and the like with `EPERM`.
//!
//! When bubblewrap is missing or cannot create namespaces, [`Isolation::probe`] says why and
//! every tool refuses to run code (fail closed) unless the user opted out with `--unsafe-tools`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// Where the script's directory is mounted (read-only) inside the sandbox.
pub const SCRIPT_DIR: &str = "/rmas";
/// The sandbox's writable scratch directory (a tmpfs).
pub const WORK_DIR: &str = "/work";

/// What this machine offers for isolating code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// bubblewrap at this path creates every namespace the sandbox needs.
    Bubblewrap(PathBuf),
    /// No isolation is possible; the text says what is missing and how to allow it.
    Unavailable(String),
}

impl Isolation {
    /// Probes this machine once per process: finds `bwrap` and runs `true` in a full sandbox.
    pub fn probe() -> &'static Isolation {
        static PROBE: OnceLock<Isolation> = OnceLock::new();
        PROBE.get_or_init(|| {
            let Some(bwrap) = find_in_path("bwrap") else {
                return Isolation::Unavailable(
                    "bubblewrap (`bwrap`) is not installed: install it (Debian/Ubuntu: `apt install bubblewrap`, Fedora: `dnf install bubblewrap`)".into(),
                );
            };
            let usr = Path::new("/usr");
            let probe = command(&bwrap, Path::new("/usr/bin/true"), usr, &usr.join("bin"), 1 << 20, &[]);
            let mut probe = match probe {
                Ok(probe) => probe,
                Err(e) => return Isolation::Unavailable(format!("cannot prepare the seccomp filter: {e}")),
            };
            match probe.command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).output() {
                Ok(out) if out.status.success() => Isolation::Bubblewrap(bwrap),
                Ok(out) => Isolation::Unavailable(format!(
                    "bubblewrap cannot create the sandbox here ({}): unprivileged user namespaces must be allowed (sysctl kernel.unprivileged_userns_clone=1; on Ubuntu 24.04+ kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for bwrap; in Docker run with --security-opt seccomp=unconfined or a profile that allows clone/unshare of namespaces)",
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => Isolation::Unavailable(format!("cannot run {}: {e}", bwrap.display())),
            }
        })
    }
}

/// A resolved interpreter: the real executable and the prefix holding its standard library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interpreter {
    /// `sys.executable`.
    pub executable: PathBuf,
    /// `sys.base_prefix` (mounted read-only in the sandbox).
    pub prefix: PathBuf,
}

impl Interpreter {
    /// Asks `program` (trusted: the user's configured interpreter, run outside the sandbox) where
    /// it lives, once per program. Wrappers such as pyenv shims resolve to the real binary.
    pub fn resolve(program: &Path) -> std::io::Result<Interpreter> {
        static CACHE: OnceLock<Mutex<HashMap<PathBuf, Interpreter>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(found) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(program) {
            return Ok(found.clone());
        }
        let out = Command::new(program)
            .args(["-I", "-c", "import sys; print(sys.executable); print(sys.base_prefix)"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let (Some(executable), Some(prefix)) = (lines.next(), lines.next()) else {
            return Err(std::io::Error::other(format!("`{}` did not report sys.executable", program.display())));
        };
        let found = Interpreter { executable: executable.into(), prefix: prefix.into() };
        if !found.executable.is_absolute() || !found.prefix.is_absolute() {
            return Err(std::io::Error::other(format!("`{}` reported a relative sys.executable", program.display())));
        }
        cache.lock().unwrap_or_else(|p| p.into_inner()).insert(program.to_path_buf(), found.clone());
        Ok(found)
    }
}

/// A command to spawn in the sandbox, with the seccomp descriptor bwrap reads at start: keep it
/// until the command is spawned, then drop it.
pub struct SandboxCommand {
    /// The bwrap command line.
    pub command: Command,
    /// The seccomp program's descriptor (inherited by bwrap).
    pub seccomp: OwnedFd,
}

/// A bubblewrap command running `program` (from `prefix`, with `bin` first in `PATH`) under a
/// `work_bytes` tmpfs at [`WORK_DIR`]; `extra` bwrap options (binds, `--setenv`) go before it.
pub fn command(
    bwrap: &Path,
    program: &Path,
    prefix: &Path,
    bin: &Path,
    work_bytes: u64,
    extra: &[OsString],
) -> std::io::Result<SandboxCommand> {
    let seccomp = seccomp_fd()?;
    let mut cmd = Command::new(bwrap);
    cmd.args([
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
    ]);
    cmd.args(["--ro-bind", "/usr", "/usr"]);
    for (link, target) in [("/bin", "usr/bin"), ("/sbin", "usr/sbin"), ("/lib", "usr/lib"), ("/lib64", "usr/lib64")] {
        if std::fs::read_link(link).is_ok_and(|t| t == Path::new(target)) {
            cmd.args(["--symlink", target, link]);
        } else if Path::new(link).is_dir() {
            cmd.args(["--ro-bind", link, link]);
        }
    }
    if !prefix.starts_with("/usr") {
        cmd.arg("--ro-bind").arg(prefix).arg(prefix);
    }
    cmd.args(["--proc", "/proc", "--dev", "/dev"]);
    cmd.args(["--size", &work_bytes.to_string(), "--tmpfs", WORK_DIR, "--chdir", WORK_DIR]);
    cmd.args(["--clearenv", "--setenv", "HOME", WORK_DIR, "--setenv", "TMPDIR", WORK_DIR]);
    cmd.arg("--setenv").arg("PATH").arg(format!("{}:/usr/bin:/bin", bin.display()));
    let fd = seccomp.as_raw_fd();
    cmd.args(["--setenv", "LANG", "C.UTF-8", "--seccomp", &fd.to_string()]);
    // The descriptor is close-on-exec everywhere but in this command's child, so no other process
    // spawned meanwhile (another sandbox on another thread) inherits it.
    // SAFETY: the closure only calls `fcntl`, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The root itself (a tmpfs bwrap builds the tree on) becomes read-only last.
    cmd.args(extra).args(["--remount-ro", "/"]).arg(program);
    Ok(SandboxCommand { command: cmd, seccomp })
}

/// The sandbox command for `interpreter` with `script_dir` bound read-only at [`SCRIPT_DIR`].
pub fn python_command(
    bwrap: &Path,
    interpreter: &Interpreter,
    script_dir: &Path,
    work_bytes: u64,
) -> std::io::Result<SandboxCommand> {
    let bin = interpreter.executable.parent().unwrap_or(Path::new("/usr/bin"));
    let mut extra: Vec<OsString> = vec!["--ro-bind".into(), script_dir.into(), SCRIPT_DIR.into()];
    for (key, value) in [
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("PYTHONIOENCODING", "utf-8"),
        ("OPENBLAS_NUM_THREADS", "1"),
        ("OMP_NUM_THREADS", "1"),
    ] {
        extra.extend(["--setenv".into(), key.into(), value.into()]);
    }
    command(bwrap, &interpreter.executable, &interpreter.prefix, bin, work_bytes, &extra)
}

/// Syscalls the sandbox denies with `EPERM`: debugging and memory access of other processes,
/// kernel keyrings, mounts and namespaces, BPF, perf, kernel modules, reboot/swap/accounting.
fn denied_syscalls() -> Vec<libc::c_long> {
    let mut denied = vec![
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_kexec_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_reboot,
        libc::SYS_acct,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
    ];
    #[cfg(target_arch = "x86_64")]
    denied.extend([libc::SYS_iopl, libc::SYS_ioperm]);
    denied
}

/// The `AUDIT_ARCH_*` value of this build's architecture (the filter kills any other).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// The classic-BPF seccomp program (as bwrap's `--seccomp` reads it): other architectures are
/// killed, x32 syscalls and the [`denied_syscalls`] fail with `EPERM`, everything else is allowed.
pub fn seccomp_program() -> Vec<libc::sock_filter> {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    const ARCH_OFFSET: u32 = 4; // seccomp_data.arch
    const NR_OFFSET: u32 = 0; // seccomp_data.nr
    let stmt = |code, k| libc::sock_filter { code, jt: 0, jf: 0, k };
    let jump = |code, k, jt, jf| libc::sock_filter { code, jt, jf, k };
    let deny = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let mut program = vec![
        stmt(LD_W_ABS, ARCH_OFFSET),
        jump(JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(LD_W_ABS, NR_OFFSET),
        // x32 syscall numbers (bit 30) would bypass the numbers below.
        jump(JGE_K, 0x4000_0000, 0, 1),
        stmt(RET_K, deny),
    ];
    for nr in denied_syscalls() {
        program.push(jump(JEQ_K, nr as u32, 0, 1));
        program.push(stmt(RET_K, deny));
    }
    program.push(stmt(RET_K, libc::SECCOMP_RET_ALLOW));
    program
}

/// A memory file holding [`seccomp_program`] (close-on-exec; [`command`] lets its child keep it).
fn seccomp_fd() -> std::io::Result<OwnedFd> {
    let program = seccomp_program();
    // SAFETY: `sock_filter` is plain old data; the slice covers exactly the program's bytes.
    let bytes =
        unsafe { std::slice::from_raw_parts(program.as_ptr().cast::<u8>(), std::mem::size_of_val(program.as_slice())) };
    // SAFETY: a constant NUL-terminated name and valid flags.
    let fd = unsafe { libc::memfd_create(c"rmas-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(owned);
    use std::io::{Seek, Write};
    file.write_all(bytes)?;
    file.rewind()?;
    Ok(OwnedFd::from(file))
}

/// Resolves a program name through `PATH` (paths with a `/` are taken as they are).
pub fn resolve_program(program: &Path) -> std::io::Result<PathBuf> {
    let not_found = || std::io::Error::new(std::io::ErrorKind::NotFound, "interpreter not found");
    if program.components().count() > 1 {
        return if program.is_file() { Ok(program.to_path_buf()) } else { Err(not_found()) };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file()).ok_or_else(not_found)
}

/// `name` in `PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    resolve_program(Path::new(name)).ok()
}
