#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| booster_proto_fuzz::bond_link(data));
