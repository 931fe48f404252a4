//! The scaler's pure model: no I/O, no async.
//!
//! - [`worker_queue`]: worker queues (the file and its validation rules).
//! - [`metadata`]: a KEDA trigger's metadata resolved against the declared worker queues.
//! - [`sizing`]: the sizing formulas (desired workers) and the `explain` plan.
//! - [`parallelism`]: the `[core] parallelism` to set, caps and starvation.
//! - [`target`]: a worker queue's `scaleTargetRef`.
//! - [`observed`], [`pods`], [`drift`]: what Kubernetes shows of the workers, which pod runs
//!   which task (and its deletion cost), drift and its likely cause.

pub mod drift;
pub mod metadata;
pub mod observed;
pub mod parallelism;
pub mod pods;
pub mod sizing;
pub mod target;
pub mod worker_queue;
