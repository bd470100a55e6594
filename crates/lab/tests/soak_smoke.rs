//! The soak, short: 60 s of mixed traffic under the chaos loop on the `peers` lab
//! (`lab::soak`). Correctness only, no timing thresholds: no transfer returns wrong bytes,
//! every failure is explained by a chaos event, the home node does not leak fds, and nothing
//! panics. Needs root (namespaces) and a release build of booster at least as new as the
//! debug one this `cargo test` built (`cargo build --release -p booster`): a debug node cannot
//! carry the soak's traffic without starving its own peer heartbeats. Skips with a message
//! otherwise; `.ci/run` does not build release binaries, for time, so CI on a fresh machine
//! skips it and it runs where a release build exists.

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
    let bin = target.join("release/booster");
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = match (modified(&bin), modified(&target.join("debug/booster"))) {
        (Some(release), Some(debug)) => release >= debug,
        (Some(_), None) => true,
        _ => false,
    };
    if !fresh {
        eprintln!(
            "skipping the soak smoke test: no {} as new as the debug build (cargo build --release -p booster)",
            bin.display()
        );
        return;
    }
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
