//! The code sandbox from the command line: `--unsafe-tools` (run, eval, score) and `rmas doctor`.

use anyhow::Result;
use clap::Args as ClapArgs;
use rmas::tools::cgroup::MAX_TREE_PROCESSES;
use rmas::tools::sandbox::{Interpreter, find_in_path, seccomp_program};
use rmas::tools::{Isolation, PythonConfig, ToolBox, TreeLimits};
use rmas_text::Style;
use serde_json::json;

/// How model-written code runs (the deliberation python tool, MBPP+/LiveCodeBench tests).
#[derive(ClapArgs, Clone, Debug, Default)]
pub struct ToolArgs {
    /// Run model-written code even where the sandbox cannot be set up: WITHOUT isolation, with a
    /// warning on every run. Only for trusted models on a disposable machine (see `rmas doctor`).
    #[arg(long)]
    pub unsafe_tools: bool,
}

impl ToolArgs {
    /// The python tool's settings (`RMAS_PYTHON`, `RMAS_UNSAFE_TOOLS`) under this flag, checked
    /// when code will run (`code_runs`: the run fails closed before any model loads); warns once
    /// when code will run unisolated.
    pub fn python(&self, code_runs: bool) -> Result<PythonConfig> {
        let mut config = PythonConfig::from_env();
        config.unsafe_no_isolation |= self.unsafe_tools;
        if code_runs {
            config.check_isolation().map_err(anyhow::Error::msg)?;
        }
        if config.unsafe_no_isolation
            && let Isolation::Unavailable(why) = Isolation::probe()
        {
            eprintln!("warning: model-written code runs WITHOUT isolation (--unsafe-tools): {why}");
        }
        Ok(config)
    }
}

/// The deliberation tools with `python`, for a style whose final agent calls them.
pub fn toolbox(style: Style, python: &PythonConfig) -> Result<Option<ToolBox>> {
    if !style.spec().tool_loop {
        return Ok(None);
    }
    Ok(Some(ToolBox::with_python(python.clone())?))
}

/// Report which isolation features this machine offers for model-written code
#[derive(ClapArgs, Debug)]
pub struct DoctorArgs {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Prints what the sandbox needs and finds; fails when code could not run isolated.
pub fn doctor(args: DoctorArgs) -> Result<()> {
    let config = PythonConfig::from_env();
    let bwrap = find_in_path("bwrap");
    let isolation = Isolation::probe();
    let interpreter = rmas::tools::sandbox::resolve_program(&config.interpreter)
        .and_then(|p| Interpreter::resolve(&p))
        .map_err(|e| e.to_string());
    let userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").ok().map(|s| s.trim().to_owned());
    let tree = TreeLimits::probe();
    let (ok, why) = match isolation {
        Isolation::Bubblewrap(_) => (true, None),
        Isolation::Unavailable(why) => (false, Some(why.clone())),
    };
    if args.json {
        let report = json!({
            "sandbox": ok,
            "reason": why,
            "bubblewrap": bwrap.as_ref().map(|p| p.display().to_string()),
            "max_user_namespaces": userns,
            "seccomp_filter_instructions": seccomp_program().len(),
            "tree_limits": match tree {
                TreeLimits::Cgroup { version, .. } => json!({"cgroup": version, "max_processes": MAX_TREE_PROCESSES}),
                TreeLimits::Unavailable(why) => json!({"error": why}),
            },
            "interpreter": interpreter.as_ref().map(|i| json!({"executable": i.executable, "prefix": i.prefix})).map_err(Clone::clone).unwrap_or_else(|e| json!({"error": e})),
            "unsafe_tools_env": config.unsafe_no_isolation,
        });
        println!("{report}");
    } else {
        println!("python sandbox:        {}", if ok { "available (bubblewrap)" } else { "NOT available" });
        if let Some(why) = &why {
            println!("  why:                 {why}");
        }
        println!("bubblewrap:            {}", bwrap.map_or("not found in PATH".into(), |p| p.display().to_string()));
        println!("user namespaces:       max_user_namespaces = {}", userns.as_deref().unwrap_or("unknown"));
        println!(
            "seccomp filter:        {} instructions (ptrace, process_vm_*, keyctl, mount, bpf, … denied)",
            seccomp_program().len()
        );
        println!("namespaces:            user, mount, pid, net, ipc, uts, cgroup (with the sandbox)");
        println!("whole-tree limits:     {}", tree.describe());
        match &interpreter {
            Ok(i) => println!("interpreter:           {} (prefix {})", i.executable.display(), i.prefix.display()),
            Err(e) => println!("interpreter:           {} — {e}", config.interpreter.display()),
        }
        if config.unsafe_no_isolation {
            println!("RMAS_UNSAFE_TOOLS=1:   code runs unisolated where the sandbox is not available");
        }
    }
    if ok { Ok(()) } else { anyhow::bail!("model-written code cannot run isolated on this machine") }
}
