#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| haneul_fuzz::pixel_frame(data));
