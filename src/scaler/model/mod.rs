//! The scaler's pure model: no I/O, no async.
//!
//! - [`worker_queue`]: worker queues (the file and its validation rules).
//! - [`metadata`]: a KEDA trigger's metadata resolved against the declared worker queues.
//! - [`sizing`]: the sizing formulas (desired workers, parallelism) and the `explain` plan.

pub mod metadata;
pub mod sizing;
pub mod worker_queue;
