//! What Kubernetes shows for the worker workloads, as plain data (filled by
//! `crate::scaler::cluster`, read by the plan, the metrics and the drift rules).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    drift::{DriftReport, HpaObservation},
    pods::WorkerPod,
    target::ScaleTargetRef,
};

/// What Kubernetes shows for one worker workload.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerObservation {
    /// The workload exists.
    pub found: bool,
    /// Its `spec.replicas`.
    pub spec_replicas: Option<u32>,
    /// Pods that are Ready and not terminating.
    pub ready_workers: u32,
    /// Pods in phase Pending (not terminating).
    pub pending_workers: u32,
    /// A `ReplicaFailure` condition of the workload (e.g. a ResourceQuota refusing pods).
    pub replica_failure: Option<String>,
    /// The HPA whose `scaleTargetRef` is this workload.
    pub hpa: Option<HpaObservation>,
    #[serde(skip)]
    pub pods: Vec<WorkerPod>,
    /// Why this could not be read (e.g. RBAC), secret-free.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl WorkerObservation {
    /// A message of one unschedulable pod, if any.
    pub fn unschedulable(&self) -> Option<String> {
        self.pods.iter().find_map(|p| p.unschedulable.clone())
    }

    /// Recomputes the counts from `pods`.
    pub fn count_pods(&mut self) {
        let live = || self.pods.iter().filter(|p| !p.terminating);
        self.ready_workers = u32::try_from(live().filter(|p| p.ready).count()).unwrap_or(u32::MAX);
        self.pending_workers =
            u32::try_from(live().filter(|p| p.phase == "Pending").count()).unwrap_or(u32::MAX);
    }
}

/// The cluster as last seen, per workload.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub namespace: String,
    pub workloads: BTreeMap<ScaleTargetRef, WorkerObservation>,
    /// Drift of the worker queues that are off the formula, by worker-queue name (kept by the
    /// serve loop, which sees it last; empty for a one-time look).
    pub drift: BTreeMap<String, DriftReport>,
}

impl ClusterView {
    pub fn get(&self, target: Option<&ScaleTargetRef>) -> Option<&WorkerObservation> {
        target.and_then(|t| self.workloads.get(t))
    }
}
