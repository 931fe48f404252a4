//! Astro's sizing formulas, as pure functions.
//!
//! - workers of a worker queue = ceil((queued + running) / maxTasksPerWorker), clamped to
//!   `minWorkers..=maxWorkers`;
//! - parallelism: see [`super::parallelism`] (two definitions, Astro's current one by default).
//!
//! KEDA/HPA get the unclamped inputs (value = queued + running, `AverageValue` target =
//! maxTasksPerWorker) and the ScaledObject's replica bounds do the clamp; these functions are
//! what `explain`, the demo and the parallelism figure use.

use serde::Serialize;

use crate::{
    scaler::model::{
        drift::{self, DriftInputs, DriftReport},
        observed::{ClusterView, WorkerObservation},
        parallelism::{self, ParallelismMode, QueueSize, Recommendation},
        target::TargetKind,
        worker_queue::{WorkerQueue, WorkerQueues},
    },
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

/// Whether KEDA should consider the worker queue active (scale from zero).
pub fn is_active(demand: Demand, activation_tasks: u64) -> bool {
    demand.total() > activation_tasks
}

/// Whether the pod-deletion cost protects a worker queue's busy workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DeletionCost {
    /// Kept on the pods of a Deployment.
    Kept,
    /// `--pod-deletion-cost=false` or no cluster.
    Off,
    /// No `scaleTargetRef` in the worker-queue file.
    NoTarget,
    /// StatefulSet workers cannot be chosen: the highest ordinal goes.
    StatefulSet,
}

impl DeletionCost {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Kept => "busy workers removed last (pod-deletion cost)",
            Self::Off => "off",
            Self::NoTarget => "no scaleTargetRef",
            Self::StatefulSet => {
                "StatefulSet: cannot choose which worker goes (highest ordinal first); run the \
                 workers as a Deployment"
            }
        }
    }
}

/// How a plan is made besides the snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    pub parallelism_mode: ParallelismMode,
    /// Airflow's configured `[core] parallelism`, when known.
    pub airflow_parallelism: Option<u64>,
    /// Pod-deletion costs are kept (the flag; a cluster is needed too).
    pub deletion_cost: bool,
    /// Tolerance 0 is configured on the ScaledObjects.
    pub exact_tolerance: bool,
}

/// One worker queue's line in `explain` and the demo.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuePlan {
    pub worker_queue: String,
    pub queues: Vec<String>,
    pub scheduled: u64,
    pub queued: u64,
    pub running: u64,
    pub max_tasks_per_worker: u32,
    pub min_workers: u32,
    pub max_workers: u32,
    pub desired_workers: u32,
    pub active: bool,
    pub metric_name: String,
    /// `Kind/name` of the workers' workload.
    pub target: Option<String>,
    /// What Kubernetes shows (absent without a cluster).
    pub hpa_desired_workers: Option<u32>,
    pub hpa_current_workers: Option<u32>,
    pub ready_workers: Option<u32>,
    pub deletion_cost: DeletionCost,
    /// The most workers Airflow's parallelism lets this queue reach, when it caps maxWorkers.
    pub parallelism_cap: Option<u32>,
    /// Off the formula, and why.
    pub drift: Option<DriftReport>,
    /// Why the cluster could not be read for this queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_error: Option<String>,
}

impl QueuePlan {
    pub fn new(wq: &WorkerQueue, demand: Demand) -> Self {
        Self {
            worker_queue: wq.name.clone().unwrap_or_else(|| wq.queues.join(",")),
            queues: wq.queues.clone(),
            scheduled: demand.scheduled,
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
            target: wq.scale_target_ref.as_ref().map(ToString::to_string),
            hpa_desired_workers: None,
            hpa_current_workers: None,
            ready_workers: None,
            deletion_cost: if wq.scale_target_ref.is_some() {
                DeletionCost::Off
            } else {
                DeletionCost::NoTarget
            },
            parallelism_cap: None,
            drift: None,
            cluster_error: None,
        }
    }

    fn sizes(&self) -> QueueSize {
        QueueSize {
            max_tasks_per_worker: self.max_tasks_per_worker,
            max_workers: self.max_workers,
            ready_workers: self.ready_workers,
            desired_workers: self.desired_workers,
        }
    }
}

/// Every worker queue's plan plus the parallelism to set.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub worker_queues: Vec<QueuePlan>,
    /// The value to set as `AIRFLOW__CORE__PARALLELISM`.
    pub parallelism: Recommendation,
    /// Airflow's configured parallelism, when known.
    pub airflow_parallelism: Option<u64>,
    /// Tasks wait as `scheduled` while queued + running (all queues) is at the configured
    /// parallelism.
    pub starved: bool,
    /// Queued + running over every queue and executor (what parallelism bounds).
    pub queued_and_running: u64,
}

impl Plan {
    /// The plan from the database alone.
    pub fn compute(declared: &WorkerQueues, snapshot: &Snapshot) -> Self {
        Self::compute_with(declared, snapshot, None, PlanOptions::default())
    }

    /// The plan with what Kubernetes shows (`cluster`) and the parallelism settings.
    pub fn compute_with(
        declared: &WorkerQueues,
        snapshot: &Snapshot,
        cluster: Option<&ClusterView>,
        options: PlanOptions,
    ) -> Self {
        let totals = snapshot.totals();
        let starved = parallelism::starved(
            options.airflow_parallelism,
            totals.total(),
            totals.scheduled,
        );
        let worker_queues: Vec<QueuePlan> = declared
            .iter()
            .map(|wq| {
                let mut q = QueuePlan::new(wq, snapshot.demand(&wq.selector()));
                q.parallelism_cap = options.airflow_parallelism.and_then(|p| {
                    parallelism::capped_workers(p, q.max_tasks_per_worker, q.max_workers)
                });
                let target = wq.scale_target_ref.as_ref();
                if let (Some(view), Some(t)) = (cluster, target) {
                    q.deletion_cost = match (t.kind, options.deletion_cost) {
                        (TargetKind::StatefulSet, _) => DeletionCost::StatefulSet,
                        (TargetKind::Deployment, true) => DeletionCost::Kept,
                        (TargetKind::Deployment, false) => DeletionCost::Off,
                    };
                    if let Some(obs) = view.get(Some(t)) {
                        q.cluster_error.clone_from(&obs.error);
                        if obs.found {
                            q.ready_workers = Some(obs.ready_workers);
                        }
                        q.hpa_desired_workers = obs.hpa.as_ref().map(|h| h.desired_replicas);
                        q.hpa_current_workers = obs.hpa.as_ref().map(|h| h.current_replicas);
                        q.drift = match view.drift.get(&q.worker_queue) {
                            Some(d) => Some(d.clone()),
                            None => {
                                let inputs = drift_inputs(&q, obs, starved, options);
                                drift::is_off(&inputs).then(|| DriftReport {
                                    drifting: false,
                                    off_for_secs: 0.0,
                                    cause: drift::cause(&inputs),
                                })
                            }
                        };
                    }
                }
                q
            })
            .collect();
        let sizes: Vec<QueueSize> = worker_queues.iter().map(QueuePlan::sizes).collect();
        Self {
            parallelism: parallelism::recommend(options.parallelism_mode, &sizes),
            worker_queues,
            airflow_parallelism: options.airflow_parallelism,
            starved,
            queued_and_running: totals.total(),
        }
    }

    /// Renders the plan as a fixed-width text table, notes and the parallelism to set.
    pub fn to_table(&self) -> String {
        let cluster = self
            .worker_queues
            .iter()
            .any(|q| q.target.is_some() && q.deletion_cost != DeletionCost::NoTarget);
        let dash = |v: Option<u32>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        let mut header = vec![
            "WORKER QUEUE",
            "AIRFLOW QUEUES",
            "SCHEDULED",
            "QUEUED",
            "RUNNING",
            "TASKS/WORKER",
            "MIN-MAX",
            "DESIRED WORKERS",
        ];
        if cluster {
            header.extend(["HPA DESIRED/CURRENT", "READY WORKERS"]);
        }
        header.push("ACTIVE");
        let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
        for q in &self.worker_queues {
            let mut row = vec![
                q.worker_queue.clone(),
                q.queues.join(","),
                q.scheduled.to_string(),
                q.queued.to_string(),
                q.running.to_string(),
                q.max_tasks_per_worker.to_string(),
                format!("{}-{}", q.min_workers, q.max_workers),
                q.desired_workers.to_string(),
            ];
            if cluster {
                row.push(match (q.hpa_desired_workers, q.hpa_current_workers) {
                    (None, None) => "-".into(),
                    (d, c) => format!("{}/{}", dash(d), dash(c)),
                });
                row.push(dash(q.ready_workers));
            }
            row.push(q.active.to_string());
            rows.push(row);
        }
        let mut out = render_table(&rows);
        for q in &self.worker_queues {
            let mut notes = Vec::new();
            if let Some(t) = &q.target {
                notes.push(format!("workers {t}: {}", q.deletion_cost.describe()));
            }
            if let Some(e) = &q.cluster_error {
                notes.push(format!("cannot read the cluster: {e}"));
            }
            if let Some(d) = &q.drift {
                notes.push(format!(
                    "{} ready workers, formula {}: {}{}",
                    dash(q.ready_workers),
                    q.desired_workers,
                    d.cause.describe(),
                    if d.drifting {
                        format!(" (hpa_drift for {:.0}s)", d.off_for_secs)
                    } else {
                        String::new()
                    }
                ));
            }
            if let (Some(cap), Some(p)) = (q.parallelism_cap, self.airflow_parallelism) {
                notes.push(format!(
                    "[core] parallelism {p} caps it at {cap} workers of {}",
                    q.max_workers
                ));
            }
            for n in notes {
                out.push_str(&format!("  {}: {n}\n", q.worker_queue));
            }
        }
        if self.starved {
            out.push_str(&format!(
                "STARVED: tasks wait as scheduled while {} are queued or running, at [core] \
                 parallelism {}\n",
                self.queued_and_running,
                self.airflow_parallelism.unwrap_or(0)
            ));
        }
        out.push_str(&format!("{}\n", self.parallelism.line()));
        out.push_str(&format!(
            "set AIRFLOW__CORE__PARALLELISM={}{}\n",
            self.parallelism.value,
            match self.airflow_parallelism {
                Some(p) => format!(" (configured: {p})"),
                None => String::new(),
            }
        ));
        out
    }
}

/// The drift inputs of one worker queue.
pub fn drift_inputs(
    q: &QueuePlan,
    obs: &WorkerObservation,
    starved: bool,
    options: PlanOptions,
) -> DriftInputs {
    DriftInputs {
        formula: q.desired_workers,
        ready: obs.ready_workers,
        spec_replicas: obs.spec_replicas,
        hpa: obs.hpa.clone(),
        pending: obs.pending_workers,
        unschedulable: obs.unschedulable(),
        replica_failure: obs.replica_failure.clone(),
        starved,
        exact_tolerance_configured: options.exact_tolerance,
    }
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
    fn activation_threshold() {
        let d = |q, r| Demand {
            queued: q,
            running: r,
            scheduled: 0,
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
                QueueCount::new("default", TaskState::Queued, None, 20),
                QueueCount::new("default", TaskState::Running, None, 16),
                QueueCount::new("default", TaskState::Scheduled, None, 2),
                QueueCount::new("ml", TaskState::Queued, None, 9),
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
        assert_eq!(plan.worker_queues[0].scheduled, 2);
        // Astro's current definition: (10 + 5) max workers × (16 + 4) = 300, whatever the load.
        assert_eq!(plan.parallelism.value, 300);
        let table = plan.to_table();
        assert!(table.contains("DESIRED WORKERS"));
        assert!(table.contains("SCHEDULED"));
        assert!(!table.contains("READY WORKERS"), "no cluster, no column");
        assert!(
            table.contains("set AIRFLOW__CORE__PARALLELISM=300\n"),
            "{table}"
        );

        // Airflow's default parallelism 32 caps `default` (10 × 16) at 2 workers, and with
        // 36 queued + running and 2 scheduled the scheduler is starved.
        let options = PlanOptions {
            airflow_parallelism: Some(32),
            ..PlanOptions::default()
        };
        let plan = Plan::compute_with(&declared, &snap, None, options);
        assert_eq!(plan.worker_queues[0].parallelism_cap, Some(2));
        assert_eq!(
            plan.worker_queues[1].parallelism_cap, None,
            "5 x 4 = 20 <= 32"
        );
        assert!(plan.starved);
        let table = plan.to_table();
        assert!(
            table.contains("[core] parallelism 32 caps it at 2 workers of 10"),
            "{table}"
        );
        assert!(table.contains("STARVED"), "{table}");
        assert!(table.contains("(configured: 32)"), "{table}");
    }

    #[test]
    fn plan_with_the_cluster() {
        use crate::scaler::model::target::ScaleTargetRef;
        use crate::scaler::model::{drift::HpaObservation, pods::WorkerPod};
        let declared = WorkerQueues::parse(
            "workerQueues:\n  - name: default\n    scaleTargetRef: {kind: Deployment, name: airflow-worker}\n  - name: ml\n    queues: [ml]\n    scaleTargetRef: {kind: StatefulSet, name: airflow-worker-ml}\n",
        )
        .unwrap();
        let snap = Snapshot::new(
            AirflowSchema::Airflow3,
            vec![QueueCount::new("default", TaskState::Queued, None, 40)],
        );
        let pod = |n: &str| WorkerPod {
            name: n.into(),
            ready: true,
            phase: "Running".into(),
            ..WorkerPod::default()
        };
        let mut obs = WorkerObservation {
            found: true,
            spec_replicas: Some(2),
            hpa: Some(HpaObservation {
                name: "keda-hpa-default".into(),
                desired_replicas: 2,
                current_replicas: 2,
                min_replicas: 1,
                max_replicas: 10,
                ..HpaObservation::default()
            }),
            pods: vec![pod("w-a"), pod("w-b")],
            ..WorkerObservation::default()
        };
        obs.count_pods();
        let mut view = ClusterView::default();
        view.workloads.insert(
            ScaleTargetRef {
                kind: TargetKind::Deployment,
                name: "airflow-worker".into(),
            },
            obs,
        );
        let options = PlanOptions {
            deletion_cost: true,
            exact_tolerance: true,
            parallelism_mode: ParallelismMode::Ready,
            ..PlanOptions::default()
        };
        let plan = Plan::compute_with(&declared, &snap, Some(&view), options);
        let d = &plan.worker_queues[0];
        assert_eq!(
            (d.desired_workers, d.hpa_desired_workers, d.ready_workers),
            (3, Some(2), Some(2))
        );
        assert_eq!(d.deletion_cost, DeletionCost::Kept);
        let drift = d.drift.as_ref().unwrap();
        assert_eq!(drift.cause.label(), "tolerance_dropped");
        assert!(!drift.drifting);
        let ml = &plan.worker_queues[1];
        assert_eq!(ml.deletion_cost, DeletionCost::StatefulSet);
        assert_eq!(ml.ready_workers, None, "not found");
        // The seed's definition from ready workers: 2 × (16 + 16).
        assert_eq!(plan.parallelism.value, 64);
        let table = plan.to_table();
        for needle in [
            "HPA DESIRED/CURRENT",
            "READY WORKERS",
            "2/2",
            "cannot choose which worker goes",
            "tolerance dropped",
            "set AIRFLOW__CORE__PARALLELISM=64",
        ] {
            assert!(table.contains(needle), "{needle}: {table}");
        }
    }
}
