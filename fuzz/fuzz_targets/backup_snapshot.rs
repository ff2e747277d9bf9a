#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| haneul_fuzz::backup_snapshot(data));
