//! E5: the pod-override webhook called by the real API server, configured exactly as the chart
//! renders it: `clientConfig.service` (the API server dials the Service's ClusterIP, where the
//! webhook process listens) and the chart's generated certificate (checked by the API server
//! against `<service>.<namespace>.svc`). Pods are Airflow's own (tests/fixtures/webhook/airflow-3.3.2),
//! created through the API and read back.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::{admissionregistration::v1::MutatingWebhookConfiguration, core::v1::Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::{Value, json};

use crate::{
    cluster::{self, apply, eventually, find, measure},
    kubelet::{self, Process},
};

const RELEASE: &str = "aks";
const WEBHOOK: &str = "aks-airflow-keda-scaler-webhook";

pub struct Webhook {
    pub client: Client,
    /// Namespace of the Airflow task pods.
    pub tasks: String,
    pub process: Process,
    pub timeout_seconds: i64,
    pub cluster_ip: String,
    pub pods: Api<Pod>,
}

/// tests/fixtures/webhook/airflow-3.3.2/<name>: pods built by Airflow itself.
pub fn airflow_pod(name: &str) -> Value {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhook/airflow-3.3.2");
    let text = std::fs::read_to_string(dir.join(name)).expect("Airflow pod fixture");
    serde_json::from_str(&text).expect("pod JSON")
}

fn policy() -> Value {
    let text = include_str!("../fixtures/webhook/policy.yaml");
    serde_saphyr::from_str(text).expect("policy YAML")
}

/// Installs the chart's webhook objects in `release_ns` and runs the webhook Deployment's
/// container on the Service's ClusterIP; Airflow's pods go to `tasks_ns`.
pub async fn setup(release_ns: &str, tasks_ns: &str, extra: Value) -> Webhook {
    let client = cluster::client().await;
    // Webhook configurations of earlier scenarios (their processes are gone) are removed so
    // that only this scenario's webhooks see its pods.
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    mwcs.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("delete old webhook configurations");
    cluster::namespace(&client, release_ns, &[]).await;
    cluster::namespace(&client, tasks_ns, &["airflow-worker"]).await;
    let mut values = json!({
        "webhook": {"enabled": true, "policy": policy(), "timeoutSeconds": 5},
    });
    cluster::merge(&mut values, &extra);
    let docs = cluster::render(RELEASE, release_ns, &values).await;
    let mwc = find(&docs, "MutatingWebhookConfiguration", WEBHOOK);
    let hook = &mwc["webhooks"][0];
    assert_eq!(hook["clientConfig"]["service"]["name"], WEBHOOK);
    assert!(hook["clientConfig"].get("url").is_none());
    let timeout_seconds = hook["timeoutSeconds"].as_i64().expect("timeoutSeconds");
    for doc in &docs {
        apply(&client, doc, release_ns).await;
    }
    let (svc, ip) = kubelet::cluster_ip(&client, release_ns, WEBHOOK).await;
    cluster::add_address(&ip);
    cluster::add_hosts(
        &ip,
        &[
            &format!("{WEBHOOK}.{release_ns}.svc"),
            &format!("{WEBHOOK}.{release_ns}.svc.cluster.local"),
        ],
    );
    let mut process = kubelet::run_deployment(&client, release_ns, WEBHOOK, &ip, Some(&svc)).await;
    process.wait_listening().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), tasks_ns);
    Webhook {
        client,
        tasks: tasks_ns.into(),
        process,
        timeout_seconds,
        cluster_ip: ip,
        pods,
    }
}

impl Webhook {
    /// Creates `pod` (renamed, moved to the tasks namespace) through the API server.
    pub async fn create(&self, mut pod: Value, name: &str) -> Result<Pod, kube::Error> {
        pod["metadata"]["name"] = json!(name);
        pod["metadata"]["namespace"] = json!(self.tasks);
        let pod: Pod = serde_json::from_value(pod).expect("a Pod");
        self.pods.create(&PostParams::default(), &pod).await?;
        Ok(self.pods.get(name).await.expect("read the pod back"))
    }

    /// Total admission reviews the webhook answered (its /metrics).
    pub async fn reviews(&self) -> u64 {
        let text = reqwest::get(format!("http://{}:8080/metrics", self.cluster_ip))
            .await
            .expect("webhook metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|l| l.starts_with("airflow_keda_scaler_webhook_reviews_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

fn to_value(pod: &Pod) -> Value {
    serde_json::to_value(pod).expect("pod JSON")
}

fn base(pod: &Value) -> &Value {
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["name"], "base", "base stays first");
    c
}

/// The policy's node type `small` and the default resources on a pod that asked for nothing.
fn assert_small_defaults(pod: &Value, original: &Value) {
    let b = base(pod);
    assert_eq!(
        b["resources"],
        json!({"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}),
        "policy defaults"
    );
    assert_eq!(
        b["args"], original["spec"]["containers"][0]["args"],
        "args untouched"
    );
    assert_eq!(pod["spec"]["nodeSelector"], json!({"pool": "small"}));
    let small: Vec<&Value> = pod["spec"]["tolerations"]
        .as_array()
        .expect("tolerations")
        .iter()
        .filter(|t| t["value"] == "small")
        .collect();
    assert_eq!(small.len(), 1, "one toleration for node type small");
    assert!(
        pod["metadata"]["annotations"]["airflow-keda-scaler/applied"]
            .as_str()
            .is_some_and(|a| a.contains("node type small")),
        "{}",
        pod["metadata"]["annotations"]
    );
}

pub async fn mutates_airflow_pods() {
    let w = setup("e5-mutate", "airflow-e5-mutate", json!({})).await;

    let plain = airflow_pod("plain.json");
    let p = to_value(
        &w.create(plain.clone(), "plain")
            .await
            .expect("create plain"),
    );
    assert_small_defaults(&p, &plain);
    assert_eq!(
        p["metadata"]["labels"], plain["metadata"]["labels"],
        "Airflow's labels untouched"
    );

    let mapped = airflow_pod("mapped_try3.json");
    let p = to_value(
        &w.create(mapped.clone(), "mapped")
            .await
            .expect("create mapped"),
    );
    assert_small_defaults(&p, &mapped);

    // A pod_override with its own resources keeps them.
    let own = airflow_pod("override_resources.json");
    let p = to_value(
        &w.create(own.clone(), "own-resources")
            .await
            .expect("create own"),
    );
    assert_eq!(
        base(&p)["resources"]["requests"],
        own["spec"]["containers"][0]["resources"]["requests"]
    );
    assert_eq!(p["spec"]["nodeSelector"], json!({"pool": "small"}));

    // Profile `large`: node type big and scratch space.
    let mut large = airflow_pod("plain.json");
    large["metadata"]["annotations"]["airflow-keda-scaler/profile"] = json!("large");
    let p = to_value(&w.create(large, "large").await.expect("create large"));
    assert_eq!(p["spec"]["nodeSelector"], json!({"pool": "big"}));
    assert_eq!(
        base(&p)["resources"]["requests"],
        json!({"cpu": "8", "memory": "32Gi"})
    );
    let scratch = p["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["emptyDir"]["sizeLimit"] == "20Gi")
        .unwrap_or_else(|| panic!("a 20Gi emptyDir in {}", p["spec"]["volumes"]))
        .clone();
    assert!(
        base(&p)["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .any(|m| m["mountPath"] == "/scratch" && m["name"] == scratch["name"]),
        "scratch space mounted at /scratch"
    );

    // Not a KubernetesExecutor pod: the objectSelector keeps it away from the webhook.
    let nginx = airflow_pod("x_nginx.json");
    let p = to_value(
        &w.create(nginx.clone(), "nginx")
            .await
            .expect("create nginx"),
    );
    assert!(p["spec"].get("nodeSelector").is_none_or(Value::is_null));
    assert!(p["metadata"]["annotations"]["airflow-keda-scaler/applied"].is_null());
    measure(format_args!(
        "E5: {} admission reviews answered",
        w.reviews().await
    ));
}

pub async fn refuses_oversize_pod() {
    let w = setup("e5-oversize", "airflow-e5-oversize", json!({})).await;
    let mut big = airflow_pod("plain.json");
    big["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "6", "memory": "2Gi"}});
    let err = w
        .create(big, "too-big")
        .await
        .expect_err("the API server refuses the pod");
    let kube::Error::Api(status) = &err else {
        panic!("not an API error: {err}");
    };
    let msg = &status.message;
    for part in [
        "pod-overrides.airflow-keda-scaler.io",
        "denied the request",
        "6 CPU",
        "`small` offers 4 CPU",
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg:?}");
    }
    assert!(
        w.pods.get_opt("too-big").await.expect("get").is_none(),
        "nothing was created"
    );
    measure(format_args!(
        "E5 oversize: API error {}: {msg}",
        status.code
    ));
}

pub async fn down_fails_open() {
    let mut w = setup("e5-down", "airflow-e5-down", json!({})).await;
    w.process.stop();
    let plain = airflow_pod("plain.json");
    let t0 = Instant::now();
    let p = to_value(
        &w.create(plain.clone(), "unmodified")
            .await
            .expect("failurePolicy Ignore: the pod is created"),
    );
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(w.timeout_seconds as u64),
        "created within timeoutSeconds ({}s): took {took:?}",
        w.timeout_seconds
    );
    assert!(
        p["spec"].get("nodeSelector").is_none_or(Value::is_null),
        "unmodified"
    );
    assert!(p["metadata"]["annotations"]["airflow-keda-scaler/applied"].is_null());
    assert!(
        base(&p)["resources"]
            .as_object()
            .is_none_or(|r| r.is_empty()),
        "no resources added: {}",
        base(&p)["resources"]
    );
    measure(format_args!(
        "E5 webhook down: pod created unmodified in {:.2} s (timeoutSeconds {})",
        took.as_secs_f64(),
        w.timeout_seconds
    ));
}

/// A second webhook adds a container; ours (reinvocationPolicy IfNeeded) runs again and the
/// result is still valid (idempotent: nothing doubled).
pub async fn reinvocation() {
    let w = setup(
        "e5-reinvoke",
        "airflow-e5-reinvoke",
        json!({"webhook": {"reinvocationPolicy": "IfNeeded"}}),
    )
    .await;
    let sidecar = SidecarWebhook::start().await;
    apply(
        &w.client,
        &json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "zz-e2e-add-sidecar"},
            "webhooks": [{
                "name": "add-sidecar.e2e.invalid",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "timeoutSeconds": 5,
                "failurePolicy": "Fail",
                "reinvocationPolicy": "Never",
                "clientConfig": {"url": sidecar.url(), "caBundle": sidecar.ca_bundle()},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": w.tasks}},
                "objectSelector": {"matchLabels": {"kubernetes_executor": "True"}},
            }],
        }),
        "default",
    )
    .await;
    // Wait until the API server's webhook informer has the new configuration: dry-run pod
    // creations (admission runs, nothing is stored) until the second webhook is called.
    let mut probe = airflow_pod("plain.json");
    probe["metadata"]["name"] = json!("informer-probe");
    probe["metadata"]["namespace"] = json!(w.tasks);
    let probe: Pod = serde_json::from_value(probe).expect("a Pod");
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    eventually(
        "the API server calls the second webhook",
        Duration::from_secs(30),
        || async {
            let seen = sidecar.calls();
            w.pods
                .create(&dry_run, &probe)
                .await
                .map_err(|e| e.to_string())?;
            if sidecar.calls() > seen {
                Ok(())
            } else {
                Err("not called yet".to_string())
            }
        },
    )
    .await;
    let before = w.reviews().await;
    let plain = airflow_pod("plain.json");
    let p = to_value(&w.create(plain.clone(), "reinvoked").await.expect("create"));
    let after = w.reviews().await;
    let names: Vec<&str> = p["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        ["base", "log-shipper"],
        "the second webhook's container"
    );
    assert_small_defaults(&p, &plain);
    assert!(
        sidecar.calls() >= 1,
        "the second webhook was called ({})",
        sidecar.calls()
    );
    assert_eq!(
        after - before,
        2,
        "our webhook was called again after the second one changed the pod"
    );
    measure(format_args!(
        "E5 reinvocation: our webhook answered {} reviews for one pod",
        after - before
    ));
}

/// A minimal mutating webhook (the test's own, on loopback) that appends a `log-shipper`
/// container, served over HTTPS with a throw-away CA.
pub struct SidecarWebhook {
    addr: std::net::SocketAddr,
    ca_pem: String,
    calls: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SidecarWebhook {
    pub async fn start() -> Self {
        use base64::Engine;
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = ca.self_signed(&ca_key).expect("CA").pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("certificate");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = calls.clone();
        let app = axum::Router::new().route(
            "/mutate",
            axum::routing::post(move |axum::Json(review): axum::Json<Value>| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let has = review["request"]["object"]["spec"]["containers"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["name"] == "log-shipper"));
                    let mut response = json!({"uid": review["request"]["uid"], "allowed": true});
                    if !has {
                        let patch = json!([{"op": "add", "path": "/spec/containers/-", "value": {
                            "name": "log-shipper", "image": "fluent-bit:3",
                            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                        }}]);
                        response["patchType"] = json!("JSONPatch");
                        response["patch"] = json!(
                            base64::engine::general_purpose::STANDARD.encode(patch.to_string())
                        );
                    }
                    axum::Json(json!({
                        "apiVersion": "admission.k8s.io/v1",
                        "kind": "AdmissionReview",
                        "response": response,
                    }))
                }
            }),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        Self {
            addr,
            ca_pem,
            calls,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}/mutate", self.addr)
    }

    pub fn ca_bundle(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&self.ca_pem)
    }

    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for SidecarWebhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}
