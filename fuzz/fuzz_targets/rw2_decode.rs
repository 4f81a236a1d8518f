//! Remote write 2.0 bodies: snappy, protobuf, validation, limits, chunking.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::run(promlink_codec::Protocol::V2, data));
