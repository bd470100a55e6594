//! The soak, short: 60 s of mixed traffic under the chaos loop on the `peers` lab
//! (`lab::soak`). Correctness only, no timing thresholds: no transfer returns wrong bytes,
//! every failure is explained by a chaos event, the home node does not leak fds, and nothing
//! panics. Needs root (namespaces) and booster's debug binary, which `cargo test --workspace`
//! builds for booster's own integration tests (so it is as new as the code under test); skips
//! with a message otherwise.

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
    let bin = target.join("debug/booster");
    if !bin.exists() {
        eprintln!(
            "skipping the soak smoke test: no {} (cargo test --workspace builds it)",
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
