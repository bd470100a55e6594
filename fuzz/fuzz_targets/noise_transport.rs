#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| booster_proto_fuzz::noise_transport(data));
