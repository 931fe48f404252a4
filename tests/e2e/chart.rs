//! E1: `helm install` of the chart into the real API server (three worker queues, scaler TLS,
//! the webhook), `helm upgrade` keeping the generated CA, `helm uninstall` leaving nothing.

use std::time::{Duration, Instant};

use k8s_openapi::api::{autoscaling::v2::HorizontalPodAutoscaler, core::v1::Secret};
use kube::{Api, api::ListParams};
use serde_json::{Value, json};

use crate::cluster::{self, api_for, eventually, measure, name_of};

const NS: &str = "e1-chart";
const RELEASE: &str = "aks";

fn values(log_level: &str) -> Value {
    json!({
        "database": {"url": "postgresql+psycopg2://airflow:e2e@postgres.e1-chart.svc:5432/airflow"},
        "workerQueues": [
            {"name": "default", "queues": ["default"]},
            {"name": "gpu", "queues": ["gpu"], "maxWorkers": 4, "maxTasksPerWorker": 2},
            {"name": "reports", "queues": ["reports", "adhoc"], "minWorkers": 0},
        ],
        "tls": {"enabled": true},
        "webhook": {"enabled": true},
        "logLevel": log_level,
    })
}

fn objects(release: &Value) -> Vec<Value> {
    let manifest = release["manifest"]
        .as_str()
        .unwrap_or_else(|| panic!("a manifest in the release: {release}"));
    serde_saphyr::from_multiple::<Value>(manifest)
        .expect("manifest YAML")
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

async fn secret_field(client: &kube::Client, name: &str, key: &str) -> Vec<u8> {
    let s = Api::<Secret>::namespaced(client.clone(), NS)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("Secret {name}: {e}"));
    s.data
        .and_then(|d| d.get(key).cloned())
        .unwrap_or_else(|| panic!("{name} has {key}"))
        .0
}

async fn ca_bundle(client: &kube::Client) -> Value {
    let mwc = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "metadata": {"name": "x"}});
    let api = api_for(client, &mwc, NS).await;
    let got = api
        .get(&format!("{NS}-{RELEASE}-airflow-keda-scaler-webhook"))
        .await
        .expect("the chart's MutatingWebhookConfiguration");
    got.data["webhooks"][0]["clientConfig"]["caBundle"].clone()
}

pub async fn install_upgrade_uninstall() {
    let client = cluster::client().await;
    cluster::namespace(&client, NS, &[]).await;

    let t0 = Instant::now();
    let release = cluster::helm("install", RELEASE, NS, &values("info")).await;
    let installed = objects(&release);
    let kinds: Vec<String> = installed
        .iter()
        .map(|o| format!("{}/{}", o["kind"].as_str().unwrap_or("?"), name_of(o)))
        .collect();
    let scaled = installed
        .iter()
        .filter(|o| o["kind"] == "ScaledObject")
        .count();
    assert_eq!(scaled, 3, "one ScaledObject per worker queue: {kinds:?}");
    for kind in [
        "MutatingWebhookConfiguration",
        "TriggerAuthentication",
        "Deployment",
        "Service",
        "Secret",
        "ServiceAccount",
    ] {
        assert!(
            installed.iter().any(|o| o["kind"] == kind),
            "the release makes a {kind}: {kinds:?}"
        );
    }
    for o in &installed {
        let api = api_for(&client, o, NS).await;
        api.get(name_of(o))
            .await
            .unwrap_or_else(|e| panic!("{} {} in the API server: {e}", o["kind"], name_of(o)));
    }
    measure(format_args!(
        "E1 helm install: {} objects accepted in {:.1} s",
        installed.len(),
        t0.elapsed().as_secs_f64()
    ));

    let ca = secret_field(&client, "aks-airflow-keda-scaler-ca", "tls.crt").await;
    let webhook_cert =
        secret_field(&client, "aks-airflow-keda-scaler-webhook-tls", "tls.crt").await;
    let bundle = ca_bundle(&client).await;
    assert!(bundle.is_string(), "caBundle set: {bundle}");

    let t0 = Instant::now();
    let upgraded = cluster::helm("upgrade", RELEASE, NS, &values("debug")).await;
    let keys: Vec<&String> = upgraded
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    let revision = upgraded
        .get("version")
        .or_else(|| upgraded.get("revision"))
        .unwrap_or_else(|| panic!("a revision in the upgrade summary: {keys:?}"));
    assert_eq!(revision, 2, "revision 2");
    assert_eq!(
        secret_field(&client, "aks-airflow-keda-scaler-ca", "tls.crt").await,
        ca,
        "helm upgrade keeps the generated CA"
    );
    assert_eq!(
        secret_field(&client, "aks-airflow-keda-scaler-webhook-tls", "tls.crt").await,
        webhook_cert,
        "and the webhook's certificate"
    );
    assert_eq!(ca_bundle(&client).await, bundle, "and the caBundle");
    measure(format_args!(
        "E1 helm upgrade: CA kept, {:.1} s",
        t0.elapsed().as_secs_f64()
    ));

    let t0 = Instant::now();
    cluster::helm("uninstall", RELEASE, NS, &json!({})).await;
    for o in &installed {
        let api = api_for(&client, o, NS).await;
        let what = format!("{} {} deleted", o["kind"], name_of(o));
        eventually(&what, Duration::from_secs(60), || async {
            match api.get_opt(name_of(o)).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(left) => Err(format!(
                    "still there, finalizers {:?}",
                    left.metadata.finalizers
                )),
            }
        })
        .await;
    }
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), NS);
    eventually("KEDA's HPAs removed", Duration::from_secs(60), || async {
        let left = hpas
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        left.items
            .is_empty()
            .then_some(())
            .ok_or_else(|| format!("{} left", left.items.len()))
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let releases = secrets
        .list(&ListParams::default().labels("owner=helm"))
        .await
        .expect("list Secrets");
    assert!(releases.items.is_empty(), "no Helm release record left");
    measure(format_args!(
        "E1 helm uninstall: nothing left after {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
}
