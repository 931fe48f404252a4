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
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::Pod,
};
use kube::{
    Api, Resource,
    api::ListParams,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    Cluster, ClusterError, ClusterView, WorkerObservation,
    objects::{TargetInfo, deployment_info, hpas_by_target, observe, pod_info, statefulset_info},
};
use crate::scaler::model::target::{ScaleTargetRef, TargetKind};

fn api_error(what: &str, e: &kube::Error) -> String {
    format!("{what}: {e}")
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
