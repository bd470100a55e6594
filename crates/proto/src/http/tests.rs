//! Property tests for heads and body tracking; byte vectors live in `tests/vectors.rs`.

use super::*;
use proptest::prelude::*;

const TOKEN: &str = "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,16}";
/// Field values as `httparse` returns them: no leading or trailing whitespace.
const VALUE: &str = "([!-~]([ !-~]{0,30}[!-~])?)?";

fn arb_headers() -> impl Strategy<Value = Vec<Header>> {
    proptest::collection::vec((TOKEN, VALUE).prop_map(|(name, value)| Header::new(name, value)), 0..20)
}

fn arb_request() -> impl Strategy<Value = RequestHead> {
    (TOKEN, "[!-~]{1,40}", 0u8..=1, arb_headers()).prop_map(|(method, target, version_minor, headers)| RequestHead {
        method,
        target,
        version_minor,
        headers,
    })
}

fn arb_response() -> impl Strategy<Value = ResponseHead> {
    (
        0u8..=1,
        100u16..=999,
        "([A-Za-z]([A-Za-z ]{0,20}[A-Za-z])?)?",
        arb_headers(),
    )
        .prop_map(|(version_minor, status, reason, headers)| ResponseHead {
            version_minor,
            status,
            reason,
            headers,
        })
}

/// A chunked body: chunks of data (each with an optional extension) and trailer fields.
fn arb_chunked() -> impl Strategy<Value = Vec<u8>> {
    let chunk = (proptest::collection::vec(any::<u8>(), 1..40), proptest::bool::ANY);
    (
        proptest::collection::vec(chunk, 0..6),
        proptest::collection::vec((TOKEN, VALUE), 0..3),
    )
        .prop_map(|(chunks, trailers)| {
            let mut body = Vec::new();
            for (data, with_ext) in chunks {
                body.extend_from_slice(format!("{:X}", data.len()).as_bytes());
                if with_ext {
                    body.extend_from_slice(b" ; name=\"va;lue\"");
                }
                body.extend_from_slice(b"\r\n");
                body.extend_from_slice(&data);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n");
            for (name, value) in trailers {
                body.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
            body.extend_from_slice(b"\r\n");
            body
        })
}

/// Feeds `input` in pieces ending at `cuts`; returns total consumed and whether done.
fn feed_in_pieces(framing: BodyFraming, input: &[u8], cuts: &[usize]) -> (usize, bool) {
    let mut tracker = BodyTracker::new(framing);
    let mut consumed = 0;
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let cut = cut.clamp(start, input.len());
        let piece = &input[start..cut];
        let used = tracker.feed(piece).expect("valid body");
        assert!(used <= piece.len());
        consumed += used;
        if used < piece.len() {
            assert!(tracker.is_done(), "stopped early without being done");
            break;
        }
        start = cut;
    }
    (consumed, tracker.is_done())
}

proptest! {
    #[test]
    fn request_head_round_trip(head in arb_request()) {
        let mut wire = Vec::new();
        head.encode(&mut wire);
        for cut in 0..wire.len() {
            prop_assert_eq!(RequestHead::decode(&wire[..cut], MAX_HEAD), Ok(None), "cut {}", cut);
        }
        let mut longer = wire.clone();
        longer.extend_from_slice(b"body bytes");
        prop_assert_eq!(RequestHead::decode(&longer, MAX_HEAD), Ok(Some((head, wire.len()))));
    }

    #[test]
    fn response_head_round_trip(head in arb_response()) {
        let mut wire = Vec::new();
        head.encode(&mut wire);
        for cut in 0..wire.len() {
            prop_assert_eq!(ResponseHead::decode(&wire[..cut], MAX_HEAD), Ok(None), "cut {}", cut);
        }
        prop_assert_eq!(ResponseHead::decode(&wire, MAX_HEAD), Ok(Some((head, wire.len()))));
    }

    #[test]
    fn head_limit_is_exact(head in arb_request()) {
        let mut wire = Vec::new();
        head.encode(&mut wire);
        prop_assert!(RequestHead::decode(&wire, wire.len()).unwrap().is_some());
        prop_assert_eq!(RequestHead::decode(&wire, wire.len() - 1), Err(HttpError::TooLarge));
    }

    #[test]
    fn chunked_split_independent(
        body in arb_chunked(),
        next in proptest::collection::vec(any::<u8>(), 0..16),
        mut cuts in proptest::collection::vec(0usize..400, 0..8),
    ) {
        let mut input = body.clone();
        input.extend_from_slice(&next);
        cuts.sort_unstable();
        prop_assert_eq!(feed_in_pieces(BodyFraming::Chunked, &input, &[]), (body.len(), true));
        prop_assert_eq!(feed_in_pieces(BodyFraming::Chunked, &input, &cuts), (body.len(), true));
        let every_byte: Vec<usize> = (1..input.len()).collect();
        prop_assert_eq!(
            feed_in_pieces(BodyFraming::Chunked, &input, &every_byte),
            (body.len(), true)
        );
        // Any strict prefix leaves the tracker waiting, never failed or done.
        for cut in 0..body.len() {
            let mut tracker = BodyTracker::new(BodyFraming::Chunked);
            prop_assert_eq!(tracker.feed(&body[..cut]), Ok(cut));
            prop_assert!(!tracker.is_done());
        }
    }

    #[test]
    fn length_split_independent(
        len in 0u64..300,
        extra in 0usize..20,
        mut cuts in proptest::collection::vec(0usize..400, 0..8),
    ) {
        let input = vec![b'x'; len as usize + extra];
        cuts.sort_unstable();
        prop_assert_eq!(
            feed_in_pieces(BodyFraming::Length(len), &input, &cuts),
            (len as usize, true)
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = RequestHead::decode(&bytes, MAX_HEAD);
        let _ = RequestHead::decode(&bytes, 64);
        let _ = ResponseHead::decode(&bytes, MAX_HEAD);
        let mut tracker = BodyTracker::new(BodyFraming::Chunked);
        let _ = tracker.feed(&bytes);
        let _ = tracker.feed(&bytes);
    }

    #[test]
    fn decoded_requests_answer_every_question(
        target in prop_oneof![
            "http://[a-z.]{1,10}(:[0-9]{0,5})?([/?][!-~]{0,20})?",
            "[a-z.]{1,10}:[0-9]{1,5}",
            "[ -~]{0,40}",
        ],
        method in prop_oneof![Just("GET".to_owned()), Just("CONNECT".to_owned()), TOKEN],
        mut headers in arb_headers(),
        hop in proptest::collection::vec(
            prop_oneof![
                Just("Content-Length"), Just("Transfer-Encoding"), Just("Host"),
                Just("Connection"), Just("TE"), Just("X-Custom"),
            ],
            0..4,
        ),
    ) {
        // Name framing headers as connection options: stripping must not change framing.
        headers.push(Header::new("Connection", hop.join(", ")));
        headers.extend(hop.iter().map(|name| Header::new(*name, "1")));
        let head = RequestHead { method, target, version_minor: 1, headers };
        let _ = head.body_framing();
        let _ = head.keep_alive();
        if let Ok(target) = head.proxy_target() {
            let upstream = head.to_origin_form(&target);
            prop_assert_eq!(upstream.header("host").map(<[u8]>::to_vec),
                Some(target.host_header().into_bytes()));
            prop_assert_eq!(upstream.body_framing(), head.body_framing());
        }
    }
}

#[test]
fn one_byte_at_a_time_reports_error_at_the_bad_byte() {
    let mut tracker = BodyTracker::new(BodyFraming::Chunked);
    for &byte in b"5\r\nhello" {
        assert_eq!(tracker.feed(&[byte]), Ok(1));
    }
    assert_eq!(
        tracker.feed(b"X"),
        Err(HttpError::BadChunk("chunk data not followed by CRLF"))
    );
    // Sticky: a broken stream stays broken.
    assert!(tracker.feed(b"\r\n").is_err());
}

#[test]
fn chunk_line_and_trailer_bounds() {
    let mut long_line = b"1;".to_vec();
    long_line.resize(MAX_CHUNK_LINE + 10, b'a');
    let mut tracker = BodyTracker::new(BodyFraming::Chunked);
    assert_eq!(
        tracker.feed(&long_line),
        Err(HttpError::BadChunk("chunk-size line too long"))
    );

    let mut zeros = vec![b'0'; MAX_CHUNK_LINE + 10];
    zeros.push(b'1');
    let mut tracker = BodyTracker::new(BodyFraming::Chunked);
    assert!(tracker.feed(&zeros).is_err());

    let mut tracker = BodyTracker::new(BodyFraming::Chunked);
    assert!(tracker.feed(b"0\r\n").is_ok());
    let field = b"X-A: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut result = Ok(0);
    for _ in 0..=MAX_TRAILERS / field.len() {
        result = tracker.feed(field);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(HttpError::BadChunk("trailer section too large")));
}

#[test]
fn chunk_size_overflow() {
    let mut tracker = BodyTracker::new(BodyFraming::Chunked);
    assert_eq!(tracker.feed(b"FFFFFFFFFFFFFFFF\r\n").map(|_| ()), Ok(()));
    let mut tracker = BodyTracker::new(BodyFraming::Chunked);
    assert_eq!(
        tracker.feed(b"10000000000000000\r\n"),
        Err(HttpError::BadChunk("chunk size overflows u64"))
    );
}
