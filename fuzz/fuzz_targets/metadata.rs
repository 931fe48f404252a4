//! Fuzz target: trigger metadata (`metadata::parse`) and the worker-queue file
//! (`WorkerQueues::parse`). The body and the input layout are in `fuzz/check.rs`, which the CI
//! test `tests/proof_hostile.rs` also runs over `fuzz/seeds/metadata`.
//!
//! Run (see docs/proof.md): `RUSTC_BOOTSTRAP=1 cargo fuzz run metadata fuzz/corpus/metadata
//! fuzz/seeds/metadata -- -dict=fuzz/metadata.dict -max_total_time=300`
#![no_main]

#[path = "../check.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
