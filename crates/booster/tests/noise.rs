//! The Noise peer channel over real TCP on 127.0.0.1: a good handshake and traffic both
//! ways, a wrong network secret (the responder must stay silent), tampering and injection
//! after the handshake, a replayed first message, bad lengths, and the identity file.
//!
//! `cargo test --release -p booster --test noise -- --nocapture` also prints the throughput
//! of a 200 MB transfer (10 MB in a debug build).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use booster::noise::{self, Channel, HandshakeError, Identity, NoiseError, NoiseStream, Remote, MAX_PLAINTEXT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const PSK: [u8; 32] = [0x42; 32];
const OTHER_PSK: [u8; 32] = [0x24; 32];
const TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes the initiator sends during a handshake: msg1 (2 + 48) and msg3 (2 + 65).
const INITIATOR_HANDSHAKE_BYTES: usize = 50 + 67;

type Accepted = Result<(NoiseStream<TcpStream>, Remote), NoiseError>;

/// A listener on port 0 whose first connection is handed to `noise::accept`.
async fn responder(psk: [u8; 32], me: Identity, timeout: Duration) -> (std::net::SocketAddr, JoinHandle<Accepted>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        noise::accept(Channel::Peer, tcp, &psk, &me, timeout).await
    });
    (addr, task)
}

/// A connected client/server pair with the same PSK.
async fn pair() -> (NoiseStream<TcpStream>, NoiseStream<TcpStream>) {
    let server_id = Identity::generate();
    let (addr, server) = responder(PSK, server_id, TIMEOUT).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, _) = noise::connect(Channel::Peer, tcp, &PSK, &Identity::generate(), TIMEOUT)
        .await
        .unwrap();
    let (server, _) = server.await.unwrap().unwrap();
    (client, server)
}

/// A valid msg1 made with `psk`, length-prefixed, straight from snow.
fn forged_msg1(psk: &[u8; 32]) -> Vec<u8> {
    let params = noise::PATTERN.parse().unwrap();
    let key = snow::Builder::new(noise::PATTERN.parse().unwrap())
        .generate_keypair()
        .unwrap();
    let mut hs = snow::Builder::new(params)
        .prologue(b"booster peer channel")
        .unwrap()
        .psk(0, psk)
        .unwrap()
        .local_private_key(&key.private)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut msg = vec![0u8; 256];
    let n = hs.write_message(&[], &mut msg[2..]).unwrap();
    msg[..2].copy_from_slice(&(n as u16).to_be_bytes());
    msg.truncate(2 + n);
    msg
}

/// Reads until EOF and returns what arrived; a reset counts as "nothing more".
async fn read_all(tcp: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, tcp.read_to_end(&mut got))
        .await
        .expect("peer never closed");
    got
}

#[tokio::test]
async fn messages_both_ways_and_identities() {
    let server_id = Identity::generate();
    let client_id = Identity::generate();
    let (addr, server) = responder(PSK, server_id.clone(), TIMEOUT).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut client, seen_server) = noise::connect(Channel::Peer, tcp, &PSK, &client_id, TIMEOUT)
        .await
        .unwrap();
    let (mut server, seen_client) = server.await.unwrap().unwrap();
    assert_eq!(seen_server.static_key, server_id.public());
    assert_eq!(seen_client.static_key, client_id.public());
    assert_eq!(client.remote(), &seen_server);

    // Largest messages, an empty one, and many small ones, both ways.
    let big: Vec<u8> = (0..MAX_PLAINTEXT).map(|i| (i * 7 + 3) as u8).collect();
    for client_sends in [true, false] {
        let (from, to) = if client_sends {
            (&mut client, &mut server)
        } else {
            (&mut server, &mut client)
        };
        from.send(&big).await.unwrap();
        from.send(&[]).await.unwrap();
        assert_eq!(to.recv().await.unwrap().unwrap(), &big[..]);
        assert_eq!(to.recv().await.unwrap().unwrap(), b"");
    }
    let expected = big.clone();
    let sender = tokio::spawn(async move {
        for i in 0..5000u32 {
            let msg = vec![i as u8; (i % 200) as usize + 1];
            client.send(&msg).await.unwrap();
        }
        client.send(&expected).await.unwrap();
        client
    });
    for i in 0..5000u32 {
        let msg = server.recv().await.unwrap().unwrap();
        assert_eq!(msg.len(), (i % 200) as usize + 1, "message {i}");
        assert!(msg.iter().all(|&b| b == i as u8), "message {i}");
    }
    assert_eq!(server.recv().await.unwrap().unwrap(), &big[..]);
    let client = sender.await.unwrap();
    drop(client);
    assert!(server.recv().await.unwrap().is_none(), "clean EOF between messages");

    // Too large to send: refused, and the channel is still usable.
    let (mut client, mut server) = pair().await;
    let too_big = vec![0u8; MAX_PLAINTEXT + 1];
    assert!(matches!(client.send(&too_big).await, Err(NoiseError::TooLarge)));
    client.send(b"still fine").await.unwrap();
    assert_eq!(server.recv().await.unwrap().unwrap(), b"still fine");
}

#[tokio::test]
async fn split_halves_and_byte_stream() {
    let (client, server) = pair().await;
    let (mut client_rx, mut client_tx) = client.split();
    let (mut server_rx, mut server_tx) = server.split();
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();

    // Bytes via AsyncWrite/AsyncRead in one direction, messages in the other, all at once.
    let expected = payload.clone();
    let upload = tokio::spawn(async move {
        client_tx.write_all(&expected).await.unwrap();
        client_tx.shutdown().await.unwrap();
    });
    let echo = tokio::spawn(async move {
        for i in 0..100u8 {
            server_tx.send(&[i; 1000]).await.unwrap();
        }
    });
    let mut got = Vec::new();
    server_rx.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, payload);
    for i in 0..100u8 {
        assert_eq!(client_rx.recv().await.unwrap().unwrap(), &[i; 1000][..]);
    }
    upload.await.unwrap();
    echo.await.unwrap();
}

#[tokio::test]
async fn wrong_secret_fails_and_responder_stays_silent() {
    // Two real nodes with different secrets.
    let (addr, server) = responder(PSK, Identity::generate(), TIMEOUT).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client = noise::connect(Channel::Peer, tcp, &OTHER_PSK, &Identity::generate(), TIMEOUT).await;
    assert!(
        matches!(client, Err(NoiseError::Handshake(HandshakeError::PeerClosed))),
        "{client:?}"
    );
    let server = server.await.unwrap();
    assert!(
        matches!(server, Err(NoiseError::Handshake(HandshakeError::WrongSecret))),
        "{server:?}"
    );

    // A raw client with a well-formed msg1 under another PSK gets zero bytes, then EOF.
    let (addr, server) = responder(PSK, Identity::generate(), TIMEOUT).await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(&forged_msg1(&OTHER_PSK)).await.unwrap();
    assert_eq!(read_all(&mut raw).await, b"", "the responder must not answer");
    let server = server.await.unwrap();
    assert!(
        matches!(server, Err(NoiseError::Handshake(HandshakeError::WrongSecret))),
        "{server:?}"
    );

    // The same raw client with the right PSK does get msg2: the test above is not vacuous.
    let (addr, _server) = responder(PSK, Identity::generate(), TIMEOUT).await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(&forged_msg1(&PSK)).await.unwrap();
    let mut prefix = [0u8; 2];
    raw.read_exact(&mut prefix).await.unwrap();
    assert_eq!(
        u16::from_be_bytes(prefix),
        32 + 48 + 17,
        "msg2: e, encrypted s, encrypted version"
    );
}

#[tokio::test]
async fn derive_psk_is_deterministic_and_secret_dependent() {
    let (a, b, c) = tokio::task::spawn_blocking(|| {
        (
            noise::derive_psk("correct horse battery staple"),
            noise::derive_psk("correct horse battery staple"),
            noise::derive_psk("correct horse battery stapler"),
        )
    })
    .await
    .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_ne!(a, [0u8; 32]);
}

/// Forwards a client to `upstream`, flipping one bit at `flip_at` bytes into the
/// client → server direction (a fault injector in the middle of the path).
async fn tampering_relay(upstream: std::net::SocketAddr, flip_at: usize) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(upstream).await.unwrap();
        let (mut client_rx, mut client_tx) = client.into_split();
        let (mut server_rx, mut server_tx) = server.into_split();
        let down = tokio::spawn(async move { tokio::io::copy(&mut server_rx, &mut client_tx).await });
        let mut seen = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if (seen..seen + n).contains(&flip_at) {
                buf[flip_at - seen] ^= 0x01;
            }
            seen += n;
            if server_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_tx.shutdown().await;
        let _ = down.await;
    });
    addr
}

#[tokio::test]
async fn flipped_bit_in_transport_message_is_fatal() {
    let (addr, server) = responder(PSK, Identity::generate(), TIMEOUT).await;
    // The bit sits inside the ciphertext of the first transport message.
    let relay = tampering_relay(addr, INITIATOR_HANDSHAKE_BYTES + 2 + 5).await;
    let tcp = TcpStream::connect(relay).await.unwrap();
    let (mut client, _) = noise::connect(Channel::Peer, tcp, &PSK, &Identity::generate(), TIMEOUT)
        .await
        .unwrap();
    let (mut server, _) = server.await.unwrap().unwrap();
    client.send(b"hello over a tampered path").await.unwrap();
    assert!(matches!(server.recv().await, Err(NoiseError::Decrypt)));
    // Fatal: the channel stays dead even though later messages would be intact.
    client.send(b"second").await.unwrap();
    assert!(matches!(server.recv().await, Err(NoiseError::Closed)));
}

#[tokio::test]
async fn flipped_bit_in_handshake_fails_it() {
    // A bit of msg3's encrypted static key.
    let (addr, server) = responder(PSK, Identity::generate(), TIMEOUT).await;
    let relay = tampering_relay(addr, 50 + 2 + 10).await;
    let tcp = TcpStream::connect(relay).await.unwrap();
    // The initiator finishes (it sends msg3 last); the responder refuses it.
    let _client = noise::connect(Channel::Peer, tcp, &PSK, &Identity::generate(), TIMEOUT).await;
    let server = server.await.unwrap();
    assert!(
        matches!(server, Err(NoiseError::Handshake(HandshakeError::BadMessage))),
        "{server:?}"
    );
}

/// A handshake whose initiator keeps direct access to its TCP stream, to inject raw bytes.
async fn handshake_with_raw_client() -> (TcpStream, NoiseStream<TcpStream>) {
    let (addr, server) = responder(PSK, Identity::generate(), TIMEOUT).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let client = noise::connect(Channel::Peer, &mut tcp, &PSK, &Identity::generate(), TIMEOUT)
        .await
        .unwrap();
    drop(client);
    let (server, _) = server.await.unwrap().unwrap();
    (tcp, server)
}

#[tokio::test]
async fn injected_garbage_after_handshake() {
    // A well-framed message of random bytes.
    let (mut raw, mut server) = handshake_with_raw_client().await;
    let mut garbage = vec![0x00, 0x40];
    garbage.extend((0..64u8).map(|i| i.wrapping_mul(37)));
    raw.write_all(&garbage).await.unwrap();
    assert!(matches!(server.recv().await, Err(NoiseError::Decrypt)));

    // A length shorter than the tag.
    let (mut raw, mut server) = handshake_with_raw_client().await;
    raw.write_all(&[0x00, 0x05, 1, 2, 3, 4, 5]).await.unwrap();
    assert!(matches!(server.recv().await, Err(NoiseError::Decrypt)));

    // A zero length.
    let (mut raw, mut server) = handshake_with_raw_client().await;
    raw.write_all(&[0x00, 0x00]).await.unwrap();
    assert!(matches!(server.recv().await, Err(NoiseError::Decrypt)));

    // Through AsyncRead the same failure is an InvalidData error.
    let (mut raw, mut server) = handshake_with_raw_client().await;
    raw.write_all(&garbage).await.unwrap();
    let mut buf = [0u8; 16];
    let error = server.read(&mut buf).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn truncated_and_oversized_messages() {
    // Transport: a 65535-byte length, 100 bytes of body, then EOF.
    let (mut raw, mut server) = handshake_with_raw_client().await;
    raw.write_all(&[0xFF, 0xFF]).await.unwrap();
    raw.write_all(&[0xAB; 100]).await.unwrap();
    raw.shutdown().await.unwrap();
    match server.recv().await {
        Err(NoiseError::Io(error)) => assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof),
        other => panic!("{other:?}"),
    }

    // Transport: EOF inside the length prefix.
    let (mut raw, mut server) = handshake_with_raw_client().await;
    raw.write_all(&[0x01]).await.unwrap();
    raw.shutdown().await.unwrap();
    assert!(matches!(server.recv().await, Err(NoiseError::Io(_))));

    // Handshake: a huge length is refused at once (no waiting for 64 KiB), silently.
    let (addr, server) = responder(PSK, Identity::generate(), TIMEOUT).await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(&[0xFF, 0xFF, 1, 2, 3]).await.unwrap();
    let started = Instant::now();
    assert!(matches!(server.await.unwrap(), Err(NoiseError::TooLarge)));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(read_all(&mut raw).await, b"");

    // Handshake: a truncated msg1, then EOF.
    let (addr, server) = responder(PSK, Identity::generate(), TIMEOUT).await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(&forged_msg1(&PSK)[..20]).await.unwrap();
    raw.shutdown().await.unwrap();
    let server = server.await.unwrap();
    assert!(
        matches!(server, Err(NoiseError::Handshake(HandshakeError::PeerClosed))),
        "{server:?}"
    );
    assert_eq!(read_all(&mut raw).await, b"");

    // Handshake: a silent client runs into the timeout.
    let (addr, server) = responder(PSK, Identity::generate(), Duration::from_millis(200)).await;
    let _raw = TcpStream::connect(addr).await.unwrap();
    assert!(matches!(server.await.unwrap(), Err(NoiseError::Timeout)));
}

#[tokio::test]
async fn replayed_msg1_cannot_finish() {
    // Capture a real initiator's msg1.
    let (mut near, far) = tokio::io::duplex(4096);
    let initiator = tokio::spawn(async move {
        let _ = noise::connect(Channel::Peer, far, &PSK, &Identity::generate(), Duration::from_secs(1)).await;
    });
    let mut msg1 = vec![0u8; 50];
    near.read_exact(&mut msg1).await.unwrap();
    drop(near);
    initiator.await.unwrap();

    // Replayed to a fresh responder: it answers (msg1 carries no freshness), but the
    // attacker has no ephemeral key to finish with. A made-up msg3 is refused ...
    let (addr, server) = responder(PSK, Identity::generate(), TIMEOUT).await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(&msg1).await.unwrap();
    let mut msg2 = vec![0u8; 2 + 97];
    raw.read_exact(&mut msg2).await.unwrap();
    let mut msg3 = vec![0x00, 65];
    msg3.extend_from_slice(&[0x5A; 65]);
    raw.write_all(&msg3).await.unwrap();
    let server = server.await.unwrap();
    assert!(
        matches!(server, Err(NoiseError::Handshake(HandshakeError::BadMessage))),
        "{server:?}"
    );

    // ... and waiting gets the attacker nothing but the timeout.
    let (addr, server) = responder(PSK, Identity::generate(), Duration::from_millis(300)).await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(&msg1).await.unwrap();
    assert!(matches!(server.await.unwrap(), Err(NoiseError::Timeout)));
}

#[tokio::test]
async fn version_mismatch_is_refused() {
    // A responder built by hand that announces version 2 in msg2.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let key = snow::Builder::new(noise::PATTERN.parse().unwrap())
            .generate_keypair()
            .unwrap();
        let mut hs = snow::Builder::new(noise::PATTERN.parse().unwrap())
            .prologue(b"booster peer channel")
            .unwrap()
            .psk(0, &PSK)
            .unwrap()
            .local_private_key(&key.private)
            .unwrap()
            .build_responder()
            .unwrap();
        let mut msg = [0u8; 256];
        let mut payload = [0u8; 256];
        tcp.read_exact(&mut msg[..50]).await.unwrap();
        hs.read_message(&msg[2..50], &mut payload).unwrap();
        let n = hs.write_message(&[2], &mut msg[2..]).unwrap();
        msg[..2].copy_from_slice(&(n as u16).to_be_bytes());
        tcp.write_all(&msg[..2 + n]).await.unwrap();
        // The initiator must not send msg3.
        read_all(&mut tcp).await
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client = noise::connect(Channel::Peer, tcp, &PSK, &Identity::generate(), TIMEOUT).await;
    assert!(matches!(client, Err(NoiseError::Version(2))), "{client:?}");
    assert_eq!(fake.await.unwrap(), b"");
}

#[test]
fn identity_file_is_private_and_stable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.key");
    let first = Identity::load_or_create(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let private = std::fs::read(&path).unwrap();
    assert_eq!(private.len(), 32);
    let again = Identity::load_or_create(&path).unwrap();
    assert_eq!(first.public(), again.public());
    assert_ne!(first.public(), Identity::generate().public());

    // Debug shows the public key, never the private one.
    let shown = format!("{first:?}");
    let private_hex: String = private.iter().map(|b| format!("{b:02x}")).collect();
    let public_hex: String = first.public().iter().map(|b| format!("{b:02x}")).collect();
    assert!(shown.contains(&public_hex), "{shown}");
    assert!(!shown.contains(&private_hex), "{shown}");

    // No stray temporary file; a file of the wrong size is refused, not overwritten.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, b"short").unwrap();
    let error = Identity::load_or_create(&bad).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(std::fs::read(&bad).unwrap(), b"short");
}

/// Prints, does not assert. 200 MB in a release build (`cargo test --release`); an
/// unoptimized ChaCha20-Poly1305 manages only a few MB/s, so a debug build moves 10 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_200mb() {
    const TOTAL: usize = if cfg!(debug_assertions) { 10 } else { 200 } * 1000 * 1000;
    let (client, mut server) = pair().await;
    let (_client_rx, mut client_tx) = client.split();
    let chunk = vec![0x5Au8; MAX_PLAINTEXT];
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        let mut sent = 0;
        while sent < TOTAL {
            let n = chunk.len().min(TOTAL - sent);
            client_tx.send(&chunk[..n]).await.unwrap();
            sent += n;
        }
        client_tx
    });
    let mut received = 0;
    while received < TOTAL {
        received += server.recv().await.unwrap().unwrap().len();
    }
    let elapsed = started.elapsed();
    drop(sender.await.unwrap());
    assert_eq!(received, TOTAL);
    println!(
        "noise throughput: {} MB in {:.2?} = {:.1} MB/s ({} build)",
        TOTAL / 1_000_000,
        elapsed,
        TOTAL as f64 / elapsed.as_secs_f64() / 1e6,
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
}
