//! The origin over real loopback sockets: hyper as a client, a raw socket where the wire
//! matters (resets, close-delimited bodies), and curl as an independent client.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use lab::origin::{body_bytes, sha256_hex, Faults, Origin};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::task::AbortOnDropHandle;

fn start(faults: Faults) -> Origin {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    Origin::serve(listener, faults).unwrap()
}

fn body(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    body_bytes(seed, offset, len, &mut v);
    v
}

/// One keep-alive HTTP/1.1 connection, driven by hyper's client.
struct Client {
    sender: SendRequest<Empty<Bytes>>,
    _conn: AbortOnDropHandle<()>,
}

struct Reply {
    status: u16,
    version: http::Version,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    /// Set when the body ended with an error; `body` then holds what arrived before it.
    error: Option<hyper::Error>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Client {
            sender,
            _conn: AbortOnDropHandle::new(conn),
        }
    }

    async fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "origin");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.sender.ready().await.unwrap();
        let resp = self.sender.send_request(req.body(Empty::new()).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let version = resp.version();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string()))
            .collect();
        let mut incoming = resp.into_body();
        let mut body = Vec::new();
        let mut error = None;
        while let Some(frame) = incoming.frame().await {
            match frame {
                Ok(f) => body.extend_from_slice(f.data_ref().map_or(&[][..], |d| &d[..])),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        Reply {
            status,
            version,
            headers,
            body,
            error,
        }
    }
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    Client::connect(addr).await.request("GET", path, headers).await
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[tokio::test]
async fn full_get_matches_the_known_hash() {
    let origin = start(Faults::default());
    let r = get(origin.local_addr(), "/file/5MB", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.error.is_none());
    assert_eq!(r.body.len(), 5_000_000);
    assert_eq!(sha(&r.body), sha256_hex(5_000_000, 5_000_000));
    assert_eq!(r.header("content-length"), Some("5000000"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("etag"), Some("\"5000000-5000000\""));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert!(r.header("last-modified").is_some());
    assert!(r.header("x-sha256").is_none(), "X-Sha256 is only sent on HEAD");

    let r = get(origin.local_addr(), "/file/1MiB?seed=42", &[]).await;
    assert_eq!(r.body.len(), 1 << 20);
    assert_eq!(sha(&r.body), sha256_hex(42, 1 << 20));
    assert_eq!(r.header("etag"), Some("\"42-1048576\""));
    assert_eq!(origin.bytes_sent(), 5_000_000 + (1 << 20));
}

#[tokio::test]
async fn ranges_give_exactly_the_right_bytes() {
    let origin = start(Faults::default());
    let mut c = Client::connect(origin.local_addr()).await;
    let size = 100_000u64;
    let cases: [(&str, u64, u64); 5] = [
        ("bytes=0-0", 0, 0),
        ("bytes=1000-1999", 1000, 1999),
        ("bytes=99000-", 99_000, 99_999),
        ("bytes=-500", 99_500, 99_999),
        ("bytes=50000-999999", 50_000, 99_999),
    ];
    for (range, a, b) in cases {
        let r = c.request("GET", "/file/100000?seed=9", &[("range", range)]).await;
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {a}-{b}/{size}").as_str()),
            "{range}"
        );
        assert_eq!(r.header("content-length"), Some((b - a + 1).to_string().as_str()));
        assert_eq!(r.body, body(9, a, (b - a + 1) as usize), "{range}");
    }
    // Several ranges: the full body (allowed by RFC 9110).
    let r = c
        .request("GET", "/file/100000?seed=9", &[("range", "bytes=0-1,5-6")])
        .await;
    assert_eq!((r.status, r.body.len()), (200, 100_000));
    assert_eq!(origin.requests(), 6, "all on one keep-alive connection");
}

#[tokio::test]
async fn unsatisfiable_range_is_416() {
    let origin = start(Faults::default());
    let mut c = Client::connect(origin.local_addr()).await;
    for range in ["bytes=100000-", "bytes=200000-200001", "bytes=-0"] {
        let r = c.request("GET", "/file/100000", &[("range", range)]).await;
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.header("content-range"), Some("bytes */100000"));
        assert!(r.body.is_empty());
    }
}

#[tokio::test]
async fn if_range_mismatch_sends_the_whole_body() {
    let origin = start(Faults::default());
    let mut c = Client::connect(origin.local_addr()).await;
    let head = c.request("HEAD", "/file/20000", &[]).await;
    let etag = head.header("etag").unwrap().to_string();
    let date = head.header("last-modified").unwrap().to_string();

    let r = c
        .request(
            "GET",
            "/file/20000",
            &[("range", "bytes=10-19"), ("if-range", "\"other\"")],
        )
        .await;
    assert_eq!((r.status, r.body.len()), (200, 20_000));
    let r = c
        .request("GET", "/file/20000", &[("range", "bytes=10-19"), ("if-range", &etag)])
        .await;
    assert_eq!((r.status, r.body), (206, body(20_000, 10, 10)));
    let r = c
        .request("GET", "/file/20000", &[("range", "bytes=10-19"), ("if-range", &date)])
        .await;
    assert_eq!(r.status, 206);
    let stale = "Sun, 01 Jan 2023 00:00:00 GMT";
    let r = c
        .request("GET", "/file/20000", &[("range", "bytes=10-19"), ("if-range", stale)])
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn head_carries_the_hash_and_no_body() {
    let origin = start(Faults::default());
    let mut c = Client::connect(origin.local_addr()).await;
    let r = c.request("HEAD", "/file/3MB?seed=1", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("3000000"));
    assert_eq!(r.header("x-sha256"), Some(sha256_hex(1, 3_000_000).as_str()));
    assert!(r.body.is_empty());
    assert_eq!(origin.bytes_sent(), 0);
}

#[tokio::test]
async fn health_unknown_paths_and_bad_sizes() {
    let origin = start(Faults::default());
    let mut c = Client::connect(origin.local_addr()).await;
    let r = c.request("GET", "/health", &[]).await;
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
    assert_eq!(c.request("GET", "/nope", &[]).await.status, 404);
    assert_eq!(c.request("GET", "/file/12XB", &[]).await.status, 400);
    assert_eq!(c.request("POST", "/file/12", &[]).await.status, 405);
    assert_eq!(origin.requests(), 4);
}

#[tokio::test]
async fn ignore_range_fault_sends_200_without_accept_ranges() {
    let origin = start(Faults::default());
    let r = get(origin.local_addr(), "/file/10000", &[("range", "bytes=0-9")]).await;
    assert_eq!(r.status, 206);
    origin.set_faults(Faults {
        ignore_range: true,
        ..Default::default()
    });
    let r = get(origin.local_addr(), "/file/10000", &[("range", "bytes=0-9")]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("accept-ranges").is_none());
    assert_eq!(r.body, body(10_000, 0, 10_000));
}

#[tokio::test]
async fn change_etag_fault_changes_entity_after_n_requests() {
    let origin = start(Faults {
        change_etag_after: Some(2),
        ..Default::default()
    });
    let mut c = Client::connect(origin.local_addr()).await;
    let a = c.request("GET", "/file/4096", &[]).await;
    let b = c.request("GET", "/file/4096", &[]).await;
    let d = c.request("GET", "/file/4096", &[]).await;
    assert_eq!(a.header("etag"), b.header("etag"));
    assert_eq!(a.body, b.body);
    assert_eq!(d.header("etag"), Some("\"4097-4096\""));
    assert_ne!(a.header("last-modified"), d.header("last-modified"));
    assert_eq!(sha(&d.body), sha256_hex(4097, 4096), "the body changes with the ETag");
    // A resume with the old validator now gets the whole new body.
    let old = a.header("etag").unwrap();
    let r = c
        .request("GET", "/file/4096", &[("range", "bytes=100-"), ("if-range", old)])
        .await;
    assert_eq!((r.status, r.body.len()), (200, 4096));
}

/// Sends one request on a raw socket and reads until EOF or error. Returns the raw bytes
/// received and how the read ended.
async fn raw_exchange(addr: SocketAddr, request: &str) -> (Vec<u8>, io::Result<()>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut data = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await {
            Ok(Ok(0)) => break Ok(()),
            Ok(Ok(n)) => data.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => break Err(e),
            Err(_) => panic!("no close within 20 s"),
        }
    };
    (data, end)
}

fn split_head(data: &[u8]) -> (String, &[u8]) {
    let at = data.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head") + 4;
    (String::from_utf8_lossy(&data[..at]).to_lowercase(), &data[at..])
}

#[tokio::test]
async fn reset_fault_truncates_the_body_with_a_reset() {
    let origin = start(Faults {
        reset_after_bytes: Some(100_000),
        ..Default::default()
    });
    let req = "GET /file/1000000 HTTP/1.1\r\nhost: origin\r\n\r\n";
    let (data, end) = raw_exchange(origin.local_addr(), req).await;
    let (head, got) = split_head(&data);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-length: 1000000"));
    let err = end.expect_err("the connection is reset, not closed");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert!(got.len() <= 100_000, "{} bytes", got.len());
    assert_eq!(
        got,
        &body(1_000_000, 0, got.len())[..],
        "what arrived is the right prefix"
    );
    println!("reset after {} of 100000 body bytes", got.len());

    // Through hyper: the body ends in an error.
    let r = get(origin.local_addr(), "/file/1000000", &[]).await;
    assert!(r.error.is_some());
    assert!(r.body.len() <= 100_000);
    // A response shorter than the threshold is untouched.
    let r = get(origin.local_addr(), "/file/99999", &[]).await;
    assert!(r.error.is_none());
    assert_eq!(r.body.len(), 99_999);
}

#[tokio::test]
async fn no_content_length_fault_closes_the_connection() {
    let origin = start(Faults {
        no_content_length: true,
        ..Default::default()
    });
    let req = "GET /file/300000?seed=5 HTTP/1.1\r\nhost: origin\r\n\r\n";
    let (data, end) = raw_exchange(origin.local_addr(), req).await;
    end.expect("a clean close ends the body");
    let (head, got) = split_head(&data);
    assert!(!head.contains("content-length"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert_eq!(sha(got), sha256_hex(5, 300_000));

    let r = get(origin.local_addr(), "/file/300000?seed=5", &[]).await;
    assert!(r.error.is_none());
    assert_eq!(r.version, http::Version::HTTP_10);
    assert_eq!(sha(&r.body), sha256_hex(5, 300_000));
}

#[tokio::test]
async fn rate_limit_fault_paces_the_body() {
    let origin = start(Faults {
        rate_limit_bps: Some(8_000_000),
        ..Default::default()
    });
    let t = Instant::now();
    let r = get(origin.local_addr(), "/file/200000", &[]).await;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(sha(&r.body), sha256_hex(200_000, 200_000));
    println!(
        "paced 200 kB at 8 Mbit/s: {secs:.3} s (nominal 0.200 s), {:.2} Mbit/s",
        1.6 / secs
    );
    // Pacing can only slow a body down, so a lower bound is not timing-sensitive.
    assert!(secs >= 0.15, "{secs}");
}

#[tokio::test]
async fn curl_agrees_with_the_hash() {
    let origin = start(Faults::default());
    let url = format!("http://{}/file/3MB?seed=77", origin.local_addr());
    let out = tokio::process::Command::new("/usr/bin/curl")
        .args(["-sS", "--fail", &url])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sha(&out.stdout), sha256_hex(77, 3_000_000));

    let out = tokio::process::Command::new("/usr/bin/curl")
        .args(["-sS", "--fail", "-r", "1000000-1999999", "-D", "/dev/stderr", &url])
        .output()
        .await
        .unwrap();
    let head = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(head.contains("206"), "{head}");
    assert!(head.contains("content-range: bytes 1000000-1999999/3000000"), "{head}");
    assert_eq!(sha(&out.stdout), sha(&body(77, 1_000_000, 1_000_000)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_is_printed() {
    let origin = start(Faults::default());
    let size: u64 = if cfg!(debug_assertions) { 128 << 20 } else { 2 << 30 };
    let mut s = TcpStream::connect(origin.local_addr()).await.unwrap();
    let req = format!("GET /file/{size} HTTP/1.1\r\nhost: origin\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let t = Instant::now();
    let mut buf = vec![0; 1 << 20];
    let mut total = 0u64;
    while total < size {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        total += n as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "origin throughput: {:.0} MB/s ({} MB, one connection)",
        total as f64 / secs / 1e6,
        size >> 20
    );
}
