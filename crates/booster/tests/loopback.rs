//! The whole node on loopback, driven by independent clients: curl (SOCKS5, HTTP proxy,
//! CONNECT), the tokio-socks crate (CONNECT) and the fast-socks5 crate (UDP ASSOCIATE).

mod common;

use common::*;
use std::{net::SocketAddr, time::Duration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn curl_through_socks5_and_http_gets_the_exact_bytes() {
    let origin = origin();
    let node = node_with("").await;
    let url = format!("http://{}/file/3MB", origin.local_addr());
    let want = lab::origin::sha256_hex(3_000_000, 3_000_000);

    for proxy in [
        format!("socks5h://{}", node.proxy),
        format!("socks5://{}", node.proxy),
        format!("http://{}", node.proxy),
    ] {
        let (code, body, err) = curl(vec!["-x".into(), proxy.clone(), url.clone()]).await;
        assert_eq!(code, 0, "{proxy}: {err}");
        assert_eq!(sha256(&body), want, "{proxy}");
    }
    // HTTP CONNECT tunnel.
    let (code, body, err) = curl(vec![
        "-p".into(),
        "-x".into(),
        format!("http://{}", node.proxy),
        url.clone(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(sha256(&body), want);
    // A domain target, resolved by the node through its nameserver.
    let url = format!("http://origin.test.booster:{}/file/100kB", origin.local_addr().port());
    let (code, body, err) = curl(vec!["-x".into(), format!("socks5h://{}", node.proxy), url]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(body.len(), 100_000);

    let lo = node.node().source("lo").unwrap();
    assert!(
        lo.rx.load(std::sync::atomic::Ordering::Relaxed) >= 4 * 3_000_000,
        "bytes are counted against the uplink"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn http_keep_alive_reuses_both_connections() {
    let origin = origin();
    let node = node_with("").await;
    let a = format!("http://{}/file/1000", origin.local_addr());
    let b = format!("http://{}/file/2000", origin.local_addr());
    let (code, body, err) = curl(vec!["-v".into(), "-x".into(), format!("http://{}", node.proxy), a, b]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(body.len(), 3000);
    assert!(
        err.contains("Re-using existing connection") || err.contains("Reusing existing"),
        "client connection was not kept alive:\n{err}"
    );
    assert_eq!(node.node().clients_total.load(std::sync::atomic::Ordering::Relaxed), 1);
    node.shutdown().await;
}

#[tokio::test]
async fn tokio_socks_connects_to_ipv4_ipv6_and_names() {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = echo.local_addr().unwrap().port();
    let echo6 = tokio::net::TcpListener::bind("[::1]:0").await.ok();
    for l in std::iter::once(echo).chain(echo6.into_iter()) {
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
    }
    let node = node_with("").await;
    let mut targets = vec![format!("127.0.0.1:{port}"), format!("localhost:{port}")];
    if let Ok(l6) = std::net::TcpListener::bind("[::1]:0") {
        drop(l6);
    }
    for t in targets.drain(..) {
        let mut s = tokio_socks::tcp::Socks5Stream::connect(node.proxy, t.as_str())
            .await
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    }
    node.shutdown().await;
}

#[tokio::test]
async fn ipv6_target_through_socks5() {
    let Ok(l) = tokio::net::TcpListener::bind("[::1]:0").await else {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    };
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(b"v6 ok").await.unwrap();
    });
    let node = node_with("").await;
    let mut s = tokio_socks::tcp::Socks5Stream::connect(node.proxy, addr).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    assert_eq!(buf, b"v6 ok");
    node.shutdown().await;
}

#[tokio::test]
async fn udp_associate_relays_datagrams_both_ways() {
    let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            server.send_to(&reply, from).await.unwrap();
        }
    });
    let node = node_with("").await;
    let backing = tokio::net::TcpStream::connect(node.proxy).await.unwrap();
    let dgram = fast_socks5::client::Socks5Datagram::bind(backing, "127.0.0.1:0")
        .await
        .expect("UDP ASSOCIATE accepted");
    for i in 0..3 {
        let msg = format!("hello {i}");
        dgram.send_to(msg.as_bytes(), server_addr).await.unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = tokio::time::timeout(Duration::from_secs(10), dgram.recv_from(&mut buf))
            .await
            .expect("reply arrives")
            .unwrap();
        assert_eq!(&buf[..n], format!("echo:{msg}").as_bytes());
        assert_eq!(from.to_string(), server_addr.to_string());
    }
    node.shutdown().await;
}

/// Sends raw bytes, returns everything the node answers until it closes.
async fn raw(proxy: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("the node answers and closes");
    out
}

#[tokio::test]
async fn socks5_errors_get_precise_reply_codes() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let node = node_with("[[policy]]\nkind = \"block\"\nhosts = [\"blocked.example\"]\n").await;
    let p = closed.port().to_be_bytes();
    // CONNECT to a closed port: connection refused (5).
    let r = raw(node.proxy, &[5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, p[0], p[1]]).await;
    assert_eq!(&r[..2], &[5, 0]);
    assert_eq!(r[3], 5, "reply {r:?}");
    // BIND: command not supported (7).
    let r = raw(node.proxy, &[5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80]).await;
    assert_eq!(r[3], 7, "reply {r:?}");
    // Unknown address type: address type not supported (8).
    let r = raw(node.proxy, &[5, 1, 0, 5, 1, 0, 9, 127, 0, 0, 1, 0, 80]).await;
    assert_eq!(r[3], 8, "reply {r:?}");
    // Blocked by policy: not allowed (2).
    let mut req = vec![5, 1, 0, 5, 1, 0, 3, 15];
    req.extend_from_slice(b"blocked.example");
    req.extend_from_slice(&[0, 80]);
    let r = raw(node.proxy, &req).await;
    assert_eq!(r[3], 2, "reply {r:?}");
    // A name that does not resolve: host unreachable (4).
    let mut req = vec![5, 1, 0, 5, 1, 0, 3, 21];
    req.extend_from_slice(b"nonexistent.invalid.x");
    req.extend_from_slice(&[0, 80]);
    let r = raw(node.proxy, &req).await;
    assert_eq!(r[3], 4, "reply {r:?}");
    // No acceptable method (only GSSAPI offered).
    let r = raw(node.proxy, &[5, 1, 1]).await;
    assert_eq!(r, [5, 0xff]);
    node.shutdown().await;
}

#[tokio::test]
async fn http_errors_get_precise_statuses() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let node = node_with("[[policy]]\nkind = \"block\"\nhosts = [\"blocked.example\"]\n").await;
    let status = |r: Vec<u8>| String::from_utf8_lossy(&r).lines().next().unwrap_or("").to_string();
    let r = raw(
        node.proxy,
        format!("CONNECT {closed} HTTP/1.1\r\nHost: {closed}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(status(r.clone()).starts_with("HTTP/1.1 502"), "{}", status(r));
    let r = raw(
        node.proxy,
        b"GET http://blocked.example/ HTTP/1.1\r\nHost: blocked.example\r\n\r\n",
    )
    .await;
    assert!(status(r.clone()).starts_with("HTTP/1.1 403"), "{}", status(r));
    let r = raw(node.proxy, b"GET /not-a-proxy-request HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(status(r.clone()).starts_with("HTTP/1.1 400"), "{}", status(r));
    let r = raw(node.proxy, b"GARBAGE\x01\x02 nonsense\r\n\r\n").await;
    assert!(status(r.clone()).starts_with("HTTP/1.1 400"), "{}", status(r));
    let mut big = b"GET http://127.0.0.1/ HTTP/1.1\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 64 * 1024));
    let r = raw(node.proxy, &big).await;
    assert!(status(r.clone()).starts_with("HTTP/1.1 431"), "{}", status(r));
    // Not SOCKS5, not HTTP: closed without a word.
    assert!(raw(node.proxy, &[0x16, 3, 1, 0, 5]).await.is_empty());
    node.shutdown().await;
}

#[tokio::test]
async fn silent_clients_time_out() {
    let node = node_with("handshake_timeout = \"300ms\"\n").await;
    // No byte at all, then half a SOCKS greeting, then half an HTTP head: each is closed.
    for bytes in [&b""[..], &[5, 2][..], &b"GET http://x/ HTTP/1.1\r\n"[..]] {
        let r = raw(node.proxy, bytes).await;
        if bytes.starts_with(b"GET") {
            assert!(String::from_utf8_lossy(&r).starts_with("HTTP/1.1 408"));
        }
    }
    node.shutdown().await;
}

#[tokio::test]
async fn auth_is_required_when_configured() {
    let origin = origin();
    let node = node_with("[auth]\nusername = \"alice\"\npassword = \"s3cret\"\n").await;
    let url = format!("http://{}/file/1000", origin.local_addr());
    let (code, body, err) = curl(vec![
        "-x".into(),
        format!("socks5h://alice:s3cret@{}", node.proxy),
        url.clone(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(body.len(), 1000);
    let (code, _, _) = curl(vec![
        "-x".into(),
        format!("socks5h://alice:wrong@{}", node.proxy),
        url.clone(),
    ])
    .await;
    assert_ne!(code, 0, "a wrong password must fail");
    let (code, _, _) = curl(vec!["-x".into(), format!("socks5h://{}", node.proxy), url.clone()]).await;
    assert_ne!(code, 0, "no credentials must fail");
    let (code, body, err) = curl(vec![
        "-x".into(),
        format!("http://alice:s3cret@{}", node.proxy),
        url.clone(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(body.len(), 1000);
    let (_, body, _) = curl(vec![
        "-i".into(),
        "-x".into(),
        format!("http://{}", node.proxy),
        url.clone(),
    ])
    .await;
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("HTTP/1.1 407"), "{text}");
    assert!(text.contains("Proxy-Authenticate: Basic"), "{text}");
    node.shutdown().await;
}

#[tokio::test]
async fn a_missing_uplink_is_an_error_not_a_fallback() {
    let origin = origin();
    // The only uplink does not exist: the node must refuse, never use the default route.
    let node = node_with_ifaces("", &["bt-nope0"]).await;
    let url = format!("http://{}/file/1000", origin.local_addr());
    let (code, _, err) = curl(vec!["-x".into(), format!("socks5h://{}", node.proxy), url]).await;
    assert_ne!(code, 0, "{err}");
    assert_eq!(origin.requests(), 0, "nothing reached the origin");
    node.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_open_connections() {
    let origin = origin();
    let node = node_with("drain_timeout = \"20s\"\n").await;
    // A slow download in flight when shutdown starts must still complete.
    origin.set_faults(lab::origin::Faults {
        rate_limit_bps: Some(8_000_000),
        ..Default::default()
    });
    let url = format!("http://{}/file/1MB", origin.local_addr());
    let proxy = format!("socks5h://{}", node.proxy);
    let dl = tokio::spawn(curl(vec!["-x".into(), proxy, url]));
    while node.node().clients_open.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cut = node.shutdown().await;
    assert_eq!(cut, 0);
    let (code, body, err) = dl.await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(body.len(), 1_000_000);
}

#[tokio::test]
async fn an_address_block_cannot_be_bypassed_by_name() {
    let origin = origin();
    let node = node_with("[[policy]]\nkind = \"block\"\nhosts = [\"127.0.0.0/8\"]\n").await;
    // origin.test.booster resolves to 127.0.0.1 (our test nameserver): refused after DNS.
    let url = format!("http://origin.test.booster:{}/file/1000", origin.local_addr().port());
    let (code, _, err) = curl(vec!["-x".into(), format!("socks5h://{}", node.proxy), url.clone()]).await;
    assert_ne!(code, 0, "{err}");
    let (_, body, _) = curl(vec!["-i".into(), "-x".into(), format!("http://{}", node.proxy), url]).await;
    assert!(
        String::from_utf8_lossy(&body).starts_with("HTTP/1.1 403"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(origin.requests(), 0);
    node.shutdown().await;
}

#[tokio::test]
async fn request_bodies_early_answers_and_bad_chunks() {
    let origin = origin();
    let node = node_with("").await;
    // A 300 kB POST with `Expect: 100-continue` (curl adds it) to a server that answers
    // without reading the body: the client still gets the server's status.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, vec![b'x'; 300_000]).unwrap();
    let url = format!("http://{}/no-such-path", origin.local_addr());
    let (code, out, err) = curl(vec![
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code}".into(),
        "--data-binary".into(),
        format!("@{}", file.display()),
        "-x".into(),
        format!("http://{}", node.proxy),
        url,
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(String::from_utf8_lossy(&out), "404");
    // A malformed chunked request body: 400.
    let r = raw(
        node.proxy,
        format!(
            "POST http://{}/file/10 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            origin.local_addr()
        )
        .as_bytes(),
    )
    .await;
    assert!(
        String::from_utf8_lossy(&r).starts_with("HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    node.shutdown().await;
}

#[tokio::test]
async fn a_pinned_request_uses_only_that_source() {
    let origin = origin();
    let node = node_with("").await;
    let url = format!("http://{}/file/1000", origin.local_addr());
    let proxy = format!("http://{}", node.proxy);
    let (code, body, err) = curl(vec![
        "-x".into(),
        proxy.clone(),
        "-H".into(),
        "X-Booster-Source: lo".into(),
        url.clone(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(body.len(), 1000);
    let (_, body, _) = curl(vec![
        "-i".into(),
        "-x".into(),
        proxy.clone(),
        "-H".into(),
        "X-Booster-Source: nope".into(),
        url.clone(),
    ])
    .await;
    assert!(
        String::from_utf8_lossy(&body).starts_with("HTTP/1.1 503"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (_, body, _) = curl(vec![
        "-i".into(),
        "-p".into(),
        "-x".into(),
        proxy,
        "--proxy-header".into(),
        "X-Booster-Source: nope".into(),
        url,
    ])
    .await;
    assert!(
        String::from_utf8_lossy(&body).contains("503"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    node.shutdown().await;
}
