//! Kubernetes objects → what the scaler needs of them: the worker workload (replicas,
//! selector, quota failures), its pods, the HPA that targets it.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        autoscaling::v2::HorizontalPodAutoscaler,
        core::v1::Pod,
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::core::Selector;

use super::{HpaObservation, WorkerObservation, WorkerPod};
use crate::scaler::model::{
    pods::DELETION_COST_ANNOTATION,
    target::{ScaleTargetRef, TargetKind},
};

/// What the workload object says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetInfo {
    pub spec_replicas: Option<u32>,
    pub selector: Option<Selector>,
    pub replica_failure: Option<String>,
}

fn to_u32(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn selector(s: &LabelSelector) -> Option<Selector> {
    Selector::try_from(s.clone())
        .ok()
        .filter(|s| !s.selects_all())
}

pub fn deployment_info(d: &Deployment) -> TargetInfo {
    let spec = d.spec.as_ref();
    TargetInfo {
        spec_replicas: spec.and_then(|s| s.replicas).map(to_u32),
        selector: spec.and_then(|s| selector(&s.selector)),
        replica_failure: d
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
            })
            .map(|c| {
                c.message
                    .clone()
                    .unwrap_or_else(|| c.reason.clone().unwrap_or_default())
            }),
    }
}

pub fn statefulset_info(s: &StatefulSet) -> TargetInfo {
    let spec = s.spec.as_ref();
    TargetInfo {
        spec_replicas: spec.and_then(|s| s.replicas).map(to_u32),
        selector: spec.and_then(|s| selector(&s.selector)),
        replica_failure: None,
    }
}

pub fn pod_info(p: &Pod) -> WorkerPod {
    let status = p.status.as_ref();
    let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
    let mut ips: Vec<String> = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().map(|i| i.ip.clone()).collect())
        .unwrap_or_default();
    if let Some(ip) = status.and_then(|s| s.pod_ip.clone())
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    WorkerPod {
        name: p.metadata.name.clone().unwrap_or_default(),
        ips,
        deletion_cost: p
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DELETION_COST_ANNOTATION).cloned()),
        ready: conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        phase: status
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into()),
        terminating: p.metadata.deletion_timestamp.is_some(),
        unschedulable: conditions
            .iter()
            .find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
            .map(|c| c.message.clone().unwrap_or_else(|| "Unschedulable".into())),
    }
}

fn quantity(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> Option<f64> {
    q.and_then(|q| q.0.trim().parse::<f64>().ok())
}

/// The workload an HPA scales, if it is an apps/v1 Deployment or StatefulSet.
pub fn hpa_target(h: &HorizontalPodAutoscaler) -> Option<ScaleTargetRef> {
    let r = &h.spec.as_ref()?.scale_target_ref;
    if r.api_version.as_deref().is_some_and(|v| v != "apps/v1") {
        return None;
    }
    let kind = match r.kind.as_str() {
        "Deployment" => TargetKind::Deployment,
        "StatefulSet" => TargetKind::StatefulSet,
        _ => return None,
    };
    Some(ScaleTargetRef {
        kind,
        name: r.name.clone(),
    })
}

pub fn hpa_info(h: &HorizontalPodAutoscaler) -> HpaObservation {
    let spec = h.spec.as_ref();
    let status = h.status.as_ref();
    let behavior = spec.and_then(|s| s.behavior.as_ref());
    HpaObservation {
        name: h.metadata.name.clone().unwrap_or_default(),
        desired_replicas: status.map_or(0, |s| to_u32(s.desired_replicas)),
        current_replicas: status.and_then(|s| s.current_replicas).map_or(0, to_u32),
        min_replicas: spec.and_then(|s| s.min_replicas).map_or(1, to_u32),
        max_replicas: spec.map_or(0, |s| to_u32(s.max_replicas)),
        scale_up_tolerance: quantity(
            behavior
                .and_then(|b| b.scale_up.as_ref())
                .and_then(|r| r.tolerance.as_ref()),
        ),
        scale_down_tolerance: quantity(
            behavior
                .and_then(|b| b.scale_down.as_ref())
                .and_then(|r| r.tolerance.as_ref()),
        ),
        not_scaling: status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| {
                cs.iter().find(|c| {
                    matches!(c.type_.as_str(), "AbleToScale" | "ScalingActive")
                        && c.status == "False"
                })
            })
            .map(|c| {
                format!(
                    "{} {}: {}",
                    c.type_,
                    c.reason.as_deref().unwrap_or(""),
                    c.message.as_deref().unwrap_or("")
                )
            }),
    }
}

/// Assembles one workload's observation.
pub fn observe(
    info: Option<&TargetInfo>,
    pods: Vec<WorkerPod>,
    hpas: &[HpaObservation],
) -> WorkerObservation {
    let mut o = WorkerObservation {
        found: info.is_some(),
        spec_replicas: info.and_then(|i| i.spec_replicas),
        replica_failure: info.and_then(|i| i.replica_failure.clone()),
        hpa: hpas.first().cloned(),
        pods,
        ..WorkerObservation::default()
    };
    o.pods.sort_by(|a, b| a.name.cmp(&b.name));
    o.count_pods();
    o
}

/// HPAs of the namespace by the workload they scale.
pub fn hpas_by_target<'a>(
    hpas: impl Iterator<Item = &'a HorizontalPodAutoscaler>,
) -> BTreeMap<ScaleTargetRef, Vec<HpaObservation>> {
    let mut out: BTreeMap<ScaleTargetRef, Vec<HpaObservation>> = BTreeMap::new();
    for h in hpas {
        if let Some(t) = hpa_target(h) {
            out.entry(t).or_default().push(hpa_info(h));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn pods_hpas_and_workloads_are_read() {
        let pod: Pod = json(serde_json::json!({
            "metadata": {"name": "w-1", "annotations": {DELETION_COST_ANNOTATION: "3"}},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                       "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}],
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }));
        let p = pod_info(&pod);
        assert_eq!(p.name, "w-1");
        assert_eq!(p.ips, vec!["10.0.0.1", "fd00::1"]);
        assert_eq!(p.deletion_cost.as_deref(), Some("3"));
        assert!(p.ready && !p.terminating);
        let pending: Pod = json(serde_json::json!({
            "metadata": {"name": "w-2", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/3 nodes are available"}]}
        }));
        let p2 = pod_info(&pending);
        assert!(!p2.ready && p2.terminating);
        assert_eq!(p2.unschedulable.as_deref(), Some("0/3 nodes are available"));

        let hpa: HorizontalPodAutoscaler = json(serde_json::json!({
            "metadata": {"name": "keda-hpa-default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "airflow-worker"},
                     "minReplicas": 1, "maxReplicas": 10,
                     "behavior": {"scaleUp": {"tolerance": "0"}, "scaleDown": {"tolerance": "0"}}},
            "status": {"desiredReplicas": 4, "currentReplicas": 3,
                       "conditions": [{"type": "ScalingActive", "status": "False", "reason": "FailedGetExternalMetric", "message": "unable to get external metric"}]}
        }));
        assert_eq!(
            hpa_target(&hpa),
            Some(ScaleTargetRef {
                kind: TargetKind::Deployment,
                name: "airflow-worker".into()
            })
        );
        let h = hpa_info(&hpa);
        assert_eq!(
            (h.desired_replicas, h.current_replicas, h.max_replicas),
            (4, 3, 10)
        );
        assert!(h.exact_tolerance());
        assert!(
            h.not_scaling
                .as_deref()
                .unwrap()
                .contains("FailedGetExternalMetric")
        );

        let d: Deployment = json(serde_json::json!({
            "metadata": {"name": "airflow-worker"},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"component": "worker", "release": "airflow"}},
                     "template": {}},
            "status": {"conditions": [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                "message": "pods \"w\" is forbidden: exceeded quota: workers"}]}
        }));
        let info = deployment_info(&d);
        assert_eq!(info.spec_replicas, Some(4));
        assert_eq!(
            info.selector.as_ref().map(ToString::to_string).as_deref(),
            Some("component=worker,release=airflow")
        );
        assert!(
            info.replica_failure
                .as_deref()
                .unwrap()
                .contains("exceeded quota")
        );

        let o = observe(Some(&info), vec![p2, p], &[h]);
        assert_eq!((o.ready_workers, o.pending_workers), (1, 0));
        assert_eq!(o.pods[0].name, "w-1");
        assert_eq!(o.hpa.as_ref().unwrap().name, "keda-hpa-default");
    }
}
