//! Hostile caches and checkpoint directories (docs/security, issue "Hardening"): a `refs/main` or a
//! snapshot link that points out of the cache, FIFOs and devices under file names, shard names
//! that climb out of the checkpoint, and non-checkpoint files whose bytes must not be echoed. Each
//! gets a clear error — never a hang, a read outside the cache, or file contents in a message.

use std::path::{Path, PathBuf};

use rmas::hub::Hub;
use rmas::source::{FileSource, LocalDir};
use rmas_models::weights::Weights;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rmas-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().expect("mkfifo runs");
    assert!(status.success());
}

const SECRET: &str = "hf_SECRETTOKENVALUE0123456789";

/// A cache with one repo whose snapshot `abc` holds what `fill` writes.
fn cache_with(name: &str, commit: &str, fill: impl FnOnce(&Path, &Path)) -> (Hub, PathBuf) {
    let cache = scratch(name);
    let repo = cache.join("models--org--model");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("snapshots/abc")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    fill(&repo, &repo.join("snapshots/abc"));
    (Hub::new(&cache).with_offline(true).with_progress(false), cache)
}

#[test]
fn cache_refs_and_links_stay_inside_the_repo() {
    let outside = scratch("outside");
    std::fs::create_dir_all(outside.join("snap")).unwrap();
    std::fs::write(outside.join("snap/config.json"), SECRET).unwrap();
    std::fs::write(outside.join("secret.txt"), SECRET).unwrap();

    // refs/main naming a directory outside the cache names no snapshot.
    let escape = format!("../../../../{}", outside.join("snap").display());
    let (hub, _) = cache_with("ref", &escape, |_, _| {});
    let repo = hub.repo("org/model");
    assert!(repo.snapshot_dir().is_none());
    let err = repo.get("config.json").unwrap_err().to_string();
    assert!(err.contains("org/model") && !err.contains(SECRET), "{err}");

    // A snapshot link to a file outside the repo is not served.
    let (hub, _) = cache_with("link", "abc", |_, snap| {
        std::os::unix::fs::symlink(outside.join("secret.txt"), snap.join("config.json")).unwrap();
    });
    let err = hub.repo("org/model").get("config.json").unwrap_err().to_string();
    assert!(err.contains("config.json") && !err.contains(SECRET), "{err}");

    // A link into the repo's own blobs (the real cache layout) is.
    let (hub, _) = cache_with("blob", "abc", |repo, snap| {
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        std::fs::write(repo.join("blobs/0123"), "{}").unwrap();
        std::os::unix::fs::symlink("../../blobs/0123", snap.join("config.json")).unwrap();
    });
    let path = hub.repo("org/model").get("config.json").unwrap();
    assert_eq!(std::fs::read_to_string(path).unwrap(), "{}");

    // A FIFO in the snapshot is no file.
    let (hub, _) = cache_with("fifo", "abc", |_, snap| mkfifo(&snap.join("tokenizer.json")));
    assert!(hub.repo("org/model").get("tokenizer.json").is_err());
}

#[test]
fn local_dirs_serve_regular_files_only() {
    let dir = scratch("local");
    mkfifo(&dir.join("config.json"));
    let err = LocalDir::new(&dir).get("config.json").unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
    assert!(LocalDir::new(&dir).get("../etc/passwd").is_err());
}

#[test]
fn checkpoint_shards_are_files_of_the_checkpoint() {
    let dir = scratch("shards");
    std::fs::write(dir.join("model.safetensors.index.json"), r#"{"weight_map": {"a": "../../secret.safetensors"}}"#)
        .unwrap();
    let err = Weights::from_dir(&dir).err().expect("a climbing shard name is refused").to_string();
    assert!(err.contains("../../secret.safetensors") && err.contains("inside the checkpoint directory"), "{err}");

    std::fs::write(dir.join("model.safetensors.index.json"), r#"{"weight_map": {"a": "model-1.safetensors"}}"#)
        .unwrap();
    mkfifo(&dir.join("model-1.safetensors"));
    let err = Weights::from_dir(&dir).err().expect("a FIFO shard is refused").to_string();
    assert!(err.contains("not a regular file"), "{err}");

    // A token file under the checkpoint's name: the error names the file, not its bytes.
    let plain = scratch("token");
    std::fs::write(plain.join("model.safetensors"), SECRET).unwrap();
    let err = Weights::from_dir(&plain).err().expect("not a checkpoint").to_string();
    assert!(err.contains("model.safetensors") && !err.contains("SECRET"), "{err}");
    let first8 = u64::from_le_bytes(SECRET.as_bytes()[..8].try_into().unwrap()).to_string();
    assert!(!err.contains(&first8), "the header length would spell the file's first bytes: {err}");
}
