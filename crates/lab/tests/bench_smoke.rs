//! The `lab` CLI parses its bench arguments and refuses an unknown profile before touching
//! the network (no root, no timing).

use std::process::Command;

fn lab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lab"))
}

#[test]
fn bench_help_lists_the_options() {
    let out = lab().args(["bench", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in ["--runs", "--quick", "--out", "--booster", "PROFILE"] {
        assert!(help.contains(opt), "{opt} missing from:\n{help}");
    }
}

#[test]
fn bench_refuses_an_unknown_profile() {
    let out = lab().args(["bench", "no-such-profile"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown profile"), "{err}");
}
