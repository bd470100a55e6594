//! The soak, short: 60 s of mixed traffic under the chaos loop on the `peers` lab
//! (`lab::soak`). Correctness only, no timing thresholds: no transfer returns wrong bytes,
//! every failure is explained by a chaos event, the home node does not leak fds, and nothing
//! panics. Needs root (network namespaces). Runs the release booster if one at least as new as
//! the debug build exists, else the debug one that `cargo test --workspace` builds (its crypto
//! crates are built optimised, see the workspace `Cargo.toml`, so it keeps up with the lab's
//! links).

use std::path::PathBuf;

use lab::soak::{self, SoakArgs, Verdict, FD_SLACK};

#[test]
fn soak_for_a_minute() {
    if !lab::netns::is_root() {
        eprintln!("skipping the soak smoke test: needs root (network namespaces)");
        return;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let (release, debug) = (target.join("release/booster"), target.join("debug/booster"));
    let bin = match (modified(&release), modified(&debug)) {
        (Some(r), Some(d)) if r >= d => release,
        (Some(_), None) => release,
        (_, Some(_)) => debug,
        (None, None) => panic!(
            "no booster binary under {}: run `cargo test --workspace` (or `cargo build -p booster`)",
            target.display()
        ),
    };
    // `booster-lab` does not depend on `booster`, so `cargo test -p booster-lab` alone does not
    // rebuild the binary: refuse one older than booster's sources rather than test old code.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sources = ["crates/booster/src", "crates/proto/src"].map(|d| newest(&root.join(d)));
    let built = modified(&bin).expect("checked above");
    assert!(
        sources.iter().flatten().all(|s| *s <= built),
        "{} is older than booster's sources: run `cargo build -p booster` (or `cargo test --workspace`)",
        bin.display()
    );
    eprintln!("soak smoke: running {}", bin.display());
    let args = SoakArgs {
        minutes: 1.0,
        seed: 1,
        out: PathBuf::from("-"),
        booster: bin,
    };
    let s = soak::run(&args).expect("the soak ran");
    soak::print(&s);
    assert!(!s.events.is_empty(), "the chaos loop did nothing");
    assert!(
        s.transfers.iter().any(|t| t.outcome == soak::Outcome::Ok),
        "no transfer completed"
    );
    assert_eq!(s.count(Verdict::Corrupt), 0, "wrong bytes delivered");
    assert_eq!(s.count(Verdict::Unexplained), 0, "failures no chaos event explains");
    assert!(
        s.fd_delta().abs() <= FD_SLACK,
        "home's fds: {} after warm-up, {} at the end",
        s.baseline.fds,
        s.last.fds
    );
}

/// The newest modification time of the files under `dir`.
fn newest(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    let mut latest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        latest = latest.max(t);
    }
    latest
}
