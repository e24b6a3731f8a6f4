//! An AdmissionReview body as the server receives it on POST /validate: decoded (anything
//! but an admission.k8s.io/v1 request is an error, never a panic), admitted, and the
//! response encoded and read back with the request's uid.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use meta_cni_webhook::admission::admit;
use meta_cni_webhook::review;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    let Ok(decoded) = review::decode(data) else {
        return;
    };
    static WORLD: OnceLock<(meta_cni_webhook::admission::Settings, meta_cni_webhook::world::Objects)> =
        OnceLock::new();
    let (settings, world) = WORLD.get_or_init(|| (common::settings(), common::world()));
    let decision = admit(settings, world, &decoded.request);
    common::check(&decision);
    let body = review::encode(&decoded.uid, &decision);
    let back: serde_json::Value =
        serde_json::from_slice(&body).expect("the encoded response is JSON");
    assert_eq!(back["response"]["uid"], decoded.uid.as_str());
    assert_eq!(back["response"]["allowed"], decision.allowed);
});
