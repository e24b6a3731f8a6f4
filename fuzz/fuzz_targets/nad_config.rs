//! libFuzzer target: [`common::nad_config`].
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::nad_config(data));
