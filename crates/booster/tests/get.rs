//! `booster get` / the range fetch engine, against our origin: emulated uplinks in-process
//! (no root), plus runs of the real binary over `lo` (root only: SO_BINDTODEVICE).

mod common;

use booster::{
    config::Config,
    fetch::{self, FetchError, NodeConnector, Options, Output, ProxyConnector, Request},
    run::{self, Extras},
    source::Source,
    state::Node,
};
use lab::{
    emulink::EmuLink,
    origin::{sha256_hex, Faults, Origin},
};
use sha2::{Digest, Sha256};
use std::{
    net::SocketAddr,
    path::Path,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

const MB8: u64 = 8_000_000;

fn links() -> Vec<EmuLink> {
    common::emu_links()
}

fn config() -> Config {
    common::emulated_config("")
}

fn emulated(l: &EmuLink) -> Source {
    Source::emulated(l)
}

/// A connector over an in-process node whose sources are `links`.
fn connector(links: &[EmuLink]) -> Arc<NodeConnector> {
    let node = Arc::new(Node::new(config(), None).unwrap());
    for l in links {
        node.add_source(emulated(l));
    }
    Arc::new(NodeConnector::new(node))
}

fn origin(faults: Faults) -> Origin {
    common::origin_with(faults)
}

fn file_url(o: &Origin, size: u64) -> String {
    common::file_url(o, size)
}

fn file_sha(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

fn quiet_opts() -> Options {
    Options {
        notify: Arc::new(|m| eprintln!("note: {m}")),
        ..Options::default()
    }
}

async fn get_file(
    url: &str,
    out: &Path,
    sha: Option<String>,
    c: Arc<dyn fetch::Connector>,
) -> Result<fetch::Outcome, FetchError> {
    let mut req = Request::new(url, Output::File(out.to_path_buf()));
    req.sha256 = sha;
    fetch::download(req, c, quiet_opts()).await
}

fn report(what: &str, o: &fetch::Outcome, links: &[EmuLink], nominal_mbit: f64) {
    let rate = o.size as f64 / o.elapsed.as_secs_f64();
    eprintln!(
        "{what}: {} bytes in {:.2} s = {:.2} MB/s ({:.0}% of the {:.1} MB/s link sum); per link: {}",
        o.size,
        o.elapsed.as_secs_f64(),
        rate / 1e6,
        rate / (nominal_mbit * 1e6 / 8.0) * 100.0,
        nominal_mbit / 8.0,
        common::per_link(links)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_links_give_the_right_bytes_and_all_carry_some() {
    let o = origin(Faults::default());
    let links = links();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.bin");
    let want = sha256_hex(MB8, MB8);
    let got = get_file(&file_url(&o, MB8), &out, Some(want.clone()), connector(&links))
        .await
        .unwrap();
    report("3 links 20/40/40 Mbit", &got, &links, 100.0);
    assert_eq!(got.sha256_ok, Some(true));
    assert!(got.ranged);
    assert_eq!(file_sha(&out), want);
    assert!(!fetch::part_paths(&out).0.exists(), ".part renamed away");
    assert!(!fetch::part_paths(&out).1.exists(), "state file removed");
    for l in &links {
        assert!(
            l.bytes_down() > 200_000,
            "{} carried only {} bytes",
            l.name(),
            l.bytes_down()
        );
    }
    let per: u64 = got.per_source.iter().map(|(_, b)| b).sum();
    assert!(per >= MB8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_sha256_fails_and_keeps_only_the_part_file() {
    let o = origin(Faults::default());
    let links = links();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.bin");
    let wrong = "00".repeat(32);
    let err = get_file(&file_url(&o, 2_000_000), &out, Some(wrong), connector(&links))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::ShaMismatch { .. }), "{err}");
    assert_eq!(err.exit_code(), 1);
    assert!(!out.exists(), "never under the final name");
    assert!(fetch::part_paths(&out).0.exists());
    // A bad hash is a usage error.
    let err = get_file(&file_url(&o, 10), &out, Some("xyz".into()), connector(&links))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let err = get_file("ftp://example.com/x", &out, None, connector(&links))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_ignoring_ranges_is_streamed_over_one_source() {
    let o = origin(Faults {
        ignore_range: true,
        ..Default::default()
    });
    let links = links();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.bin");
    let size = 3_000_000;
    let got = get_file(
        &file_url(&o, size),
        &out,
        Some(sha256_hex(size, size)),
        connector(&links),
    )
    .await
    .unwrap();
    assert!(!got.ranged);
    assert_eq!(got.sha256_ok, Some(true));
    assert_eq!(file_sha(&out), sha256_hex(size, size));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_change_mid_download_restarts_cleanly() {
    // The 4th /file request onwards sees a new entity (new ETag, body of seed + 1).
    let o = origin(Faults {
        change_etag_after: Some(4),
        ..Default::default()
    });
    let links = links();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.bin");
    let size = 6_000_000;
    let got = get_file(&file_url(&o, size), &out, None, connector(&links))
        .await
        .unwrap();
    assert!(got.restarts >= 1, "restarted: {}", got.restarts);
    assert_eq!(
        got.sha256,
        sha256_hex(size + 1, size),
        "all bytes are of the new entity"
    );
    assert_eq!(file_sha(&out), sha256_hex(size + 1, size));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_mid_body_is_retried() {
    let o = Arc::new(origin(Faults {
        reset_after_bytes: Some(300_000),
        ..Default::default()
    }));
    let links = links();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.bin");
    let size = 4_000_000;
    // The origin resets every response after 300 kB for a while, then heals.
    let healer = {
        let o = o.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            o.set_faults(Faults::default());
        })
    };
    let got = get_file(
        &file_url(&o, size),
        &out,
        Some(sha256_hex(size, size)),
        connector(&links),
    )
    .await
    .unwrap();
    healer.await.unwrap();
    assert_eq!(got.sha256_ok, Some(true));
    assert_eq!(file_sha(&out), sha256_hex(size, size));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_cut_mid_range_completes_on_the_others() {
    let o = origin(Faults::default());
    let links = links();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.bin");
    let victim = links[1].clone();
    let cutter = tokio::spawn(async move {
        while victim.bytes_down() < 1_000_000 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        victim.cut();
    });
    let got = get_file(&file_url(&o, MB8), &out, Some(sha256_hex(MB8, MB8)), connector(&links))
        .await
        .unwrap();
    cutter.await.unwrap();
    assert_eq!(got.sha256_ok, Some(true));
    assert!(!links[1].is_up());
    assert!(links[0].bytes_down() > 0 && links[2].bytes_down() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_written_in_order() {
    let o = origin(Faults::default());
    let links = links();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stream.bin");
    let w = tokio::fs::File::create(&out).await.unwrap();
    let size = 6_000_000;
    let mut req = Request::new(file_url(&o, size), Output::Stream(Box::new(w)));
    req.sha256 = Some(sha256_hex(size, size));
    let mut opts = quiet_opts();
    // A small window keeps the reorder buffer small and makes sources wait on each other.
    opts.planner.window = Some(2_000_000);
    let c: Arc<dyn fetch::Connector> = connector(&links);
    let got = fetch::download(req, c, opts).await.unwrap();
    assert_eq!(got.sha256_ok, Some(true));
    assert_eq!(file_sha(&out), sha256_hex(size, size));
    assert!(links.iter().filter(|l| l.bytes_down() > 0).count() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_nodes_proxy_with_pinned_sources() {
    let o = origin(Faults::default());
    let links = links();
    let running = run::start(
        config(),
        Extras {
            sources: links.iter().map(emulated).collect(),
            no_store: true,
        },
    )
    .await
    .unwrap();
    let c = Arc::new(ProxyConnector {
        proxy: running.proxy_addr.to_string(),
        sources: links.iter().map(|l| l.name().to_string()).collect(),
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.bin");
    let size = 4_000_000;
    let got = get_file(&file_url(&o, size), &out, Some(sha256_hex(size, size)), c)
        .await
        .unwrap();
    assert_eq!(got.sha256_ok, Some(true));
    for l in &links {
        assert!(l.bytes_down() > 0, "{} unused", l.name());
    }
    running.shutdown().await;
}

/// A TLS server with a self-signed certificate for 127.0.0.1 that relays to `to`.
async fn tls_front(to: SocketAddr, dir: &Path) -> (SocketAddr, std::path::PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let pem = dir.join("ca.pem");
    std::fs::write(&pem, cert.cert.pem()).unwrap();
    let der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    (addr, pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca() {
    let o = origin(Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let (tls_addr, pem) = tls_front(o.local_addr(), dir.path()).await;
    let links = links();
    let out = dir.path().join("f.bin");
    let size = 3_000_000;
    let url = format!("https://{tls_addr}/file/{size}");
    let mut opts = quiet_opts();
    opts.tls = Some(fetch::tls_config(Some(&pem)).unwrap());
    let mut req = Request::new(url.clone(), Output::File(out.clone()));
    req.sha256 = Some(sha256_hex(size, size));
    let c: Arc<dyn fetch::Connector> = connector(&links);
    let got = fetch::download(req, c.clone(), opts).await.unwrap();
    assert_eq!(got.sha256_ok, Some(true));
    // Without the CA the certificate is refused.
    let err = get_file(&url, &dir.path().join("g.bin"), None, c).await.unwrap_err();
    assert!(
        err.to_string().contains("certificate") || err.to_string().contains("TLS"),
        "{err}"
    );
}

// ---- the real binary over `lo` (root: SO_BINDTODEVICE) ----

fn root() -> bool {
    if !lab::netns::is_root() {
        eprintln!("skipped: needs root (SO_BINDTODEVICE on lo)");
        return false;
    }
    true
}

fn booster() -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_booster"));
    c.kill_on_drop(true).stdin(Stdio::null());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_usage_errors_exit_2() {
    let out = booster().args(["get", "ftp://example.com/x"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let out = booster()
        .args(["get", "http://127.0.0.1:9/x", "--sha256", "abc"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_downloads_streams_and_checks_over_lo() {
    if !root() {
        return;
    }
    let o = origin(Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let size = 3_000_000u64;
    let url = file_url(&o, size);
    let want = sha256_hex(size, size);
    // To a file, hash checked.
    let f = dir.path().join("a.bin");
    let out = booster()
        .args([
            "get",
            &url,
            "--iface",
            "lo",
            "-o",
            f.to_str().unwrap(),
            "--sha256",
            &want,
        ])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("sha256 matched"), "{stderr}");
    assert_eq!(file_sha(&f), want);
    // To stdout, in order.
    let out = booster()
        .args(["get", &url, "--iface", "lo", "-o", "-"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.len() as u64, size);
    assert_eq!(hex::encode(Sha256::digest(&out.stdout)), want);
    // A wrong hash: exit 1, no final file.
    let g = dir.path().join("b.bin");
    let out = booster()
        .args([
            "get",
            &url,
            "--iface",
            "lo",
            "-o",
            g.to_str().unwrap(),
            "--sha256",
            &"ab".repeat(32),
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!g.exists());
    assert!(fetch::part_paths(&g).0.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_https_with_cacert_over_lo() {
    if !root() {
        return;
    }
    let o = origin(Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let (tls_addr, pem) = tls_front(o.local_addr(), dir.path()).await;
    let size = 2_000_000u64;
    let f = dir.path().join("t.bin");
    let out = booster()
        .args([
            "get",
            &format!("https://{tls_addr}/file/{size}"),
            "--iface",
            "lo",
            "--cacert",
            pem.to_str().unwrap(),
            "-o",
            f.to_str().unwrap(),
            "--sha256",
            &sha256_hex(size, size),
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(file_sha(&f), sha256_hex(size, size));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_resumes_after_kill_9() {
    if !root() {
        return;
    }
    // Slow enough to be killed midway: 16 Mbit/s per response.
    let o = origin(Faults {
        rate_limit_bps: Some(16_000_000),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let size = MB8;
    let url = file_url(&o, size);
    let f = dir.path().join("r.bin");
    let mut child = booster()
        .args(["get", &url, "--iface", "lo", "-o", f.to_str().unwrap()])
        .spawn()
        .unwrap();
    let started = Instant::now();
    // Wait for a good part of the file and at least one state save.
    while o.bytes_sent() < 3_000_000 || started.elapsed() < Duration::from_millis(1500) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "first run made no progress"
        );
        if child.try_wait().unwrap().is_some() {
            panic!("first run ended before it was killed");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    let first = o.bytes_sent();
    assert!(fetch::part_paths(&f).0.exists() && fetch::part_paths(&f).1.exists());
    assert!(!f.exists());
    o.set_faults(Faults::default());
    let out = booster()
        .args([
            "get",
            &url,
            "--iface",
            "lo",
            "-o",
            f.to_str().unwrap(),
            "--sha256",
            &sha256_hex(size, size),
        ])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("resuming"), "{stderr}");
    let second = o.bytes_sent() - first;
    assert!(second < size, "second run fetched {second} of {size} bytes");
    assert_eq!(file_sha(&f), sha256_hex(size, size));
}

/// Not a pass/fail test: prints booster get's rate against the measured link sum (each link
/// alone, all at once, one plain GET each). `cargo test --release --test get -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_vs_link_sum() {
    let o = origin(Faults::default());
    let size = 24_000_000u64;
    let links = links();
    let alone = futures::future::join_all(links.iter().map(|l| {
        let (l, addr) = (l.clone(), o.local_addr());
        async move {
            let t = Instant::now();
            let s = l.connect(addr).await.unwrap();
            let n = booster::client::get_count(s, &addr.to_string(), &format!("/file/{}", size / 2), None)
                .await
                .unwrap();
            n as f64 / t.elapsed().as_secs_f64()
        }
    }))
    .await;
    let sum: f64 = alone.iter().sum();
    let dir = tempfile::tempdir().unwrap();
    let links = self::links();
    let got = get_file(&file_url(&o, size), &dir.path().join("f"), None, connector(&links))
        .await
        .unwrap();
    let rate = size as f64 / got.elapsed.as_secs_f64();
    eprintln!(
        "link sum {:.2} MB/s (each alone: {}); booster get {:.2} MB/s = {:.0}% of the link sum",
        sum / 1e6,
        alone
            .iter()
            .map(|r| format!("{:.2}", r / 1e6))
            .collect::<Vec<_>>()
            .join(", "),
        rate / 1e6,
        rate / sum * 100.0
    );
}
