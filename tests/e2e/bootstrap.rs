//! What `.ci/e2e` needs before it starts KEDA: KEDA's CRDs (from the KEDA module it built), the
//! `keda` namespace, the Services of the operator and the metrics apiserver with pinned
//! ClusterIPs (the processes listen on them), and the `v1beta1.external.metrics.k8s.io`
//! APIService (KEDA's operator fills in its caBundle).

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use serde_json::{Value, json};

use crate::cluster::{self, apply, env, eventually};

pub async fn run() {
    let client = cluster::client().await;
    let dir = env("AKS_E2E_KEDA_CRDS");
    let mut names = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("KEDA CRD directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("CRD file");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("CRD YAML");
        for crd in docs {
            if crd.is_null() {
                continue;
            }
            names.push(cluster::name_of(&crd).to_string());
            apply(&client, &crd, "default").await;
        }
    }
    assert!(
        names.iter().any(|n| n == "scaledobjects.keda.sh"),
        "KEDA's CRDs in {dir}"
    );
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in &names {
        eventually(
            &format!("CRD {name} established"),
            Duration::from_secs(30),
            || async {
                let crd = crds.get(name).await.map_err(|e| e.to_string())?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                established.then_some(()).ok_or("not yet".to_string())
            },
        )
        .await;
    }

    cluster::namespace(&client, "keda", &[]).await;
    let operator_ip = env("AKS_E2E_KEDA_OPERATOR_IP");
    let metrics_ip = env("AKS_E2E_KEDA_METRICS_IP");
    // No selector (there are no pods): an EndpointSlice made here marks each Service as
    // backed, which the aggregator's availability check needs; the processes themselves listen
    // on the ClusterIPs (the aggregator and the metrics apiserver dial ClusterIP:port).
    for (name, ip, port, target, endpoint) in [
        (
            "keda-operator",
            operator_ip.as_str(),
            9666,
            9666,
            "10.244.255.21",
        ),
        (
            "keda-metrics-apiserver",
            metrics_ip.as_str(),
            443,
            6443,
            "10.244.255.20",
        ),
    ] {
        apply(
            &client,
            &json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "keda", "labels": {"app": name}},
                "spec": {
                    "clusterIP": ip,
                    "ports": [{"name": "main", "port": port, "targetPort": target, "protocol": "TCP"}],
                },
            }),
            "keda",
        )
        .await;
        apply(
            &client,
            &json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("{name}-e2e"), "namespace": "keda",
                    "labels": {
                        "kubernetes.io/service-name": name,
                        "endpointslice.kubernetes.io/managed-by": "aks-e2e",
                    },
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [endpoint], "conditions": {"ready": true}}],
                "ports": [{"name": "main", "port": target, "protocol": "TCP"}],
            }),
            "keda",
        )
        .await;
    }
    apply(
        &client,
        &json!({
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
            "spec": {
                "service": {"name": "keda-metrics-apiserver", "namespace": "keda", "port": 443},
                "group": "external.metrics.k8s.io", "version": "v1beta1",
                "groupPriorityMinimum": 100, "versionPriority": 100,
            },
        }),
        "default",
    )
    .await;
    println!(
        "bootstrap: {} KEDA CRDs, keda Services, APIService",
        names.len()
    );
}

/// The kubelet's part for KEDA: its operator writes its certificates (gRPC between operator and
/// metrics apiserver, the metrics apiserver's serving certificate) into Secret
/// `keda/kedaorg-certs` and waits for them to appear as files, as a mounted Secret would.
pub async fn mount_keda_certs() {
    use k8s_openapi::api::core::v1::Secret;
    let client = cluster::client().await;
    let dir = std::path::PathBuf::from(env("AKS_E2E_KEDA_CERT_DIR"));
    let secrets: Api<Secret> = Api::namespaced(client, "keda");
    let data = eventually(
        "KEDA's operator writes Secret keda/kedaorg-certs",
        Duration::from_secs(90),
        || async {
            let s = secrets
                .get_opt("kedaorg-certs")
                .await
                .map_err(|e| e.to_string())?
                .ok_or("absent")?;
            let data = s.data.unwrap_or_default();
            if ["ca.crt", "tls.crt", "tls.key"]
                .iter()
                .all(|k| data.contains_key(*k))
            {
                Ok(data)
            } else {
                Err(format!("keys {:?}", data.keys().collect::<Vec<_>>()))
            }
        },
    )
    .await;
    std::fs::create_dir_all(&dir).expect("KEDA cert directory");
    // The key last: the operator waits for tls.key's sibling files to be complete.
    for key in ["ca.crt", "tls.crt", "tls.key"] {
        let tmp = dir.join(format!(".{key}.tmp"));
        std::fs::write(&tmp, &data[key].0).expect("write certificate");
        std::fs::rename(&tmp, dir.join(key)).expect("move certificate");
    }
    println!("KEDA certificates written to {}", dir.display());
}
