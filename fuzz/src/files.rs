//! The text-file targets: the node's TOML config (`FileConfig::parse` then `Config::build`
//! with no flags) and `booster speedtest`'s JSON job file (`parse_jobs`).
//!
//! Checked: nothing panics; an error has a message; a built config holds the promises
//! `Config::build` makes (no open proxy, no API off loopback without a token, limits at
//! least 1, timeouts above zero, a secret of 8 or more characters wherever peers, relays,
//! the peer port or bond rules need one, interface names that fit); its `Debug` and JSON
//! forms do not depend on the secrets; parsed jobs each have URLs that parse.

use booster::cmd::speedtest::parse_jobs;
use booster::config::{Config, FileConfig, Overrides, Secret};
use booster::fetch::Url;
use std::path::PathBuf;
use std::sync::OnceLock;

/// `secret_file` and `auth.password_file` would make `Config::build` read any path the text
/// names (`/dev/zero` never ends): they are pointed at this one small file instead.
fn secret_file() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("booster-fuzz-secret-{}", std::process::id()));
        std::fs::write(&path, "fuzz-secret-from-a-file\n").expect("write the secret file");
        path
    })
    .clone()
}

pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut file = match FileConfig::parse(text) {
        Ok(file) => file,
        Err(message) => {
            assert!(!message.is_empty());
            return;
        }
    };
    if file.secret_file.is_some() {
        file.secret_file = Some(secret_file());
    }
    if let Some(auth) = &mut file.auth {
        if auth.password_file.is_some() {
            auth.password_file = Some(secret_file());
        }
    }
    let cfg = match Config::build(file, Overrides::default()) {
        Ok(cfg) => cfg,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    assert!(
        cfg.listen.ip().is_loopback() || cfg.auth.is_some(),
        "open proxy: {cfg:?}"
    );
    if let Some(api) = cfg.api {
        assert!(api.ip().is_loopback() || cfg.api_token.is_some(), "open API: {cfg:?}");
    }
    assert!(cfg.max_connections >= 1 && cfg.connect_attempts >= 1);
    assert!(!cfg.connect_timeout.is_zero() && !cfg.handshake_timeout.is_zero() && !cfg.idle_timeout.is_zero());
    if let Some(secret) = &cfg.secret {
        assert!(secret.expose().len() >= 8);
    }
    let needs_secret = !cfg.peers.is_empty() || !cfg.relays.is_empty() || cfg.peer_listen.is_some() || cfg.lend.enabled;
    assert!(!needs_secret || cfg.secret.is_some(), "{cfg:?}");
    assert!(cfg.bond.is_empty() || !cfg.relays.is_empty());
    for uplink in &cfg.uplinks {
        assert!((1..=15).contains(&uplink.name.len()), "{:?}", uplink.name);
    }
    if let Some(auth) = &cfg.auth {
        assert!((1..=255).contains(&auth.username.len()) && (1..=255).contains(&auth.password.expose().len()));
    }
    // Secrets never show: swapping every secret for another leaves Debug and JSON unchanged.
    let shown = |cfg: &Config| {
        (
            format!("{cfg:?}"),
            serde_json::to_string(cfg).expect("config serializes"),
        )
    };
    let mut swapped = cfg.clone();
    let other = || Some(Secret::new("another-secret-entirely"));
    swapped.secret = swapped.secret.and(other());
    swapped.api_token = swapped.api_token.and(other());
    if let Some(auth) = &mut swapped.auth {
        auth.password = other().expect("some");
    }
    assert_eq!(shown(&cfg), shown(&swapped), "a secret shows");
}

pub fn speedtest_jobs(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let jobs = match parse_jobs(text) {
        Ok(jobs) => jobs,
        Err(message) => {
            assert!(!message.is_empty());
            return;
        }
    };
    assert!(!jobs.is_empty());
    for job in &jobs {
        assert!(!job.urls.is_empty(), "job {:?} without URLs", job.id);
        for url in &job.urls {
            let parsed = Url::parse(url).unwrap_or_else(|e| panic!("{url:?} passed parse_jobs: {e}"));
            assert!(!parsed.host.is_empty() && parsed.path.starts_with('/'), "{parsed:?}");
            let _ = (parsed.host_header(), parsed.is_https(), parsed.default_port());
        }
    }
}
