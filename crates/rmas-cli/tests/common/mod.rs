//! What several end-to-end tests share.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The python of a virtual environment made once under the target directory, with
/// `requirements` installed from PyPI (pip itself comes with the environment). Fails with what is
/// missing when it cannot be made (Debian needs `python3-venv`) or PyPI cannot be reached.
pub fn venv_python(requirements: &[&str]) -> PathBuf {
    // The tests of one binary run as threads: one makes the environment while the others wait.
    static MAKING: Mutex<()> = Mutex::new(());
    let _making = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "cannot make a python venv at {} (install python3-venv)",
            venv.display()
        );
    }
    // Already satisfied requirements are not fetched again.
    if !requirements.is_empty() {
        let installed = Command::new(&python).args(["-m", "pip", "install", "-q"]).args(requirements).status();
        assert!(
            installed.is_ok_and(|s| s.success()),
            "cannot install {requirements:?} from PyPI into {}",
            venv.display()
        );
    }
    python
}
