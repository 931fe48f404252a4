//! `[core] parallelism`: what to set, and what a configured value does to the worker queues.
//!
//! Airflow's executor keeps `queued + running ≤ parallelism` (BaseExecutor's open slots, per
//! scheduler), so parallelism bounds the demand the formula ever sees. Two published
//! definitions (FACTS §5):
//!
//! - [`ParallelismMode::Max`] (default, Astro's current one): (Σ maxWorkers) × (Σ
//!   maxTasksPerWorker). A fixed number: it never stops a worker queue from reaching its
//!   maximum.
//! - [`ParallelismMode::Ready`] (the seed's): (Σ ready workers) × (Σ maxTasksPerWorker), from
//!   the workers Kubernetes reports ready. It has a fixed point: with one worker queue of W
//!   ready workers, parallelism W × c caps queued + running at W × c, so ceil(demand / c) never
//!   exceeds W and the queue stays at its current size unless something else adds workers. It
//!   is only safe where the product of sums exceeds each queue's own W × c by a margin (several
//!   queues), and must be re-applied (a scheduler restart) to follow the workers.

use serde::Serialize;

/// Which definition `explain`, `/metrics` and the demo recommend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParallelismMode {
    /// (Σ maxWorkers) × (Σ maxTasksPerWorker): Astro's current definition, a fixed number.
    #[default]
    Max,
    /// (Σ ready workers) × (Σ maxTasksPerWorker): the seed's definition, from the workers
    /// Kubernetes reports ready (desired workers when no cluster is watched).
    Ready,
}

/// One worker queue's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSize {
    pub max_tasks_per_worker: u32,
    pub max_workers: u32,
    /// Ready workers Kubernetes reports, `None` without a cluster.
    pub ready_workers: Option<u32>,
    /// What the formula asks for.
    pub desired_workers: u32,
}

/// The recommended parallelism and how it was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    pub mode: ParallelismMode,
    pub workers: u64,
    pub tasks_per_worker: u64,
    pub value: u64,
    /// Which worker count went in: `maxWorkers`, `ready workers` or `desired workers`.
    pub workers_are: &'static str,
}

impl Recommendation {
    /// `parallelism (max) = 10 max workers x 16 tasks per worker (sum) = 160`, no newline.
    pub fn line(&self) -> String {
        format!(
            "parallelism ({}) = {} {} x {} tasks per worker (sum) = {}",
            match self.mode {
                ParallelismMode::Max => "max",
                ParallelismMode::Ready => "ready",
            },
            self.workers,
            self.workers_are,
            self.tasks_per_worker,
            self.value
        )
    }
}

/// The parallelism to set as `AIRFLOW__CORE__PARALLELISM` under `mode`.
pub fn recommend(mode: ParallelismMode, queues: &[QueueSize]) -> Recommendation {
    let tasks_per_worker: u64 = queues
        .iter()
        .map(|q| u64::from(q.max_tasks_per_worker))
        .sum();
    let any_ready = queues.iter().any(|q| q.ready_workers.is_some());
    let (workers, workers_are): (u64, &'static str) = match mode {
        ParallelismMode::Max => (
            queues.iter().map(|q| u64::from(q.max_workers)).sum(),
            "max workers",
        ),
        ParallelismMode::Ready if any_ready => (
            queues
                .iter()
                .map(|q| u64::from(q.ready_workers.unwrap_or(0)))
                .sum(),
            "ready workers",
        ),
        ParallelismMode::Ready => (
            queues.iter().map(|q| u64::from(q.desired_workers)).sum(),
            "desired workers",
        ),
    };
    Recommendation {
        mode,
        workers,
        tasks_per_worker,
        value: workers.saturating_mul(tasks_per_worker),
        workers_are,
    }
}

/// The most workers a worker queue can get while Airflow's parallelism is `parallelism`
/// (queued + running never exceed it): `ceil(parallelism / maxTasksPerWorker)`, or `None`
/// when that does not cap `maxWorkers` (or parallelism is 0, unlimited).
pub fn capped_workers(
    parallelism: u64,
    max_tasks_per_worker: u32,
    max_workers: u32,
) -> Option<u32> {
    if parallelism == 0 {
        return None;
    }
    let cap = parallelism.div_ceil(u64::from(max_tasks_per_worker.max(1)));
    let cap = u32::try_from(cap).unwrap_or(u32::MAX);
    (cap < max_workers).then_some(cap)
}

/// Tasks wait as `scheduled` while queued + running (over every queue) sits at the configured
/// parallelism: the scheduler cannot queue them, and the formula cannot see them.
pub fn starved(parallelism: Option<u64>, queued_and_running: u64, scheduled: u64) -> bool {
    match parallelism {
        Some(p) if p > 0 => scheduled > 0 && queued_and_running >= p,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(per: u32, max: u32, ready: Option<u32>, desired: u32) -> QueueSize {
        QueueSize {
            max_tasks_per_worker: per,
            max_workers: max,
            ready_workers: ready,
            desired_workers: desired,
        }
    }

    #[test]
    fn max_mode_is_a_fixed_number() {
        // Idle at night or busy: the same value.
        for ready in [None, Some(0), Some(3)] {
            let r = recommend(
                ParallelismMode::Max,
                &[q(16, 10, ready, 1), q(4, 5, ready, 0)],
            );
            // (10 + 5) × (16 + 4)
            assert_eq!(r.value, 300);
            assert_eq!(
                r.line(),
                "parallelism (max) = 15 max workers x 20 tasks per worker (sum) = 300"
            );
        }
        assert_eq!(recommend(ParallelismMode::Max, &[]).value, 0);
    }

    #[test]
    fn ready_mode_follows_ready_workers_and_falls_back_to_desired() {
        let r = recommend(
            ParallelismMode::Ready,
            &[q(16, 10, Some(3), 5), q(4, 5, None, 2)],
        );
        assert_eq!(
            (r.workers, r.value, r.workers_are),
            (3, 60, "ready workers")
        );
        let r = recommend(
            ParallelismMode::Ready,
            &[q(16, 10, None, 5), q(4, 5, None, 2)],
        );
        assert_eq!(
            (r.workers, r.value, r.workers_are),
            (7, 140, "desired workers")
        );
    }

    #[test]
    fn the_seeds_definition_has_a_fixed_point() {
        // One queue, 2 ready workers × 16: Airflow queues at most 32, so the formula asks for
        // ceil(32 / 16) = 2 whatever waits: the queue never grows.
        let p = recommend(ParallelismMode::Ready, &[q(16, 10, Some(2), 2)]).value;
        let demand_seen = 1000u64.min(p);
        assert_eq!(
            crate::scaler::model::sizing::desired_workers(demand_seen, 16, 1, 10),
            2
        );
        // Astro's definition lets it reach 10.
        let p = recommend(ParallelismMode::Max, &[q(16, 10, Some(2), 2)]).value;
        assert_eq!(
            crate::scaler::model::sizing::desired_workers(1000u64.min(p), 16, 1, 10),
            10
        );
    }

    #[test]
    fn caps() {
        // Airflow's default 32 caps 10 workers × 16 at 2.
        assert_eq!(capped_workers(32, 16, 10), Some(2));
        assert_eq!(capped_workers(33, 16, 10), Some(3));
        assert_eq!(capped_workers(160, 16, 10), None);
        assert_eq!(capped_workers(0, 16, 10), None);
        assert_eq!(capped_workers(u64::MAX, 1, 10), None);
    }

    #[test]
    fn starvation() {
        assert!(starved(Some(32), 32, 1));
        assert!(!starved(Some(32), 31, 5));
        assert!(!starved(Some(32), 32, 0));
        assert!(!starved(None, 1000, 5));
        assert!(!starved(Some(0), 1000, 5));
    }
}
