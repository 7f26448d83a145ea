#![no_main]
// The body lives in `ockam_fuzz` (also run on stable by its tests).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ockam_fuzz::stream_consumer(data));
