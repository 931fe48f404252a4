//! Reading the worker workloads, their pods and the HPAs from the API server.
//!
//! `serve` keeps reflectors (one watch per workload, one per workload's pods by its selector,
//! one for the namespace's HPAs: no polling, the API server pushes changes); `explain` reads
//! the same objects once. Both turn them into [`WorkerObservation`]s with the same functions.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        autoscaling::v2::HorizontalPodAutoscaler,
        core::v1::Pod,
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{
    Api, Resource,
    api::ListParams,
    core::Selector,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Cluster, ClusterError, ClusterView, HpaObservation, WorkerObservation, WorkerPod};
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

fn api_error(what: &str, e: &kube::Error) -> String {
    format!("{what}: {e}")
}

/// HPAs of the namespace by the workload they scale.
fn hpas_by_target<'a>(
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

/// Reads every workload, its pods and the HPAs once (`explain`). A workload that cannot be
/// read is reported in its observation's `error`; the HPA list failing fails the call.
pub async fn read_once(
    cluster: &Cluster,
    targets: &[ScaleTargetRef],
) -> Result<ClusterView, ClusterError> {
    let ns = &cluster.namespace;
    let hpa_api: Api<HorizontalPodAutoscaler> = Api::namespaced(cluster.client.clone(), ns);
    let hpas = hpa_api
        .list(&ListParams::default())
        .await
        .map_err(|e| ClusterError::Api(api_error("listing HorizontalPodAutoscalers", &e)))?;
    let by_target = hpas_by_target(hpas.items.iter());
    let mut view = ClusterView {
        namespace: ns.clone(),
        ..ClusterView::default()
    };
    for t in targets {
        let info = match t.kind {
            TargetKind::Deployment => get_info(cluster, &t.name, deployment_info).await,
            TargetKind::StatefulSet => get_info(cluster, &t.name, statefulset_info).await,
        };
        let hpas = by_target.get(t).map(Vec::as_slice).unwrap_or_default();
        let obs = match info {
            Ok(info) => {
                let pods = match info.as_ref().and_then(|i| i.selector.as_ref()) {
                    Some(sel) => {
                        let api: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
                        match api.list(&ListParams::default().labels_from(sel)).await {
                            Ok(list) => Ok(list.items.iter().map(pod_info).collect()),
                            Err(e) => Err(api_error("listing worker pods", &e)),
                        }
                    }
                    None => Ok(Vec::new()),
                };
                match pods {
                    Ok(pods) => observe(info.as_ref(), pods, hpas),
                    Err(error) => WorkerObservation {
                        error: Some(error),
                        ..observe(info.as_ref(), Vec::new(), hpas)
                    },
                }
            }
            Err(error) => WorkerObservation {
                error: Some(error),
                ..observe(None, Vec::new(), hpas)
            },
        };
        view.workloads.insert(t.clone(), obs);
    }
    Ok(view)
}

async fn get_info<K>(
    cluster: &Cluster,
    name: &str,
    info: fn(&K) -> TargetInfo,
) -> Result<Option<TargetInfo>, String>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    api.get_opt(name)
        .await
        .map(|o| o.as_ref().map(info))
        .map_err(|e| {
            api_error(
                &format!("reading {}/{name}", K::kind(&K::DynamicType::default())),
                &e,
            )
        })
}

/// One workload's watched state.
#[derive(Default)]
struct Watched {
    info: Option<TargetInfo>,
    pods: Option<Store<Pod>>,
    pod_task: Option<JoinHandle<()>>,
    error: Option<String>,
}

/// Reflectors over the worker workloads, their pods and the namespace's HPAs.
pub struct Watcher {
    namespace: String,
    hpas: Store<HorizontalPodAutoscaler>,
    workloads: BTreeMap<ScaleTargetRef, Arc<Mutex<Watched>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("namespace", &self.namespace)
            .field("workloads", &self.workloads.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for w in self.workloads.values() {
            if let Ok(mut w) = w.lock()
                && let Some(t) = w.pod_task.take()
            {
                t.abort();
            }
        }
    }
}

/// Logs a watch error once per distinct message (the watcher retries with backoff).
fn note_error(slot: &Mutex<Watched>, what: &str, e: &watcher::Error) {
    let message = format!("{what}: {e}");
    if let Ok(mut w) = slot.lock()
        && w.error.as_deref() != Some(message.as_str())
    {
        tracing::warn!(error = %message, "watching the Kubernetes API failed; retrying");
        w.error = Some(message);
    }
}

impl Watcher {
    /// Starts the reflectors; they run until `shutdown` or until the watcher is dropped.
    pub fn start(
        cluster: &Cluster,
        targets: &[ScaleTargetRef],
        shutdown: &CancellationToken,
    ) -> Self {
        let ns = cluster.namespace.clone();
        let mut tasks = Vec::new();
        let hpa_api: Api<HorizontalPodAutoscaler> = Api::namespaced(cluster.client.clone(), &ns);
        let mut logged = None::<String>;
        let (hpas, task) = spawn_reflector(
            hpa_api,
            watcher::Config::default(),
            shutdown.clone(),
            move |e| {
                let m = e.to_string();
                if logged.as_deref() != Some(m.as_str()) {
                    tracing::warn!(error = %m, "watching HorizontalPodAutoscalers failed; retrying");
                    logged = Some(m);
                }
            },
        );
        tasks.push(task);
        let mut workloads = BTreeMap::new();
        for t in targets {
            let slot = Arc::new(Mutex::new(Watched::default()));
            let task = match t.kind {
                TargetKind::Deployment => spawn_target::<Deployment>(
                    cluster,
                    t.name.clone(),
                    deployment_info,
                    Arc::clone(&slot),
                    shutdown.clone(),
                ),
                TargetKind::StatefulSet => spawn_target::<StatefulSet>(
                    cluster,
                    t.name.clone(),
                    statefulset_info,
                    Arc::clone(&slot),
                    shutdown.clone(),
                ),
            };
            tasks.push(task);
            workloads.insert(t.clone(), slot);
        }
        Self {
            namespace: ns,
            hpas,
            workloads,
            tasks,
        }
    }

    /// The current view of every watched workload.
    pub fn view(&self) -> ClusterView {
        let hpas = self.hpas.state();
        let by_target = hpas_by_target(hpas.iter().map(|h| h.as_ref()));
        let mut view = ClusterView {
            namespace: self.namespace.clone(),
            ..ClusterView::default()
        };
        for (t, slot) in &self.workloads {
            let (info, pods, error) = match slot.lock() {
                Ok(w) => (
                    w.info.clone(),
                    w.pods
                        .as_ref()
                        .map(|s| s.state().iter().map(|p| pod_info(p)).collect())
                        .unwrap_or_default(),
                    w.error.clone(),
                ),
                Err(_) => (None, Vec::new(), None),
            };
            let hpas = by_target.get(t).map(Vec::as_slice).unwrap_or_default();
            let mut obs = observe(info.as_ref(), pods, hpas);
            obs.error = error;
            view.workloads.insert(t.clone(), obs);
        }
        view
    }
}

/// Runs a reflector of `K` until `shutdown`; watch errors go to `on_error` (the watcher retries
/// with backoff).
fn spawn_reflector<K>(
    api: Api<K>,
    config: watcher::Config,
    shutdown: CancellationToken,
    mut on_error: impl FnMut(&watcher::Error) + Send + 'static,
) -> (Store<K>, JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let task = tokio::spawn(async move {
        let stream = reflector::reflector(writer, watcher(api, config))
            .default_backoff()
            .applied_objects();
        futures::pin_mut!(stream);
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => break,
                n = stream.next() => n,
            };
            match next {
                None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => on_error(&e),
            }
        }
    });
    (store, task)
}

/// Watches one workload; (re)starts the pod reflector whenever its selector changes.
fn spawn_target<K>(
    cluster: &Cluster,
    name: String,
    info: fn(&K) -> TargetInfo,
    slot: Arc<Mutex<Watched>>,
    shutdown: CancellationToken,
) -> JoinHandle<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let pods_api: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let what = format!("{}/{name}", K::kind(&K::DynamicType::default()));
    tokio::spawn(async move {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let stream = watcher(api, config).default_backoff();
        futures::pin_mut!(stream);
        let mut current: Option<TargetInfo> = None;
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => break,
                n = stream.try_next() => n,
            };
            let event = match next {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => {
                    note_error(&slot, &format!("watching {what}"), &e);
                    continue;
                }
            };
            let seen = match event {
                watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => Some(info(&obj)),
                watcher::Event::Delete(_) => None,
                watcher::Event::Init => continue,
                watcher::Event::InitDone => current.clone(),
            };
            let selector_changed = seen.as_ref().and_then(|i| i.selector.clone())
                != current.as_ref().and_then(|i| i.selector.clone());
            current = seen.clone();
            let Ok(mut w) = slot.lock() else { break };
            w.error = None;
            w.info = seen.clone();
            if selector_changed {
                if let Some(t) = w.pod_task.take() {
                    t.abort();
                }
                w.pods = None;
                if let Some(sel) = seen.and_then(|i| i.selector) {
                    let pod_slot = Arc::clone(&slot);
                    let pod_what = format!("watching the pods of {what}");
                    let (store, task) = spawn_reflector(
                        pods_api.clone(),
                        watcher::Config::default().labels_from(&sel),
                        shutdown.clone(),
                        move |e| note_error(&pod_slot, &pod_what, e),
                    );
                    w.pod_task = Some(task);
                    w.pods = Some(store);
                }
            }
        }
    })
}

/// How long [`read_once`] may take before `explain` gives up on the cluster.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: DeserializeOwned>(v: serde_json::Value) -> T {
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
