//! The fuzz corpora as a regression suite: every input of `fuzz/corpus/TARGET/` (the
//! seeds from the fixture tables and what libFuzzer kept for new coverage) runs through the
//! fuzz target's own body (`fuzz/fuzz_targets/common.rs`), which panics on a malformed
//! decision. libFuzzer itself runs only under scripts/fuzz.sh.

#[path = "../../fuzz/fuzz_targets/common.rs"]
mod common;

use std::path::PathBuf;

fn corpus(target: &str, body: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let r = std::panic::catch_unwind(|| body(&data));
        assert!(
            r.is_ok(),
            "fuzz/corpus/{target}/{}: panicked",
            path.display()
        );
        n += 1;
    }
    // The seeds alone are over a hundred per target (fuzz/seed.py).
    assert!(n >= 100, "fuzz/corpus/{target}: only {n} inputs");
}

#[test]
fn annotation_corpus() {
    corpus("annotation", common::annotation);
}

#[test]
fn nad_config_corpus() {
    corpus("nad_config", common::nad_config);
}

#[test]
fn admission_review_corpus() {
    corpus("admission_review", common::admission_review);
}
