//! System resolution against the golden hub caches, manifests, descriptions and the hub cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use rmas::hub::Hub;
use rmas::link::OuterLink;
use rmas::source::{FileSource, LocalDir};
use rmas::system::{Checkpoint, SystemSpec, family_style, parse_outer_manifest, resolve_inner_link};
use rmas_text::{Role, Style, Task};

use crate::common::{SYSTEMS, golden_cases};

type B = NdArray<f32>;

fn hub_dir(case: &str) -> PathBuf {
    Path::new(SYSTEMS).join(case).join("hub")
}

fn offline_hub(case: &str) -> Hub {
    Hub::new(hub_dir(case)).with_offline(true)
}

fn expected_json(case: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(Path::new(SYSTEMS).join(case).join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `"<HF_HUB_CACHE>/…/blobs/…  (= models--…/snapshots/…/adapter.pt)"` → the snapshot-relative part.
fn snapshot_relative(summary_path: &serde_json::Value) -> String {
    let text = summary_path.as_str().unwrap();
    let start = text.find("(= ").unwrap() + 3;
    text[start..text.len() - 1].to_string()
}

fn err_string<T: std::fmt::Debug>(result: rmas::Result<T>) -> String {
    result.expect_err("expected an error").to_string()
}

#[test]
fn golden_systems_resolve_like_the_official_loader() {
    for (case, style, task) in golden_cases() {
        let case = case.as_str();
        let spec = SystemSpec::resolve_style(&offline_hub(case), style, task).unwrap();
        let summary = &expected_json(case)["official_loader_summary"];
        assert_eq!(summary["family"].as_str().unwrap(), spec.style.spec().family);
        assert_eq!(expected_json(case)["settings"]["style"].as_str().unwrap(), style.key());

        let agents = summary["agents"].as_object().unwrap();
        let roles: Vec<&str> = spec.agents.iter().map(|a| a.role.key()).collect();
        let mut expected_roles: Vec<&str> = agents.keys().map(String::as_str).collect();
        expected_roles.sort();
        let mut sorted = roles.clone();
        sorted.sort();
        assert_eq!(sorted, expected_roles, "{case}: roles");
        let role_order: Vec<Role> = spec.agents.iter().map(|a| a.role).collect();
        assert_eq!(role_order, style.roles(), "{case}: role order");

        let hidden = spec.hidden_sizes().unwrap();
        for agent in &spec.agents {
            let official = &agents[agent.role.key()];
            assert!(agent.source.contains(official["repo_id"].as_str().unwrap()), "{}", agent.source);
            let relative = snapshot_relative(&official["inner_adapter_path"]);
            assert!(
                agent.inner_link.ends_with(&relative),
                "{case}/{}: {:?} vs {relative}",
                agent.role,
                agent.inner_link
            );
            assert!(agent.inner_link.is_file());
            let Checkpoint::Dir(dir) = &agent.checkpoint else { panic!("{case}/{}: not a directory", agent.role) };
            for file in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
                assert!(dir.join(file).is_file(), "{case}/{}: {file}", agent.role);
            }
            assert_eq!(hidden[&agent.role] as u64, official["hidden_size"].as_u64().unwrap());
        }

        let outer = summary["outer_adapters"].as_object().unwrap();
        let keys: Vec<&String> = spec.outer_links.keys().collect();
        assert_eq!(keys, outer.keys().collect::<Vec<_>>(), "{case}: outer keys");
        for (key, link) in &spec.outer_links {
            assert!(link.path.ends_with(snapshot_relative(&outer[key]["path"])), "{case}/{key}: {:?}", link.path);
            assert!(link.path.is_file());
        }
        let loaded = spec.load_outer_links(&hidden, |p| OuterLink::<B>::load(p, &Default::default())).unwrap();
        for (key, link) in &loaded {
            assert_eq!(link.in_dim() as u64, outer[key]["in_dim"].as_u64().unwrap(), "{key}");
            assert_eq!(link.out_dim() as u64, outer[key]["out_dim"].as_u64().unwrap(), "{key}");
        }
        assert_eq!(spec.load_inner_links::<B>(&hidden, &Default::default()).unwrap().len(), spec.agents.len());
        assert_eq!(spec.final_agent().unwrap().role, style.final_role());
    }
}

#[test]
fn task_scoped_files_follow_the_task() {
    let hub = offline_hub("sequential-light-r2");
    for task in [Task::Math, Task::Code] {
        let spec = SystemSpec::resolve_style(&hub, Style::SequentialLight, task).unwrap();
        for agent in &spec.agents {
            assert!(agent.inner_link.ends_with(format!("adapter({task}).pt")), "{:?}", agent.inner_link);
        }
        for link in spec.outer_links.values() {
            let name = link.path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.ends_with(&format!("Outerlink({task}).pt")), "{name}");
        }
    }
    let mixture = SystemSpec::resolve_style(&offline_hub("mixture-r2"), Style::Mixture, Task::Code).unwrap();
    assert!(mixture.agents.iter().all(|a| a.inner_link.ends_with("adapter.pt")));
}

#[test]
fn inner_link_resolution_order() {
    let snapshot = offline_hub("sequential-light-r2")
        .repo("RecursiveMAS/Sequential-Light-Planner-Qwen3-1.7B")
        .snapshot_dir()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::copy(snapshot.join("adapter(math).pt"), dir.join("adapter(math).pt")).unwrap();
    let src = LocalDir::new(dir);
    assert!(resolve_inner_link(&src, Some(Task::Math)).unwrap().ends_with("adapter(math).pt"));
    let msg = err_string(resolve_inner_link(&src, Some(Task::Code)));
    assert!(msg.contains("adapter(code).pt") && msg.contains("adapter.pt") && msg.contains("code"), "{msg}");
    let msg = err_string(resolve_inner_link(&src, None));
    assert!(msg.contains("task none"), "{msg}");

    std::fs::copy(snapshot.join("adapter(math).pt"), dir.join("custom.pt")).unwrap();
    std::fs::write(dir.join("innerlink_config.json"), r#"{"tasks": {"math": {"adapter.pt": "custom.pt"}}}"#).unwrap();
    assert!(resolve_inner_link(&src, Some(Task::Math)).unwrap().ends_with("custom.pt"));
    std::fs::copy(snapshot.join("adapter(math).pt"), dir.join("adapter.pt")).unwrap();
    assert!(resolve_inner_link(&src, Some(Task::Code)).unwrap().ends_with("adapter.pt"));
    assert!(resolve_inner_link(&src, None).unwrap().ends_with("adapter.pt"));

    std::fs::write(dir.join("innerlink_config.json"), r#"{"tasks": {"math": {"adapter.pt": "../escape.pt"}}}"#)
        .unwrap();
    let msg = err_string(resolve_inner_link(&src, Some(Task::Math)));
    assert!(msg.contains("../escape.pt"), "{msg}");
}

#[test]
fn outer_manifests_scoped_and_unscoped() {
    let path = Path::new("outerlink_config.json");
    let scoped = r#"{"tasks": {"math": {"adapters": [{"legacy_key": "outer_12", "filename": "A(math).pt"}]},
                              "code": {"adapters": [{"legacy_key": "outer_12", "filename": "A(code).pt"}]}}}"#;
    assert_eq!(parse_outer_manifest(scoped, path, Task::Code).unwrap()[0].filename, "A(code).pt");
    assert_eq!(parse_outer_manifest(scoped, path, Task::Math).unwrap()[0].filename, "A(math).pt");
    let math_only = r#"{"tasks": {"math": {"adapters": [{"legacy_key": "outer_12", "filename": "A.pt"}]}}}"#;
    let msg = err_string(parse_outer_manifest(math_only, path, Task::Code));
    assert!(msg.contains("task `code`") && msg.contains("math"), "{msg}");
    let flat =
        r#"{"adapters": [{"legacy_key": "outer_rt", "filename": "R-T.pt", "adapter_type": "outer_ln_res_adapter"}]}"#;
    assert_eq!(parse_outer_manifest(flat, path, Task::Code).unwrap()[0].legacy_key, "outer_rt");
    let msg = err_string(parse_outer_manifest(r#"{"adapters": []}"#, path, Task::Math));
    assert!(msg.contains("no outer adapters"), "{msg}");
    let bad_type = r#"{"adapters": [{"legacy_key": "k", "filename": "f.pt", "adapter_type": "mlp"}]}"#;
    assert!(
        err_string(parse_outer_manifest(bad_type, path, Task::Math)).contains("only outer_ln_res_adapter supported")
    );
    assert!(err_string(parse_outer_manifest("{", path, Task::Math)).contains("outerlink_config.json"));
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

#[test]
fn missing_or_empty_manifest_is_an_error() {
    let hub = offline_hub("mixture-r2");
    let tmp = tempfile::tempdir().unwrap();
    let outer = tmp.path().join("outer");
    std::fs::create_dir(&outer).unwrap();
    let desc = write(&tmp.path().join("sys.toml"), "style = \"mixture\"\nouter = \"outer\"\n");
    let msg = err_string(SystemSpec::from_file(&desc, &hub));
    assert!(msg.contains("outerlink_config.json") && msg.contains("outer"), "{msg}");

    write(&outer.join("outerlink_config.json"), r#"{"format_version": 1, "adapters": []}"#);
    let msg = err_string(SystemSpec::from_file(&desc, &hub));
    assert!(msg.contains("no outer adapters"), "{msg}");

    let offline_missing = Hub::new(tmp.path().join("empty-cache")).with_offline(true);
    let msg = err_string(SystemSpec::resolve_style(&offline_missing, Style::Deliberation, Task::Math));
    assert!(msg.contains("RecursiveMAS/Deliberation-Reflector-Qwen3.5-4B") && msg.contains("HF_HUB_OFFLINE"), "{msg}");
    assert!(msg.contains("empty-cache") && msg.contains("config.json"), "{msg}");
}

#[test]
fn dim_mismatch_names_link_and_both_sizes() {
    let spec = SystemSpec::resolve_style(&offline_hub("mixture-r2"), Style::Mixture, Task::Math).unwrap();
    let mut hidden = spec.hidden_sizes().unwrap();
    hidden.insert(Role::Summarizer, 80);
    let msg = err_string(spec.load_outer_links(&hidden, |p| OuterLink::<B>::load(p, &Default::default())));
    assert!(msg.contains("outer_1s") && msg.contains("out_dim 64") && msg.contains("hidden size 80"), "{msg}");
    assert!(msg.contains("summarizer"), "{msg}");

    let link = &spec.outer_links["outer_s3"];
    let msg = err_string(link.check_dims(64, 90, &spec.hidden_sizes().unwrap()));
    assert!(msg.contains("outer_s3") && msg.contains("90") && msg.contains("96") && msg.contains("science"), "{msg}");
    let msg = err_string(link.check_dims(32, 96, &spec.hidden_sizes().unwrap()));
    assert!(msg.contains("in_dim 32") && msg.contains("64"), "{msg}");

    hidden.insert(Role::Math, 40);
    let msg = err_string(spec.load_inner_links::<B>(&hidden, &Default::default()));
    assert!(msg.contains("inner link of `math`") && msg.contains("48") && msg.contains("40"), "{msg}");
}

#[test]
fn description_files_assemble_custom_systems() {
    let hub = offline_hub("sequential-light-r2");
    let planner_dir = hub.repo("RecursiveMAS/Sequential-Light-Planner-Qwen3-1.7B").snapshot_dir().unwrap();
    let outer_dir = hub.repo("RecursiveMAS/Sequential-Light-Outerlinks").snapshot_dir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let toml = format!(
        "name = \"custom\"\nstyle = \"sequential_light\"\ntask = \"code\"\n\
         [[agents]]\nrole = \"planner\"\nsource = \"{}\"\ninner_link = \"adapter(math).pt\"\n\
         [[outer_links]]\nkey = \"outer_12\"\nfile = \"{}\"\n",
        planner_dir.display(),
        outer_dir.join("Planner-Critic-Outerlink(math).pt").display()
    );
    let spec = SystemSpec::from_file(&write(&tmp.path().join("custom.toml"), &toml), &hub).unwrap();
    assert_eq!((spec.name.as_str(), spec.style, spec.task), ("custom", Style::SequentialLight, Task::Code));
    let planner = spec.agent(Role::Planner).unwrap();
    assert!(planner.source.contains("directory") && planner.inner_link.ends_with("adapter(math).pt"));
    assert!(spec.agent(Role::Critic).unwrap().inner_link.ends_with("adapter(code).pt"));
    assert!(spec.outer_links["outer_12"].path.ends_with("Planner-Critic-Outerlink(math).pt"));
    assert!(spec.outer_links["outer_23"].path.ends_with("Critic-Solver-Outerlink(code).pt"));

    let agents: Vec<String> = ["planner", "critic", "solver"]
        .iter()
        .zip(Style::SequentialLight.spec().agent_repos)
        .map(|(role, repo)| format!(r#"{{"role": "{role}", "source": "{repo}"}}"#))
        .collect();
    let links: Vec<String> =
        [("outer_12", "Planner-Critic"), ("outer_23", "Critic-Solver"), ("outer_31", "Solver-Planner")]
            .iter()
            .map(|(key, name)| {
                format!(
                    r#"{{"key": "{key}", "file": "{}"}}"#,
                    outer_dir.join(format!("{name}-Outerlink(math).pt")).display()
                )
            })
            .collect();
    let json = format!(
        r#"{{"family": "sequential", "agents": [{}], "outer_links": [{}]}}"#,
        agents.join(","),
        links.join(",")
    );
    let from_json = SystemSpec::from_file(&write(&tmp.path().join("bare.json"), &json), &hub).unwrap();
    assert_eq!(from_json.name, "bare");
    assert_eq!(
        from_json.outer_links,
        SystemSpec::resolve_style(&hub, Style::SequentialLight, Task::Math).unwrap().outer_links
    );

    let cases = [
        ("family = \"sequential\"\n", "no source for role `planner`"),
        ("style = \"mixture\"\nfamily = \"mixture\"\n", "exactly one of"),
        ("style = \"sequential-light\"\n[[agents]]\nrole = \"judge\"\nsource = \"x/y\"\n", "unknown role `judge`"),
        ("style = \"sequential-light\"\ncolour = 1\n", "colour"),
        (
            "style = \"sequential-light\"\n[[agents]]\nrole = \"critic\"\nsource = \"no such thing!\"\n",
            "neither a `.gguf` file, a directory",
        ),
        (
            "style = \"sequential-light\"\n[[agents]]\nrole = \"critic\"\nsource = \"agent.gguf\"\n",
            "GGUF agent `critic` needs `inner_link`",
        ),
        (
            "style = \"sequential-light\"\n[[agents]]\nrole = \"critic\"\nsource = \"agent.gguf\"\ninner_link = \"none.pt\"\n",
            "none.pt",
        ),
        ("style = \"pipeline\"\n", "unknown style \"pipeline\""),
        ("family = \"pipeline\"\n", "unknown family `pipeline`"),
    ];
    write(&tmp.path().join("agent.gguf"), "GGUF");
    for (text, needle) in cases {
        let msg = err_string(SystemSpec::from_file(&write(&tmp.path().join("bad.toml"), text), &hub));
        assert!(msg.contains(needle), "{text}: {msg}");
    }
    // A file that is not GGUF fails when its header is first read, naming it.
    let text = "style = \"sequential-light\"\n[[agents]]\nrole = \"critic\"\nsource = \"agent.gguf\"\ninner_link = \"agent.gguf\"\n";
    let spec = SystemSpec::from_file(&write(&tmp.path().join("gguf.toml"), text), &hub).unwrap();
    let msg = err_string(spec.hidden_sizes());
    assert!(msg.contains("agent.gguf"), "{msg}");
    let msg = err_string(SystemSpec::from_file(&tmp.path().join("absent.toml"), &hub));
    assert!(msg.contains("absent.toml"), "{msg}");
}

#[test]
fn styles_families_and_tasks_parse() {
    for style in Style::ALL {
        assert_eq!(style.cli_name().parse::<Style>().unwrap(), style);
        assert_eq!(style.key().parse::<Style>().unwrap(), style);
        assert_eq!(family_style(style.spec().family).unwrap().roles(), style.roles());
    }
    assert_eq!("Sequential_Scaled".parse::<Style>().unwrap(), Style::SequentialScaled);
    let err = "chain".parse::<Style>().expect_err("unknown style");
    assert!(err.to_string().contains("unknown style \"chain\""), "{err}");
    assert_eq!(Style::Deliberation.final_role(), Role::Toolcaller);
    assert_eq!(Style::Mixture.final_role(), Role::Summarizer);
    assert_eq!(Task::from_dataset("evalplus/mbppplus"), Task::Code);
    assert_eq!(Task::from_dataset("mbppplus"), Task::Code);
    assert_eq!(Task::from_dataset("gpqa"), Task::Math);
    let err = "poetry".parse::<Task>().expect_err("unknown task");
    assert!(err.to_string().contains("poetry"), "{err}");
    assert_eq!(family_style("Deliberation").unwrap(), Style::Deliberation);
    assert_eq!(family_style("sequential").unwrap(), Style::SequentialLight);
}

#[test]
fn hub_cache_resolution() {
    let from_cache = Hub::from_vars(|k| (k == "HF_HUB_CACHE").then(|| "/c".into()));
    assert_eq!(from_cache.cache_dir(), Path::new("/c"));
    assert!(!from_cache.is_offline());
    let vars: BTreeMap<&str, &str> = [("HF_HOME", "/h"), ("HOME", "/home/u"), ("HF_HUB_OFFLINE", "1")].into();
    let from_home = Hub::from_vars(|k| vars.get(k).map(|v| v.to_string()));
    assert_eq!(from_home.cache_dir(), Path::new("/h/hub"));
    assert!(from_home.is_offline());
    let default = Hub::from_vars(|k| (k == "HOME").then(|| "/home/u".into()));
    assert_eq!(default.cache_dir(), Path::new("/home/u/.cache/huggingface/hub"));

    // A real-style cache: snapshot files are symlinks into blobs/.
    let tmp = tempfile::tempdir().unwrap();
    let source = offline_hub("mixture-r2").repo("RecursiveMAS/Mixture-Outerlinks").snapshot_dir().unwrap();
    let repo_dir = tmp.path().join("models--RecursiveMAS--Mixture-Outerlinks");
    let snapshot = repo_dir.join("snapshots/abc123");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), "abc123\n").unwrap();
    for file in ["outerlink_config.json", "Math-Summarizer-Outerlink.pt"] {
        let blob = repo_dir.join("blobs").join(format!("blob-{}", file.len()));
        std::fs::copy(source.join(file), &blob).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/blob-{}", file.len()), snapshot.join(file)).unwrap();
    }
    let repo = Hub::new(tmp.path()).with_offline(true).repo("RecursiveMAS/Mixture-Outerlinks");
    assert_eq!(repo.snapshot_dir().unwrap(), snapshot);
    assert!(repo.exists("outerlink_config.json").unwrap());
    assert!(!repo.exists("Code-Summarizer-Outerlink.pt").unwrap());
    let link_path = repo.get("Math-Summarizer-Outerlink.pt").unwrap();
    let link = rmas::link::OuterLink::<B>::load(&link_path, &Default::default()).unwrap();
    assert_eq!((link.in_dim(), link.out_dim()), (48, 64));
    let msg = err_string(repo.get("Code-Summarizer-Outerlink.pt"));
    assert!(msg.contains("RecursiveMAS/Mixture-Outerlinks") && msg.contains("Code-Summarizer-Outerlink.pt"), "{msg}");
    assert!(msg.contains(&tmp.path().display().to_string()) && msg.contains("unset HF_HUB_OFFLINE"), "{msg}");
    assert!(err_string(repo.get("../../etc/passwd")).contains("invalid file name"));
}
