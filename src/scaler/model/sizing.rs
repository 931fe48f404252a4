//! Astro's sizing formulas, as pure functions.
//!
//! - workers of a worker queue = ceil((queued + running) / maxTasksPerWorker), clamped to
//!   `minWorkers..=maxWorkers`;
//! - parallelism = (Σ workers over all worker queues) × (Σ maxTasksPerWorker).
//!
//! KEDA/HPA get the unclamped inputs (value = queued + running, `AverageValue` target =
//! maxTasksPerWorker) and the ScaledObject's replica bounds do the clamp; these functions are
//! what `explain`, the demo and the parallelism figure use.

use serde::Serialize;

use crate::{
    scaler::model::worker_queue::{WorkerQueue, WorkerQueues},
    scaler::snapshot::{Demand, Snapshot},
};

/// `clamp(ceil(tasks / max_tasks_per_worker), min, max)`. `max_tasks_per_worker` 0 is treated
/// as 1 (validation never lets it through).
pub fn desired_workers(tasks: u64, max_tasks_per_worker: u32, min: u32, max: u32) -> u32 {
    let per = u64::from(max_tasks_per_worker.max(1));
    let raw = tasks.div_ceil(per);
    let raw = u32::try_from(raw).unwrap_or(u32::MAX);
    raw.clamp(min, max.max(min))
}

/// `(Σ workers) × (Σ max_tasks_per_worker)` over `(workers, max_tasks_per_worker)` pairs.
pub fn parallelism(queues: impl IntoIterator<Item = (u32, u32)>) -> u64 {
    let (workers, slots) = queues
        .into_iter()
        .fold((0u64, 0u64), |(w, s), (workers, per)| {
            (w + u64::from(workers), s + u64::from(per))
        });
    workers.saturating_mul(slots)
}

/// Whether KEDA should consider the worker queue active (scale from zero).
pub fn is_active(demand: Demand, activation_tasks: u64) -> bool {
    demand.total() > activation_tasks
}

/// One worker queue's line in `explain` and the demo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuePlan {
    pub worker_queue: String,
    pub queues: Vec<String>,
    pub queued: u64,
    pub running: u64,
    pub max_tasks_per_worker: u32,
    pub min_workers: u32,
    pub max_workers: u32,
    pub desired_workers: u32,
    pub active: bool,
    pub metric_name: String,
}

impl QueuePlan {
    pub fn new(wq: &WorkerQueue, demand: Demand) -> Self {
        Self {
            worker_queue: wq.name.clone().unwrap_or_else(|| wq.queues.join(",")),
            queues: wq.queues.clone(),
            queued: demand.queued,
            running: demand.running,
            max_tasks_per_worker: wq.max_tasks_per_worker,
            min_workers: wq.min_workers,
            max_workers: wq.max_workers,
            desired_workers: desired_workers(
                demand.total(),
                wq.max_tasks_per_worker,
                wq.min_workers,
                wq.max_workers,
            ),
            active: is_active(demand, wq.activation_tasks),
            metric_name: wq.metric_name(),
        }
    }
}

/// Every worker queue's plan plus the deployment's parallelism.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub worker_queues: Vec<QueuePlan>,
    pub parallelism: u64,
}

impl Plan {
    pub fn compute(declared: &WorkerQueues, snapshot: &Snapshot) -> Self {
        let worker_queues: Vec<QueuePlan> = declared
            .iter()
            .map(|wq| QueuePlan::new(wq, snapshot.demand(&wq.selector())))
            .collect();
        let parallelism = parallelism(
            worker_queues
                .iter()
                .map(|q| (q.desired_workers, q.max_tasks_per_worker)),
        );
        Self {
            worker_queues,
            parallelism,
        }
    }

    /// Renders the plan as a fixed-width text table.
    pub fn to_table(&self) -> String {
        let mut rows = vec![
            [
                "WORKER QUEUE",
                "AIRFLOW QUEUES",
                "QUEUED",
                "RUNNING",
                "TASKS/WORKER",
                "MIN-MAX",
                "DESIRED WORKERS",
                "ACTIVE",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for q in &self.worker_queues {
            rows.push(vec![
                q.worker_queue.clone(),
                q.queues.join(","),
                q.queued.to_string(),
                q.running.to_string(),
                q.max_tasks_per_worker.to_string(),
                format!("{}-{}", q.min_workers, q.max_workers),
                q.desired_workers.to_string(),
                q.active.to_string(),
            ]);
        }
        let mut out = render_table(&rows);
        out.push_str(&parallelism_line(
            self.worker_queues
                .iter()
                .map(|q| (q.desired_workers, q.max_tasks_per_worker)),
        ));
        out
    }
}

/// `parallelism = W workers x S tasks per worker (sum) = P`, with a trailing newline.
pub fn parallelism_line(queues: impl IntoIterator<Item = (u32, u32)> + Clone) -> String {
    let workers: u64 = queues.clone().into_iter().map(|(w, _)| u64::from(w)).sum();
    let slots: u64 = queues.clone().into_iter().map(|(_, s)| u64::from(s)).sum();
    format!(
        "parallelism = {workers} workers x {slots} tasks per worker (sum) = {}\n",
        parallelism(queues)
    )
}

/// Left-aligned columns separated by two spaces; the first row is the header.
pub fn render_table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}", w = *w))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaler::snapshot::{AirflowSchema, QueueCount, TaskState};

    #[test]
    fn desired_workers_table() {
        // (tasks, per worker, min, max, expected)
        let cases = [
            (0, 16, 1, 10, 1),
            (0, 16, 0, 10, 0),
            (1, 16, 0, 10, 1),
            (16, 16, 1, 10, 1),
            (17, 16, 1, 10, 2),
            (160, 16, 1, 10, 10),
            (161, 16, 1, 10, 10),
            (10_000, 16, 1, 10, 10),
            (5, 1, 1, 10, 5),
            (u64::MAX, 1, 0, u32::MAX, u32::MAX),
            (3, 0, 1, 10, 3),
        ];
        for (tasks, per, min, max, want) in cases {
            assert_eq!(
                desired_workers(tasks, per, min, max),
                want,
                "tasks {tasks} per {per} bounds {min}-{max}"
            );
        }
    }

    #[test]
    fn parallelism_is_product_of_sums() {
        assert_eq!(parallelism([]), 0);
        assert_eq!(parallelism([(2, 16)]), 32);
        // Astro: 2 + 3 workers, 16 + 4 tasks per worker → 5 × 20.
        assert_eq!(parallelism([(2, 16), (3, 4)]), 100);
        assert_eq!(parallelism([(0, 16), (0, 4)]), 0);
    }

    #[test]
    fn activation_threshold() {
        let d = |q, r| Demand {
            queued: q,
            running: r,
        };
        assert!(!is_active(d(0, 0), 0));
        assert!(is_active(d(1, 0), 0));
        assert!(is_active(d(0, 1), 0));
        assert!(!is_active(d(2, 1), 3));
        assert!(is_active(d(2, 2), 3));
    }

    #[test]
    fn plan_over_declared_queues() {
        let declared = WorkerQueues::parse(
            "workerQueues:\n  - name: default\n  - name: ml\n    queues: [ml]\n    maxTasksPerWorker: 4\n    minWorkers: 0\n    maxWorkers: 5\n",
        )
        .unwrap();
        let snap = Snapshot::new(
            AirflowSchema::Airflow2,
            vec![
                QueueCount {
                    queue: "default".into(),
                    state: TaskState::Queued,
                    executor: None,
                    count: 20,
                },
                QueueCount {
                    queue: "default".into(),
                    state: TaskState::Running,
                    executor: None,
                    count: 16,
                },
                QueueCount {
                    queue: "ml".into(),
                    state: TaskState::Queued,
                    executor: None,
                    count: 9,
                },
            ],
        );
        let plan = Plan::compute(&declared, &snap);
        let got: Vec<_> = plan
            .worker_queues
            .iter()
            .map(|q| {
                (
                    q.worker_queue.as_str(),
                    q.queued,
                    q.running,
                    q.desired_workers,
                )
            })
            .collect();
        assert_eq!(got, vec![("default", 20, 16, 3), ("ml", 9, 0, 3)]);
        // (3 + 3) workers × (16 + 4) = 120
        assert_eq!(plan.parallelism, 120);
        let table = plan.to_table();
        assert!(table.contains("DESIRED WORKERS"));
        assert!(table.contains("= 120"));
    }
}
