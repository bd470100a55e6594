//! Stable-Rust smoke test: runs every seed in `corpus/<target>/` through its fuzz check,
//! together with every prefix of the seed and a few deterministic byte mutations. This is
//! what CI runs when libFuzzer (nightly flags) is not available.

use std::fs;
use std::path::Path;

type Check = fn(&[u8]);

/// Mutations per seed: enough to leave the happy path, cheap enough for CI.
const MUTATIONS: u64 = 20_000;
/// The Noise targets run a handshake (four X25519 operations) per input.
const NOISE_MUTATIONS: u64 = 300;
/// A config is built per input (TOML, validation, a host name lookup).
const CONFIG_MUTATIONS: u64 = 3_000;

const TARGETS: &[(&str, Check, u64)] = &[
    ("socks5_greeting", booster_proto_fuzz::socks5_greeting, MUTATIONS),
    ("socks5_request", booster_proto_fuzz::socks5_request, MUTATIONS),
    ("socks5_udp", booster_proto_fuzz::socks5_udp, MUTATIONS),
    ("http_request_head", booster_proto_fuzz::http_request_head, MUTATIONS),
    ("http_response_head", booster_proto_fuzz::http_response_head, MUTATIONS),
    ("http_body_chunked", booster_proto_fuzz::http_body_chunked, MUTATIONS),
    ("peer_frame", booster_proto_fuzz::peer_frame, MUTATIONS),
    ("range_planner", booster_proto_fuzz::range_planner, MUTATIONS),
    ("bond_frame", booster_proto_fuzz::bond_frame, MUTATIONS),
    ("bond_link", booster_proto_fuzz::bond_link, MUTATIONS),
    ("noise_handshake", booster_proto_fuzz::noise_handshake, NOISE_MUTATIONS),
    ("noise_transport", booster_proto_fuzz::noise_transport, NOISE_MUTATIONS),
    ("config", booster_proto_fuzz::config, CONFIG_MUTATIONS),
    ("speedtest_jobs", booster_proto_fuzz::speedtest_jobs, MUTATIONS),
];

#[test]
fn replay_seed_corpus() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut executions = 0u64;
    for &(target, check, mutations) in TARGETS {
        // CI replays a debug build (it shares the main workspace's artifacts): a tenth of the
        // mutations keeps it to a minute or two; `--release` runs them all.
        let mutations = if cfg!(debug_assertions) { mutations / 10 } else { mutations };
        let mut seeds: Vec<_> = fs::read_dir(corpus.join(target))
            .unwrap_or_else(|e| panic!("corpus/{target}: {e}"))
            .map(|entry| entry.expect("corpus entry").path())
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "corpus/{target} has no seeds");
        for path in seeds {
            let seed = fs::read(&path).expect("read seed");
            for cut in 0..=seed.len() {
                check(&seed[..cut]);
            }
            let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ seed.len() as u64;
            for _ in 0..mutations {
                let mut input = seed.clone();
                mutate(&mut input, &mut rng);
                check(&input);
            }
            executions += seed.len() as u64 + 1 + mutations;
        }
    }
    println!("replayed {executions} inputs");
}

fn next(rng: &mut u64) -> u64 {
    // xorshift64: deterministic, so a failure reproduces.
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

fn mutate(input: &mut Vec<u8>, rng: &mut u64) {
    for _ in 0..=next(rng) % 3 {
        let at = if input.is_empty() {
            0
        } else {
            (next(rng) % input.len() as u64) as usize
        };
        let byte = next(rng) as u8;
        match next(rng) % 4 {
            0 if !input.is_empty() => input[at] = byte,
            1 if !input.is_empty() => {
                input.remove(at);
            }
            2 => input.insert(at, byte),
            _ => input.insert(at, *b"\r\n:; 0\x00\xff".get(byte as usize % 8).unwrap_or(&0)),
        }
    }
}
