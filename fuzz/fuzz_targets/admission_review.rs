//! libFuzzer target: [`common::admission_review`].
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::admission_review(data));
