//! Transparent splitting in the HTTP proxy: a node whose sources are three emulated uplinks
//! (in-process, no root), our origin, and curl as the client.

mod common;

use booster::run::Running;
use common::{curl, sha256};
use lab::{
    emulink::EmuLink,
    origin::{body_bytes, sha256_hex, Faults, Origin},
};
use std::time::Instant;

const MB12: u64 = 12_000_000;
const MB9: u64 = 9_000_000;

fn links() -> Vec<EmuLink> {
    common::emu_links()
}

/// A node on loopback whose only sources are `links`, with extra TOML config.
async fn node(toml: &str, links: &[EmuLink]) -> Running {
    common::emulated_node(toml, links).await
}

fn origin(faults: Faults) -> Origin {
    common::origin_with(faults)
}

fn url(o: &Origin, size: u64) -> String {
    common::file_url(o, size)
}

/// `curl -x proxy args...`: (exit code, body, stderr, seconds).
async fn via(r: &Running, args: &[&str]) -> (i32, Vec<u8>, String, f64) {
    let mut a = vec!["-x".to_string(), format!("http://{}", r.proxy_addr)];
    a.extend(args.iter().map(|s| s.to_string()));
    let t = Instant::now();
    let (code, out, err) = curl(a).await;
    (code, out, err, t.elapsed().as_secs_f64())
}

/// Links that carried more than `min` bytes down.
fn carriers(links: &[EmuLink], min: u64) -> usize {
    links.iter().filter(|l| l.bytes_down() > min).count()
}

fn per_link(links: &[EmuLink]) -> String {
    common::per_link(links)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_get_is_split_over_every_link_and_is_exact() {
    let o = origin(Faults::default());
    let links = links();
    let r = node("", &links).await;
    let (code, body, err, secs) = via(&r, &[&url(&o, MB12)]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(body.len() as u64, MB12);
    assert_eq!(sha256(&body), sha256_hex(MB12, MB12));
    eprintln!(
        "split: {MB12} bytes in {secs:.2} s = {:.2} MB/s; per link: {}",
        MB12 as f64 / secs / 1e6,
        per_link(&links)
    );
    for l in &links {
        assert!(
            l.bytes_down() > 1_000_000,
            "{} carried only {} bytes",
            l.name(),
            l.bytes_down()
        );
    }
    assert_eq!(counts(&r), (1, [0, 0, 0]), "one split, no steal");
    r.shutdown().await;

    // The same download with splitting off, for comparison.
    let links = crate::links();
    let r = node("[split]\nenabled = false\n", &links).await;
    let (code, body, err, secs) = via(&r, &[&url(&o, MB12)]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(sha256(&body), sha256_hex(MB12, MB12));
    eprintln!(
        "not split: {MB12} bytes in {secs:.2} s = {:.2} MB/s; per link: {}",
        MB12 as f64 / secs / 1e6,
        per_link(&links)
    );
    assert_eq!(carriers(&links, 500_000), 1, "{}", per_link(&links));
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_are_not_split_and_are_exact() {
    let o = origin(Faults::default());
    let links = links();
    let r = node("", &links).await;
    for size in [0u64, 1, 1000, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3_000_000] {
        let (code, body, err, _) = via(&r, &["-D", "-", &url(&o, size)]).await;
        assert_eq!(code, 0, "{size}: {err}");
        let head_end = body.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
        let head = String::from_utf8_lossy(&body[..head_end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{size}: {head}");
        assert!(!head.contains("content-range"), "{size}: {head}");
        assert!(head.contains(&format!("content-length: {size}\r\n")), "{size}: {head}");
        assert_eq!(sha256(&body[head_end..]), sha256_hex(size, size), "{size}");
    }
    assert_eq!(carriers(&links, 1_500_000), 1, "{}", per_link(&links));
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_ignoring_ranges_is_forwarded_as_is() {
    let o = origin(Faults {
        ignore_range: true,
        ..Default::default()
    });
    let links = links();
    let r = node("", &links).await;
    let (code, body, err, _) = via(&r, &[&url(&o, MB9)]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(sha256(&body), sha256_hex(MB9, MB9));
    assert_eq!(carriers(&links, 500_000), 1, "{}", per_link(&links));
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_range_gets_the_servers_206() {
    let o = origin(Faults::default());
    let links = links();
    let r = node("", &links).await;
    let (code, body, err, _) = via(&r, &["-D", "-", "-r", "1000-1999", &url(&o, MB12)]).await;
    assert_eq!(code, 0, "{err}");
    let head_end = body.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let head = String::from_utf8_lossy(&body[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 206"), "{head}");
    assert!(
        head.contains(&format!("content-range: bytes 1000-1999/{MB12}")),
        "{head}"
    );
    let mut want = Vec::new();
    body_bytes(MB12, 1000, 1000, &mut want);
    assert_eq!(&body[head_end..], &want[..]);
    assert_eq!(carriers(&links, 100_000), 0, "{}", per_link(&links));
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_a_disabled_split_are_not_split() {
    let o = origin(Faults::default());
    let links = links();
    let r = node("", &links).await;
    for h in ["Authorization: Bearer x", "Cookie: a=b"] {
        let before: Vec<u64> = links.iter().map(|l| l.bytes_down()).collect();
        let (code, body, err, _) = via(&r, &["-H", h, &url(&o, MB9)]).await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(sha256(&body), sha256_hex(MB9, MB9));
        let used = links
            .iter()
            .zip(&before)
            .filter(|(l, b)| l.bytes_down() - **b > 500_000)
            .count();
        assert_eq!(used, 1, "{h}: {}", per_link(&links));
    }
    r.shutdown().await;

    // Allowed by config: split.
    let links = crate::links();
    let r = node("[split]\ncredentials = true\n", &links).await;
    let (code, body, err, _) = via(&r, &["-H", "Authorization: Bearer x", &url(&o, MB9)]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(sha256(&body), sha256_hex(MB9, MB9));
    assert!(carriers(&links, 500_000) >= 2, "{}", per_link(&links));
    r.shutdown().await;

    let links = crate::links();
    let r = node("[split]\nenabled = false\n", &links).await;
    let (code, body, err, _) = via(&r, &[&url(&o, MB9)]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(sha256(&body), sha256_hex(MB9, MB9));
    assert_eq!(carriers(&links, 500_000), 1, "{}", per_link(&links));
    r.shutdown().await;

    // A MIME filter that does not match the origin's application/octet-stream.
    let links = crate::links();
    let r = node("[split]\nmime = [\"video/\"]\n", &links).await;
    let (code, body, err, _) = via(&r, &[&url(&o, MB9)]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(sha256(&body), sha256_hex(MB9, MB9));
    assert_eq!(carriers(&links, 500_000), 1, "{}", per_link(&links));
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_mid_body_are_retried_and_the_bytes_are_exact() {
    let o = origin(Faults {
        reset_after_bytes: Some(2_000_000),
        ..Default::default()
    });
    let links = links();
    let r = node("", &links).await;
    let (code, body, err, _) = via(&r, &[&url(&o, MB12)]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(body.len() as u64, MB12);
    assert_eq!(sha256(&body), sha256_hex(MB12, MB12));
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_split_requests_on_one_kept_alive_connection() {
    let o = origin(Faults::default());
    let links = links();
    let r = node("", &links).await;
    let (code, body, err, _) = via(&r, &["-v", &url(&o, MB9), &url(&o, MB12)]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Re-using existing connection"), "{err}");
    let mut want = Vec::new();
    body_bytes(MB9, 0, MB9 as usize, &mut want);
    body_bytes(MB12, 0, MB12 as usize, &mut want);
    assert_eq!(body.len(), want.len());
    assert!(body == want, "the bodies differ");
    assert!(carriers(&links, 1_000_000) >= 2, "{}", per_link(&links));
    r.shutdown().await;
}

/// A listener on port 80 of a loopback address of its own (so tests do not collide), or `None`
/// when port 80 cannot be bound here (not root, or taken): the test is then skipped.
fn port80(last: u8) -> Option<std::net::TcpListener> {
    match std::net::TcpListener::bind(("127.0.80.".to_string() + &last.to_string(), 80)) {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!("skipped: cannot bind 127.0.80.{last}:80: {e}");
            None
        }
    }
}

/// `curl -x <scheme>://node args...`.
async fn via_socks(r: &Running, scheme: &str, args: &[&str]) -> (i32, Vec<u8>, String) {
    let mut a = vec!["-x".to_string(), format!("{scheme}://{}", r.proxy_addr)];
    a.extend(args.iter().map(|s| s.to_string()));
    curl(a).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_get_in_a_socks_tunnel_to_port_80_is_split_and_exact() {
    let Some(l) = port80(1) else { return };
    let o = Origin::serve(l, Faults::default()).unwrap();
    let ip = o.local_addr().ip();
    // socks5h with the address in the URL; socks5 with a name only the client knows (curl
    // resolves it and sends the address), so the node must dial the tunnel's target, never the
    // Host header's name.
    let plain = format!("http://{ip}/file/{MB12}");
    let named = format!("http://split.invalid/file/{MB12}");
    let resolve = format!("split.invalid:80:{ip}");
    for (scheme, args) in [
        ("socks5h", vec![plain.as_str()]),
        ("socks5", vec!["--resolve", resolve.as_str(), named.as_str()]),
    ] {
        let links = links();
        let r = node("", &links).await;
        let (code, body, err) = via_socks(&r, scheme, &args).await;
        assert_eq!(code, 0, "{scheme}: {err}");
        assert_eq!(body.len() as u64, MB12, "{scheme}");
        assert_eq!(sha256(&body), sha256_hex(MB12, MB12), "{scheme}");
        for l in &links {
            assert!(l.bytes_down() > 1_000_000, "{scheme}: {}", per_link(&links));
        }
        r.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_split_requests_and_a_small_one_on_one_socks_tunnel() {
    let Some(l) = port80(2) else { return };
    let o = Origin::serve(l, Faults::default()).unwrap();
    let ip = o.local_addr().ip();
    let links = links();
    let r = node("", &links).await;
    let u = |size: u64| format!("http://{ip}/file/{size}");
    let (a, b, c) = (u(MB9), u(1000), u(MB12));
    let (code, body, err) = via_socks(&r, "socks5h", &["-v", &a, &b, &c]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches("Re-using existing connection").count(), 2, "{err}");
    let mut want = Vec::new();
    body_bytes(MB9, 0, MB9 as usize, &mut want);
    body_bytes(1000, 0, 1000, &mut want);
    body_bytes(MB12, 0, MB12 as usize, &mut want);
    assert_eq!(body.len(), want.len());
    assert!(body == want, "the bodies differ");
    assert!(carriers(&links, 1_000_000) >= 2, "{}", per_link(&links));
    r.shutdown().await;
}

/// SOCKS5 CONNECT to `to` (IPv4) without auth: the tunnel, after the success reply.
async fn socks_connect(r: &Running, to: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let std::net::SocketAddr::V4(v4) = to else {
        panic!("IPv4 only")
    };
    let mut s = tokio::net::TcpStream::connect(r.proxy_addr).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut sel = [0u8; 2];
    s.read_exact(&mut sel).await.unwrap();
    assert_eq!(sel, [5, 0]);
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&v4.ip().octets());
    req.extend_from_slice(&v4.port().to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut rep = [0u8; 4];
    s.read_exact(&mut rep).await.unwrap();
    assert_eq!(rep[1], 0, "SOCKS5 reply {rep:?}");
    let rest = match rep[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        other => panic!("bound address type {other}"),
    };
    let mut skip = vec![0u8; rest];
    s.read_exact(&mut skip).await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_protocols_on_port_80_through_socks_are_relayed_untouched() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (Some(echo), Some(banner)) = (port80(3), port80(4)) else {
        return;
    };
    let (echo_addr, banner_addr) = (echo.local_addr().unwrap(), banner.local_addr().unwrap());
    // An echo server, and one that greets first and then echoes.
    for (l, greeting) in [(echo, &b""[..]), (banner, &b"220 hello from the server\r\n"[..])] {
        l.set_nonblocking(true).unwrap();
        let l = tokio::net::TcpListener::from_std(l).unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else { return };
                tokio::spawn(async move {
                    if s.write_all(greeting).await.is_err() {
                        return;
                    }
                    let (mut rd, mut wr) = s.split();
                    let _ = tokio::io::copy(&mut rd, &mut wr).await;
                });
            }
        });
    }
    let links = links();
    let r = node("", &links).await;

    // Bytes that are not HTTP, some that start like it, and a head that is not a GET: each on
    // its own tunnel, echoed back exactly, then more on the same tunnel.
    let cases: [&[u8]; 5] = [
        b"\x16\x03\x01\x00\x05hello",
        b"HELO there\r\n",
        b"GE",
        b"GET /x HTTP/1.1\r\nHost: a\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
    ];
    for sent in cases {
        let mut s = socks_connect(&r, echo_addr).await;
        s.write_all(sent).await.unwrap();
        let mut got = vec![0u8; sent.len()];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(got, sent, "{}", String::from_utf8_lossy(sent));
        s.write_all(b"\x00more\xff").await.unwrap();
        let mut got = [0u8; 6];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x00more\xff");
    }

    // The server speaks first; the client says nothing until it has read the greeting.
    let mut s = socks_connect(&r, banner_addr).await;
    let mut got = vec![0u8; 27];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"220 hello from the server\r\n");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut got = vec![0u8; 27];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    r.shutdown().await;
}

const MB20: u64 = 20_000_000;

/// Downloads split, and steals finished, outrun and failed, as the node counts them.
fn counts(r: &Running) -> (u64, [u64; 3]) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &r.node.steals;
    (
        r.node.splits_total.load(Relaxed),
        [s.finished.load(Relaxed), s.outrun.load(Relaxed), s.failed.load(Relaxed)],
    )
}

/// A client opening connection after connection (each closed at once), until dropped: the node
/// sees a burst all along, so a large GET meanwhile is forwarded whole rather than split (the
/// case of a client starting many downloads). All along, not once before the request: a burst
/// is "more than three accepts within 500 ms", and a loaded machine may take longer than that
/// to start curl.
struct Burst(tokio::task::JoinHandle<()>);

impl Drop for Burst {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn burst(r: &Running) -> Burst {
    let proxy = r.proxy_addr;
    let mut every = tokio::time::interval(std::time::Duration::from_millis(20));
    // The first few before the request goes out.
    for _ in 0..4 {
        every.tick().await;
        drop(tokio::net::TcpStream::connect(proxy).await.unwrap());
    }
    Burst(tokio::spawn(async move {
        loop {
            every.tick().await;
            if let Ok(s) = tokio::net::TcpStream::connect(proxy).await {
                drop(s);
            }
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_download_has_its_end_stolen_by_an_idle_link_and_is_exact() {
    let o = origin(Faults::default());
    let links = links();
    let r = node("", &links).await;
    let b = burst(&r).await;
    let (code, body, err, secs) = via(&r, &[&url(&o, MB20)]).await;
    drop(b);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body.len() as u64, MB20);
    assert_eq!(sha256(&body), sha256_hex(MB20, MB20));
    eprintln!(
        "stolen end: {MB20} bytes in {secs:.2} s; per link: {}",
        per_link(&links)
    );
    // Forwarded whole (no split: only one link would carry it), and an idle link took the end.
    assert!(carriers(&links, 2_000_000) >= 2, "{}", per_link(&links));
    let (split, steals) = counts(&r);
    assert_eq!(split, 0, "a burst is not split");
    assert_eq!(steals[0] + steals[1], 1, "finished, outrun, failed: {steals:?}");
    r.shutdown().await;

    // The same through a SOCKS5 tunnel to port 80 (the gateway's way in).
    let Some(l) = port80(5) else { return };
    let o = Origin::serve(l, Faults::default()).unwrap();
    let links = crate::links();
    let r = node("", &links).await;
    let b = burst(&r).await;
    let u = format!("http://{}/file/{MB20}", o.local_addr().ip());
    let (code, body, err) = via_socks(&r, "socks5h", &[&u]).await;
    drop(b);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sha256(&body), sha256_hex(MB20, MB20));
    assert!(carriers(&links, 2_000_000) >= 2, "socks: {}", per_link(&links));
    r.shutdown().await;
}

/// A 20 MB download in a burst from an origin with `faults`, whose steal the server refuses:
/// the original connection still delivers it exactly, and the node counts one failed steal.
async fn refused_steal(faults: Faults) {
    let o = origin(faults);
    let links = links();
    let r = node("", &links).await;
    let b = burst(&r).await;
    let (code, body, err, _) = via(&r, &[&url(&o, MB20)]).await;
    drop(b);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sha256(&body), sha256_hex(MB20, MB20));
    assert_eq!(counts(&r).1, [0, 0, 1], "the steal was tried and failed");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steal_the_server_refuses_leaves_the_original_to_finish_exactly() {
    // No ranges at all: the thief's range request gets a 200 of the whole entity.
    refused_steal(Faults {
        ignore_range: true,
        ..Default::default()
    })
    .await;
    // The entity changes under the thief: its If-Range gets the new one, never mixed in.
    refused_steal(Faults {
        change_etag_after: Some(1),
        ..Default::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_pauses_longer_than_the_idle_timeout_still_gets_the_whole_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A body forwarded whole with a chance of a steal: the idle timeout is about the upstream
    // going quiet, not the client pausing (a paused video player), which holds the forwarder
    // in a write for as long as it likes.
    let o = origin(Faults::default());
    let links = links();
    let r = node("idle_timeout = \"2s\"\n", &links).await;
    let b = burst(&r).await;
    let mut c = tokio::net::TcpStream::connect(r.proxy_addr).await.unwrap();
    let host = o.local_addr();
    c.write_all(format!("GET http://{host}/file/{MB9} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < 1_000_000 {
        let n = c.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    drop(b);
    // Three idle timeouts without reading: the node's writes to us block all along.
    let head = got.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    while ((got.len() - head) as u64) < MB9 {
        let n = c.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got[..head])
    );
    assert_eq!((got.len() - head) as u64, MB9, "the body was cut short");
    assert_eq!(sha256(&got[head..]), sha256_hex(MB9, MB9));
    r.shutdown().await;
}
