//! E6, E7: the workers as Kubernetes runs them (issue 10), on the real control plane.
//!
//! - E6: a worker Deployment of 4 pods with tasks running on two of them; the scaler keeps
//!   `controller.kubernetes.io/pod-deletion-cost` on each pod, KEDA's HPA scales to 2, and the
//!   ReplicaSet controller deletes the two idle pods.
//! - E7: the HPA held off the formula (tolerance 0 missing from the HPA while the scaler is told
//!   it is configured: what a cluster without `HPAConfigurableTolerance` does, FACTS §10);
//!   `hpa_drift` appears in `/metrics` and `explain` names the cause.
//!
//! The scaler talks to the API server as its own ServiceAccount (a kubeconfig with a token from
//! the TokenRequest API), so the chart's Role is what allows it: least privilege is exercised.
//!
//! Hooked into `tests/e2e/main.rs` with `mod workers;` and two `#[ignore]`d tests
//! (`e6_idle_workers_go_first`, `e7_drift_names_its_cause`), and into `.ci/e2e`'s scenario list
//! as `E6|idle-workers-removed-first|…` and `E7|hpa-drift-names-cause|…`.

use std::{collections::BTreeSet, time::Duration};

use k8s_openapi::api::{
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{Pod, ServiceAccount},
};
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams, Patch, PatchParams, PostParams},
    config::Kubeconfig,
    core::GroupVersionKind,
    discovery::ApiResource,
};
use serde_json::{Value, json};
use testkit::airflow::{self as airflow_fixture, AirflowVersion, FixtureRow};

use crate::{
    cluster::{self, MANAGER, eventually, measure},
    kubelet::PRODUCT,
    scaling::{self, FULLNAME, Options, Scaling},
};

const COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// A kubeconfig for the scaler's ServiceAccount in `ns` (made here first, so that the file
/// exists before the chart's Deployment starts the scaler; the chart's apply adopts it).
async fn service_account_kubeconfig(client: &Client, ns: &str) -> String {
    cluster::namespace(client, ns, &[FULLNAME]).await;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600},
    });
    let answer: Value = sas
        .create_subresource("token", FULLNAME, &PostParams::default(), &request)
        .await
        .expect("TokenRequest for the scaler's ServiceAccount");
    let token = answer["status"]["token"].as_str().expect("token");
    let admin = Kubeconfig::read_from(cluster::env("AKS_E2E_KUBECONFIG")).expect("kubeconfig");
    let server = admin.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.server.clone())
        .expect("API server address");
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {
            "server": server,
            "certificate-authority": cluster::env("AKS_E2E_CA_CERT"),
        }}],
        "users": [{"name": "scaler", "user": {"token": token}}],
        "contexts": [{"name": "scaler", "context": {"cluster": "e2e", "user": "scaler", "namespace": ns}}],
        "current-context": "scaler",
    });
    let path = cluster::run_dir().join(format!("{ns}.scaler.kubeconfig"));
    std::fs::write(&path, serde_json::to_vec(&kubeconfig).expect("json")).expect("kubeconfig");
    path.display().to_string()
}

/// Inserts `rows` into the scenario's `task_instance`.
async fn insert(s: &Scaling, rows: &[FixtureRow]) {
    let statements = airflow_fixture::insert_sql_chunked(s.db.dialect(), AirflowVersion::V3, rows);
    airflow_fixture::execute(s.db.url(), &statements)
        .await
        .expect("insert task instances");
}

fn running_on(host: &str, n: usize, tag: &str) -> Vec<FixtureRow> {
    (0..n)
        .map(|i| {
            let mut row = FixtureRow::new(
                "etl",
                &format!("{tag}_{i}"),
                "run_1",
                Some("running"),
                "default",
            );
            row.hostname = host.to_string();
            row
        })
        .collect()
}

async fn worker_pods(client: &Client, ns: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.list(&ListParams::default().labels("component=worker"))
        .await
        .expect("list worker pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn pod_name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

fn cost_of(p: &Pod) -> Option<String> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(COST).cloned())
}

fn scaled_objects(client: &Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// E6: busy workers are removed last.
pub async fn idle_workers_go_first() {
    let ns = "e6-deletion-cost";
    let client = cluster::client().await;
    let kubeconfig = service_account_kubeconfig(&client, ns).await;
    // 4 workers held by minReplicaCount 4 until the costs are in place.
    let s = scaling::setup(
        ns,
        "E6",
        Options {
            pod_ip: "10.244.0.60",
            min: 4,
            max: 4,
            initial: 4,
            values: json!({"scaler": {"extraEnv": [{"name": "KUBECONFIG", "value": kubeconfig}]}}),
            ..Options::default()
        },
    )
    .await;
    let pods = eventually("4 worker pods", Duration::from_secs(60), || async {
        let pods = worker_pods(&s.client, ns).await;
        if pods.len() == 4 {
            Ok(pods)
        } else {
            Err(format!("{} pods", pods.len()))
        }
    })
    .await;
    let mut names: Vec<String> = pods.iter().map(pod_name).collect();
    names.sort();
    // Tasks on two of them: the oldest-named and the newest-named, so neither creation order
    // nor name order alone would pick the idle ones. Hostnames as Airflow's default
    // hostname_callable (getfqdn) records them in a pod.
    let busy: BTreeSet<String> = [names[0].clone(), names[3].clone()].into();
    // Only these 20 tasks: the formula then asks for 2 workers once the minimum is lowered.
    s.set_tasks(0).await;
    let mut rows = running_on(&format!("{}.{ns}.svc.cluster.local", names[0]), 10, "a");
    rows.extend(running_on(&names[3], 10, "b"));
    insert(&s, &rows).await;

    eventually(
        "the scaler writes deletion cost 10 on the busy pods",
        Duration::from_secs(60),
        || async {
            let pods = worker_pods(&s.client, ns).await;
            let costs: Vec<(String, Option<String>)> =
                pods.iter().map(|p| (pod_name(p), cost_of(p))).collect();
            let ok = costs.iter().all(|(name, cost)| {
                if busy.contains(name) {
                    cost.as_deref() == Some("10")
                } else {
                    cost.as_deref().is_none_or(|c| c == "0")
                }
            });
            if ok {
                Ok(())
            } else {
                Err(format!("{costs:?}"))
            }
        },
    )
    .await;

    // Let the HPA follow the formula: 20 tasks / 16 per worker = 2 workers.
    let started = std::time::Instant::now();
    scaled_objects(&s.client, ns)
        .patch(
            &s.scaled_object,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"minReplicaCount": 1}})),
        )
        .await
        .expect("lower minReplicaCount");
    let left = eventually(
        "the Deployment is scaled to 2 and 2 pods are left",
        Duration::from_secs(90),
        || async {
            let pods = worker_pods(&s.client, ns).await;
            let replicas = s
                .workers
                .get(scaling::WORKER)
                .await
                .map_err(|e| e.to_string())?
                .spec
                .and_then(|sp| sp.replicas);
            if replicas == Some(2) && pods.len() == 2 {
                Ok(pods.iter().map(pod_name).collect::<BTreeSet<_>>())
            } else {
                Err(format!(
                    "replicas {replicas:?}, pods {:?}",
                    pods.iter().map(pod_name).collect::<Vec<_>>()
                ))
            }
        },
    )
    .await;
    assert_eq!(left, busy, "the idle pods were deleted, the busy ones kept");
    measure(format!(
        "E6 4 -> 2 workers in {:.1}s; kept the busy pods {busy:?}",
        started.elapsed().as_secs_f64()
    ));
}

/// E7: drift is exported and explained.
pub async fn drift_names_its_cause() {
    let ns = "e7-drift";
    let client = cluster::client().await;
    let kubeconfig = service_account_kubeconfig(&client, ns).await;
    // The chart configures tolerance 0 (its default), and the scaler is told so; the
    // ScaledObject reaches the API server without it, as on a cluster that drops the field
    // (HPAConfigurableTolerance off, FACTS §10). 5 workers held by minReplicaCount 5.
    let s = scaling::setup(
        ns,
        "E7",
        Options {
            pod_ip: "10.244.0.70",
            min: 5,
            max: 12,
            initial: 5,
            values: json!({
                "scaler": {
                    "kubernetes": {"driftAfter": "5s"},
                    "extraEnv": [{"name": "KUBECONFIG", "value": kubeconfig}],
                },
            }),
            edit_scaled_object: drop_tolerance,
            ..Options::default()
        },
    )
    .await;
    let rendered = scaled_objects(&s.client, ns)
        .get(&s.scaled_object)
        .await
        .expect("ScaledObject");
    assert!(
        rendered.data["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleUp"]
            .get("tolerance")
            .is_none(),
        "the ScaledObject carries no tolerance"
    );
    // No kubelet: the stand-in marks the workers Ready, as a kubelet would.
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), ns);
    let ready = eventually(
        "5 worker pods marked Ready",
        Duration::from_secs(60),
        || async {
            let list = worker_pods(&s.client, ns).await;
            for p in &list {
                let name = pod_name(p);
                pods.patch_status(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(json!({
                        "apiVersion": "v1", "kind": "Pod",
                        "status": {"phase": "Running", "conditions": [
                            {"type": "Ready", "status": "True"},
                            {"type": "PodScheduled", "status": "True"},
                        ]},
                    })),
                )
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            }
            if list.len() == 5 {
                Ok(list.len())
            } else {
                Err(format!("{} pods", list.len()))
            }
        },
    )
    .await;
    assert_eq!(ready, 5);

    // 81 tasks: the formula wants ceil(81 / 16) = 6, while 81 / (16 x 5) = 1.0125 is inside
    // the HPA's default 10 % band, so it keeps 5.
    s.set_tasks(0).await;
    let rows: Vec<FixtureRow> = (0..81)
        .map(|i| FixtureRow::new("etl", &format!("q{i}"), "run_1", Some("queued"), "default"))
        .collect();
    insert(&s, &rows).await;

    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(s.client.clone(), ns);
    let hpa_name = format!("keda-hpa-{}", s.scaled_object);
    let admin = s
        ._scaler
        .listen
        .iter()
        .find(|a| a.port() == 9091)
        .copied()
        .expect("the scaler's admin address");
    let started = std::time::Instant::now();
    let line = eventually(
        "hpa_drift 1 in /metrics",
        Duration::from_secs(90),
        || async {
            let text = reqwest::get(format!("http://{admin}/metrics"))
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            text.lines()
                .find(|l| l.starts_with("airflow_keda_scaler_hpa_drift{") && l.ends_with(" 1"))
                .map(str::to_string)
                .ok_or_else(|| {
                    text.lines()
                        .filter(|l| l.contains("workers") || l.contains("drift"))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
        },
    )
    .await;
    assert!(line.contains("worker_queue=\"default\""), "{line}");
    let hpa = hpas.get(&hpa_name).await.expect("HPA");
    let status = hpa.status.expect("HPA status");
    assert_eq!(status.desired_replicas, 5, "the HPA held 5 (dead band)");
    measure(format!(
        "E7 hpa_drift after {:.1}s (formula 6, HPA 5, ready 5)",
        started.elapsed().as_secs_f64()
    ));

    // `explain` against the cluster, as the scaler's ServiceAccount.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("worker-queues.yaml");
    std::fs::write(
        &file,
        "workerQueues:\n  - name: default\n    minWorkers: 5\n    maxWorkers: 12\n    \
         scaleTargetRef: {kind: Deployment, name: airflow-worker}\n",
    )
    .expect("worker-queue file");
    let out = tokio::process::Command::new(PRODUCT)
        .args(["explain", "--database-url", s.db.url(), "--worker-queues"])
        .arg(&file)
        .args([
            "--kubernetes",
            "on",
            "--kubernetes-namespace",
            ns,
            "--exact-tolerance",
            "true",
        ])
        .env("KUBECONFIG", service_account_kubeconfig_path(ns))
        .output()
        .await
        .expect("run explain");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    if let Some(cause) = stdout.lines().find(|l| l.contains("tolerance dropped")) {
        measure(format!("E7 explain: {}", cause.trim()));
    }
    for needle in [
        "HPA DESIRED/CURRENT",
        "READY WORKERS",
        "5/5",
        "tolerance dropped",
        "set AIRFLOW__CORE__PARALLELISM=",
    ] {
        assert!(
            stdout.contains(needle),
            "explain lacks {needle:?}:\n{stdout}"
        );
    }
}

/// Removes `tolerance` from the ScaledObject's HPA behavior (what the API server does to an
/// HPA when `HPAConfigurableTolerance` is off).
fn drop_tolerance(so: &mut Value) {
    let behavior = &mut so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"];
    for direction in ["scaleUp", "scaleDown"] {
        if let Some(rules) = behavior[direction].as_object_mut() {
            rules.remove("tolerance");
        }
    }
}

fn service_account_kubeconfig_path(ns: &str) -> std::path::PathBuf {
    cluster::run_dir().join(format!("{ns}.scaler.kubeconfig"))
}
