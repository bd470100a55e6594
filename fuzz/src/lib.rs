//! The checks behind each fuzz target, one function per target, shared by the libFuzzer
//! binaries in `fuzz_targets/` and the stable corpus replay in `tests/replay.rs`.
//!
//! Each check: decoding any input must not panic; what decodes must consume no more than
//! the input, re-encode, and decode again to the same value; a strict prefix of a canonical
//! encoding must be "need more bytes". Body tracking must not depend on how input is split.
//! Peer frames are whole Noise messages, so there a strict prefix must be an error instead.

use proto::http::{BodyFraming, BodyTracker, RequestHead, ResponseHead, MAX_HEAD, MAX_HEADERS};
use proto::peer::{Frame, DATA_HEADER_LEN};
use proto::socks5::{self, Address, Greeting, Request, UdpHeader, UserPass};

type Decode<T, E> = fn(&[u8]) -> Result<Option<(T, usize)>, E>;

/// Decodes `data`; when that succeeds, the consumed bytes must be the canonical encoding,
/// every strict prefix of them must need more bytes, and they must decode to the same value.
fn canonical<T, E>(data: &[u8], decode: Decode<T, E>, encode: fn(&T, &mut Vec<u8>))
where
    T: PartialEq + std::fmt::Debug,
    E: PartialEq + std::fmt::Debug,
{
    let Ok(Some((value, used))) = decode(data) else {
        return;
    };
    let consumed = data.get(..used).expect("consumed more than the input");
    let mut wire = Vec::new();
    encode(&value, &mut wire);
    assert_eq!(wire, consumed, "re-encoding differs from the decoded bytes");
    for cut in 0..wire.len() {
        assert_eq!(
            decode(&wire[..cut]),
            Ok(None),
            "prefix of {cut} bytes is not pending"
        );
    }
    assert_eq!(decode(&wire), Ok(Some((value, used))));
}

pub fn socks5_greeting(data: &[u8]) {
    canonical(data, Greeting::decode, Greeting::encode);
    canonical(data, UserPass::decode, UserPass::encode);
    let _ = socks5::decode_method_selection(data);
    let _ = socks5::decode_auth_status(data);
}

pub fn socks5_request(data: &[u8]) {
    canonical(data, Request::decode, Request::encode);
    canonical(data, Address::decode, Address::encode);
    if let Ok(Some((reply, bound, used))) = socks5::decode_reply(data) {
        let mut wire = Vec::new();
        socks5::encode_reply(reply, &bound, &mut wire);
        assert_eq!(Some(wire.as_slice()), data.get(..used));
    }
    if let Err(error) = Request::decode(data) {
        let _ = error.reply();
    }
}

pub fn socks5_udp(data: &[u8]) {
    if let Ok((header, offset)) = UdpHeader::decode(data) {
        let mut wire = Vec::new();
        header.encode(&mut wire);
        assert_eq!(Some(wire.as_slice()), data.get(..offset));
        assert_eq!(UdpHeader::decode(&wire), Ok((header, offset)));
    }
}

pub fn http_request_head(data: &[u8]) {
    // A small limit exercises the TooLarge path on short inputs.
    if let Ok(Some((_, used))) = RequestHead::decode(data, 64) {
        assert!(used <= 64);
    }
    let head = match RequestHead::decode(data, MAX_HEAD) {
        Ok(Some((head, used))) => {
            assert!(used <= data.len().min(MAX_HEAD));
            head
        }
        Ok(None) => {
            assert!(data.len() < MAX_HEAD);
            return;
        }
        Err(error) => {
            let _ = error.status();
            return;
        }
    };
    assert_eq!(reparse_request(&head), head);
    let framing = head.body_framing();
    let _ = head.keep_alive();
    if let Ok(target) = head.proxy_target() {
        let upstream = head.to_origin_form(&target);
        // Stripping hop-by-hop headers must never change how the body is framed.
        assert_eq!(upstream.body_framing(), framing);
        assert_eq!(
            upstream.header("host"),
            Some(target.host_header().as_bytes())
        );
        if upstream.headers.len() <= MAX_HEADERS {
            assert_eq!(reparse_request(&upstream), upstream);
        }
    }
}

fn reparse_request(head: &RequestHead) -> RequestHead {
    let mut wire = Vec::new();
    head.encode(&mut wire);
    let (again, used) = RequestHead::decode(&wire, usize::MAX)
        .expect("re-encoded request decodes")
        .expect("re-encoded request is complete");
    assert_eq!(used, wire.len());
    again
}

pub fn http_response_head(data: &[u8]) {
    let head = match ResponseHead::decode(data, MAX_HEAD) {
        Ok(Some((head, used))) => {
            assert!(used <= data.len().min(MAX_HEAD));
            head
        }
        Ok(None) => {
            assert!(data.len() < MAX_HEAD);
            return;
        }
        Err(error) => {
            let _ = error.status();
            return;
        }
    };
    let mut wire = Vec::new();
    head.encode(&mut wire);
    let (again, used) = ResponseHead::decode(&wire, usize::MAX)
        .expect("re-encoded response decodes")
        .expect("re-encoded response is complete");
    assert_eq!((&again, used), (&head, wire.len()));
    for method in ["GET", "HEAD", "CONNECT"] {
        assert_eq!(again.body_framing(method), head.body_framing(method));
    }
    let _ = head.keep_alive();
}

/// Outcome of tracking a body: bytes that belong to it and whether it ended, or an error.
type Tracked = Result<(usize, bool), ()>;

fn track(body: &[u8], piece: usize) -> Tracked {
    let mut tracker = BodyTracker::new(BodyFraming::Chunked);
    let mut used = 0;
    for chunk in body.chunks(piece.max(1)) {
        let n = tracker.feed(chunk).map_err(|_| ())?;
        assert!(n <= chunk.len());
        used += n;
        if n < chunk.len() {
            assert!(
                tracker.is_done(),
                "stopped short of the input without being done"
            );
            break;
        }
    }
    Ok((used, tracker.is_done()))
}

/// The first byte picks a split size; the rest is the body. Whole, split and
/// one-byte-at-a-time feeding must agree.
pub fn http_body_chunked(data: &[u8]) {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let whole = track(body, body.len());
    assert_eq!(track(body, usize::from(split)), whole, "split size {split}");
    assert_eq!(track(body, 1), whole, "one byte at a time");
    if let Ok((used, done)) = whole {
        assert!(done || used == body.len());
    }
}

/// A peer frame is one whole Noise plaintext: what decodes must re-encode to exactly the
/// input and decode again to the same frame; every strict prefix must be an error (except
/// that a `Data` frame cut after at least one payload byte is a shorter `Data` frame); the
/// zero-copy `decode_data` must agree with `decode`.
pub fn peer_frame(data: &[u8]) {
    let decoded = Frame::decode(data);
    let fast = Frame::decode_data(data);
    assert_eq!(decoded.is_ok(), fast.is_ok(), "decode and decode_data disagree");
    let Ok(frame) = decoded else {
        return;
    };
    let mut wire = Vec::new();
    frame.encode(&mut wire);
    assert_eq!(wire, data, "re-encoding differs from the decoded bytes");
    assert_eq!(Frame::decode(&wire), Ok(frame.clone()));
    let shortest_valid = match (&frame, fast) {
        (Frame::Data(bytes), Ok(Some(borrowed))) => {
            assert_eq!(bytes.as_slice(), borrowed);
            DATA_HEADER_LEN + 1
        }
        (Frame::Data(_), other) => panic!("decode_data missed a data frame: {other:?}"),
        (_, other) => {
            assert_eq!(other, Ok(None));
            wire.len()
        }
    };
    for cut in 0..shortest_valid {
        assert!(Frame::decode(&wire[..cut]).is_err(), "prefix of {cut} bytes decoded");
    }
}
