//! The emulated link: integrity, timing, stall, cut and restore, shared capacity, and that pump
//! tasks end.
//!
//! These run on the real clock: the workspace's tokio has no `test-util` feature, so no paused
//! clock. Timing is therefore asserted only as lower bounds, which pacing and delays guarantee
//! (the emulation can be slower than nominal on a loaded machine, never faster); measured values
//! against nominal are printed.

use std::io;
use std::time::Duration;

use lab::emulink::{EmuLink, EmuStream};
use lab::profile::LinkSpec;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

fn spec(mbit: u64, rtt_ms: u64) -> LinkSpec {
    LinkSpec {
        name: "test",
        rate_bps: mbit * 1_000_000,
        rtt: Duration::from_millis(rtt_ms),
        jitter: Duration::ZERO,
        loss: 0.0,
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

/// A far side in memory: returns the end to wrap and the server's end.
fn far_pair() -> (DuplexStream, DuplexStream) {
    tokio::io::duplex(64 * 1024)
}

async fn read_n<R: AsyncRead + Unpin>(r: &mut R, n: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0; n];
    r.read_exact(&mut v).await?;
    Ok(v)
}

/// Keeps reading until an error or EOF; returns the bytes read and how it ended.
async fn drain<R: AsyncRead + Unpin>(r: &mut R) -> (u64, io::Result<()>) {
    let mut buf = vec![0; 64 * 1024];
    let mut total = 0;
    loop {
        match r.read(&mut buf).await {
            Ok(0) => return (total, Ok(())),
            Ok(n) => total += n as u64,
            Err(e) => return (total, Err(e)),
        }
    }
}

/// Waits (up to 5 s) until the link has `n` streams with running pumps.
async fn wait_for_streams(link: &EmuLink, n: usize) {
    let t0 = Instant::now();
    while link.active_streams() != n {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{} streams still running",
            link.active_streams()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Serves `data` on the far end forever-ish (until the write fails), in the background.
fn serve(mut far: DuplexStream, data: Vec<u8>) -> AbortOnDropHandle<io::Result<()>> {
    AbortOnDropHandle::new(tokio::spawn(async move {
        far.write_all(&data).await?;
        far.shutdown().await
    }))
}

#[tokio::test]
async fn bytes_arrive_intact_and_in_order_both_ways() {
    let link = EmuLink::new(&spec(80, 20));
    link.set_jitter(Duration::from_millis(15));
    let (near_far, mut server) = far_pair();
    let mut s = link.wrap(near_far);
    let up = pattern(1, 1_000_003);
    let down = pattern(2, 777_777);

    let echo = {
        let down = down.clone();
        AbortOnDropHandle::new(tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(&mut server);
            let (got, sent) = tokio::join!(read_n(&mut r, 1_000_003), async {
                w.write_all(&down).await?;
                w.shutdown().await
            });
            // The client's half-close arrives as EOF.
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).await?;
            sent.map(|_| (got, rest))
        }))
    };
    let (mut r, mut w) = tokio::io::split(&mut s);
    let (received, wrote) = tokio::join!(
        async {
            let mut v = Vec::new();
            r.read_to_end(&mut v).await.map(|_| v)
        },
        async {
            w.write_all(&up).await?;
            w.shutdown().await
        }
    );
    wrote.unwrap();
    assert_eq!(received.unwrap(), down, "down direction intact and in order");
    let (got, rest) = echo.await.unwrap().unwrap();
    assert_eq!(got.unwrap(), up, "up direction intact and in order");
    assert!(rest.is_empty());
    assert_eq!(link.bytes_up(), up.len() as u64);
    assert_eq!(link.bytes_down(), down.len() as u64);
}

#[tokio::test]
async fn a_megabyte_at_8_mbit_takes_a_second() {
    let link = EmuLink::new(&spec(8, 100));
    let (near_far, server) = far_pair();
    let mut s = link.wrap(near_far);
    let data = pattern(3, 1_000_000);
    let t0 = Instant::now();
    let _srv = serve(server, data.clone());
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    let took = t0.elapsed();
    assert_eq!(got, data);
    println!("1 MB at 8 Mbit/s, 100 ms RTT: {took:?} (nominal 1.05 s)");
    // 1 s of serialisation (less one 16 KiB burst) plus half an RTT of propagation.
    assert!(took >= Duration::from_secs(1), "{took:?}");
}

#[tokio::test]
async fn connect_takes_one_rtt() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let link = EmuLink::new(&spec(10, 250));
    let accept = AbortOnDropHandle::new(tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) }));
    let t0 = Instant::now();
    let mut s = link.connect(addr).await.unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(250), "{:?}", t0.elapsed());
    let mut far = accept.await.unwrap().unwrap();
    // One request-response exchange takes another RTT.
    let t1 = Instant::now();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0; 4];
    far.read_exact(&mut buf).await.unwrap();
    far.write_all(b"pong").await.unwrap();
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    assert!(t1.elapsed() >= Duration::from_millis(250), "{:?}", t1.elapsed());
}

#[tokio::test]
async fn cut_fails_transfers_and_connects_until_restore() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let link = EmuLink::new(&spec(8, 40));

    // A transfer in flight, and a stream blocked in a read on an idle far side.
    let (near_far, server) = far_pair();
    let mut busy = link.wrap(near_far);
    let srv = serve(server, pattern(4, 10_000_000));
    let (idle_far, _idle_server) = far_pair();
    let mut idle = link.wrap(idle_far);
    let blocked = AbortOnDropHandle::new(tokio::spawn(async move {
        let mut b = [0; 1];
        idle.read(&mut b).await
    }));
    read_n(&mut busy, 300_000).await.unwrap();
    assert!(link.is_up());
    assert_eq!(link.active_streams(), 2);

    link.cut();
    assert!(!link.is_up());
    let (_, end) = drain(&mut busy).await;
    assert_eq!(end.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
    let err = tokio::time::timeout(Duration::from_secs(1), blocked)
        .await
        .expect("prompt")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert!(busy.write_all(b"x").await.is_err());
    // The far side is dropped: the server's write fails.
    assert!(srv.await.unwrap().is_err());
    wait_for_streams(&link, 0).await;

    let err = link.connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NetworkUnreachable);

    link.restore();
    assert!(link.is_up());
    let accept = AbortOnDropHandle::new(tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) }));
    let mut s = link.connect(addr).await.unwrap();
    let mut far = accept.await.unwrap().unwrap();
    far.write_all(b"back").await.unwrap();
    assert_eq!(read_n(&mut s, 4).await.unwrap(), b"back");
    // A stream cut earlier stays dead after the restore.
    assert!(busy.write_all(b"x").await.is_err());
}

#[tokio::test]
async fn cut_while_stalled_is_seen_promptly() {
    let link = EmuLink::new(&spec(8, 40));
    let (near_far, server) = far_pair();
    let mut s = link.wrap(near_far);
    let _srv = serve(server, pattern(5, 1_000_000));
    read_n(&mut s, 10_000).await.unwrap();
    link.stall(true);
    let reader = AbortOnDropHandle::new(tokio::spawn(async move { drain(&mut s).await }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!reader.is_finished(), "a stall keeps the stream open");
    link.cut();
    let (_, end) = tokio::time::timeout(Duration::from_secs(1), reader)
        .await
        .expect("prompt")
        .unwrap();
    assert_eq!(end.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn stall_stops_progress_and_unstall_resumes_without_loss() {
    let link = EmuLink::new(&spec(16, 30));
    let (near_far, server) = far_pair();
    let mut s = link.wrap(near_far);
    let data = pattern(6, 1_000_000);
    let _srv = serve(server, data.clone());
    let mut got = read_n(&mut s, 200_000).await.unwrap();

    link.stall(true);
    // The segment being written when the stall began may finish; drain it from the near pipe
    // until a read blocks, and from then on nothing may move.
    let mut buf = vec![0; 64 * 1024];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
        got.extend_from_slice(&buf[..n]);
    }
    let before = link.bytes_down();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(link.bytes_down(), before, "no bytes move while stalled");
    assert!(tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf))
        .await
        .is_err());

    link.stall(false);
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "nothing lost or reordered across the stall");
}

#[tokio::test]
async fn two_streams_share_the_link_capacity() {
    let link = EmuLink::new(&spec(16, 20));
    let mut streams: Vec<(EmuStream, _)> = Vec::new();
    for i in 0..2 {
        let (near_far, server) = far_pair();
        streams.push((link.wrap(near_far), serve(server, pattern(i, 50_000_000))));
    }
    let window = Duration::from_millis(1500);
    let mut counts = Vec::new();
    let reads = streams.iter_mut().map(|(s, _)| async {
        let mut n = 0u64;
        let mut buf = vec![0; 64 * 1024];
        let _ = tokio::time::timeout(window, async {
            loop {
                n += s.read(&mut buf).await.unwrap() as u64;
            }
        })
        .await;
        n
    });
    for n in futures::future::join_all(reads).await {
        counts.push(n);
    }
    let nominal = 16e6 / 8.0 * window.as_secs_f64();
    let total: u64 = counts.iter().sum();
    println!(
        "two streams on 16 Mbit/s for {window:?}: {:?} bytes, sum {:.1}% of nominal, split {:.1}% / {:.1}%",
        counts,
        100.0 * total as f64 / nominal,
        100.0 * counts[0] as f64 / total as f64,
        100.0 * counts[1] as f64 / total as f64,
    );
    assert!(counts.iter().all(|&n| n > 0), "both made progress");
    // Shared, not doubled: everything delivered passed the one pacer (at most one burst extra).
    assert!((total as f64) < nominal * 1.1, "{total}");
}

#[tokio::test]
async fn half_close_reaches_the_far_side_after_the_delay() {
    let link = EmuLink::new(&spec(10, 200));
    let (near_far, mut server) = far_pair();
    let mut s = link.wrap(near_far);
    let t0 = Instant::now();
    s.write_all(b"request").await.unwrap();
    s.shutdown().await.unwrap();
    let mut req = Vec::new();
    server.read_to_end(&mut req).await.unwrap();
    assert_eq!(req, b"request");
    assert!(t0.elapsed() >= Duration::from_millis(100));
    // The other direction still works after the half-close.
    server.write_all(b"response").await.unwrap();
    drop(server);
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    assert_eq!(resp, b"response");
    assert!(t0.elapsed() >= Duration::from_millis(200));
    wait_for_streams(&link, 0).await;
}

#[tokio::test]
async fn dropping_the_client_ends_the_pumps_and_drops_the_far_side() {
    let link = EmuLink::new(&spec(10, 20));
    let (near_far, mut server) = far_pair();
    let s = link.wrap(near_far);
    assert_eq!(link.active_streams(), 1);
    drop(s);
    // The far side sees EOF (its peer was dropped) once the half-close crosses the link.
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).await.unwrap();
    wait_for_streams(&link, 0).await;
    assert!(server.write_all(b"late").await.is_err(), "far side was dropped");
}

/// Real clock, real sockets: print what the emulation delivers against the nominal values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clock_accuracy_is_printed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Generated up front: CPU work inside the server task would delay the echo it just wrote.
    let bulk = pattern(7, 2_000_000);
    let server = AbortOnDropHandle::new(tokio::spawn(async move {
        let (mut far, _) = listener.accept().await?;
        let mut b = [0; 1];
        for _ in 0..5 {
            far.read_exact(&mut b).await?;
            far.write_all(&b).await?;
        }
        far.write_all(&bulk).await?;
        far.shutdown().await
    }));
    for (mbit, rtt_ms) in [(20u64, 60u64)] {
        let link = EmuLink::new(&spec(mbit, rtt_ms));
        let t0 = std::time::Instant::now();
        let mut s = link.connect(addr).await.unwrap();
        let connect = t0.elapsed();
        let mut rtts = Vec::new();
        for _ in 0..5 {
            let t = std::time::Instant::now();
            s.write_all(b"x").await.unwrap();
            read_n(&mut s, 1).await.unwrap();
            rtts.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let t = std::time::Instant::now();
        let (n, end) = drain(&mut s).await;
        end.unwrap();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "real clock, {mbit} Mbit/s {rtt_ms} ms: connect {:.1} ms, rtt {:.1?} ms, throughput {:.2} Mbit/s ({n} B in {secs:.2} s)",
            connect.as_secs_f64() * 1e3,
            rtts,
            n as f64 * 8.0 / secs / 1e6,
        );
        assert_eq!(n, 2_000_000);
    }
    server.await.unwrap().unwrap();
}
