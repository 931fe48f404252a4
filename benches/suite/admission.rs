//! P5: webhook reviews per second and latency over TLS, with Airflow 3 KubernetesExecutor pods
//! and the example policy (`deploy/examples/webhook-policy.yaml`, every feature in use),
//! against the same TLS server (same rustls configuration, same hyper/axum stack) answering a
//! fixed "allowed".

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use airflow_keda_scaler::{
    runtime::tls::{self, CertStore},
    webhook::{
        metrics::Metrics,
        policy::Policy,
        review,
        server::{self as webhook, TlsSource, WebhookConfig},
    },
};
use axum::{
    Router,
    body::Bytes,
    extract::DefaultBodyLimit,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::post,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use crate::{
    common::{Mode, Row, fmt_dur, median, server_runtime},
    grpc::{Load, errors_note, summarize},
    say,
};

/// The policy used: the shipped example.
pub fn policy_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/webhook-policy.yaml")
}

/// A certificate for `localhost` / `127.0.0.1` written to `dir` (cert, key paths and PEMs).
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn write_cert(dir: &Path) -> Cert {
    let (cert_pem, key_pem) =
        tls::self_signed(&["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, &key_pem).unwrap();
    Cert {
        cert,
        key,
        cert_pem,
        key_pem,
    }
}

/// An Airflow 3.3.2 KubernetesExecutor task pod as the API server sends it (after defaulting),
/// shaped like the pods Airflow builds (`tests/fixtures/webhook/airflow-3.3.2/`): the workload,
/// with its task token, inline in `--json-string`; no workload volume. Variant `i` of eight:
/// plain, profiles, rule matches, own resources.
pub fn pod(i: usize) -> Value {
    let v = i % 8;
    let (dag, task) = match v {
        3 => ("reporting_daily_003", "render_pdf"),
        4 => ("ml_train_042", "train_model"),
        _ => ("etl_orders_017", "load_warehouse"),
    };
    let run_id = "scheduled__2025-06-01T12:00:00+00:00";
    let name = format!(
        "{}-{}-{:08x}",
        dag.replace('_', "-"),
        task.replace('_', "-"),
        i * 7919
    );
    let mut labels = json!({
        "airflow-worker": "42",
        "airflow_version": "3.3.2",
        "dag_id": dag,
        "task_id": task,
        "run_id": "scheduled__2025-06-01T1200000000-5d2f1a9c0",
        "try_number": "1",
        "kubernetes_executor": "True",
        "logical_date": "2025-06-01T12_00_00_plus_00_00",
    });
    let mut annotations = json!({
        "dag_id": dag,
        "task_id": task,
        "run_id": run_id,
        "try_number": "1",
        "logical_date": "2025-06-01T12:00:00+00:00",
    });
    match v {
        1 => annotations["airflow-keda-scaler/profile"] = json!("medium"),
        2 => annotations["airflow-keda-scaler/profile"] = json!("large"),
        5 => labels["team"] = json!("finance"),
        7 => annotations["airflow-keda-scaler/profile"] = json!("gpu"),
        _ => {}
    }
    let resources = if v == 6 {
        json!({"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}})
    } else {
        json!({})
    };
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "airflow",
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "containers": [{
                "name": "base",
                "image": "registry.example.com/airflow:3.3.2-python3.12",
                "imagePullPolicy": "IfNotPresent",
                "args": ["python", "-m", "airflow.sdk.execution_time.execute_workload",
                         "--json-string", workload(dag, task, run_id, i)],
                "env": [
                    {"name": "AIRFLOW_IS_K8S_EXECUTOR_POD", "value": "True"},
                    {"name": "AIRFLOW__CORE__EXECUTOR", "value": "CeleryExecutor,KubernetesExecutor"},
                    {"name": "AIRFLOW__CORE__FERNET_KEY", "valueFrom": {"secretKeyRef": {"name": "airflow-fernet-key", "key": "fernet-key"}}},
                    {"name": "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "valueFrom": {"secretKeyRef": {"name": "airflow-metadata", "key": "connection"}}},
                    {"name": "AIRFLOW_CONN_AIRFLOW_DB", "valueFrom": {"secretKeyRef": {"name": "airflow-metadata", "key": "connection"}}},
                    {"name": "AIRFLOW__API__SECRET_KEY", "valueFrom": {"secretKeyRef": {"name": "airflow-api-secret-key", "key": "api-secret-key"}}},
                    {"name": "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "value": "http://airflow-api-server:8080/execution/"},
                    {"name": "AWS_DEFAULT_REGION", "value": "eu-west-1"},
                ],
                "resources": resources,
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "volumeMounts": [
                    {"name": "logs", "mountPath": "/opt/airflow/logs"},
                    {"name": "config", "mountPath": "/opt/airflow/airflow.cfg", "subPath": "airflow.cfg", "readOnly": true},
                    {"name": "kube-api-access-q9w8e", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true},
                ],
                "securityContext": {"runAsUser": 50000, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            }],
            "dnsPolicy": "ClusterFirst",
            "enableServiceLinks": true,
            "priority": 0,
            "restartPolicy": "Never",
            "schedulerName": "default-scheduler",
            "securityContext": {"fsGroup": 0, "runAsUser": 50000},
            "serviceAccountName": "airflow-worker",
            "terminationGracePeriodSeconds": 600,
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            ],
            "volumes": [
                {"name": "logs", "emptyDir": {}},
                {"name": "config", "configMap": {"name": "airflow-config", "defaultMode": 420}},
                {"name": "kube-api-access-q9w8e", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                ]}},
            ],
        },
    })
}

/// The `--json-string` argument Airflow 3.3.2 gives a task: the workload with its JWT (a
/// placeholder of a real token's length).
fn workload(dag: &str, task: &str, run_id: &str, i: usize) -> String {
    json!({
        "token": format!("eyJhbGciOiJIUzUxMiJ9.{}.sig", "x".repeat(380)),
        "dag_rel_path": format!("dags/{dag}.py"),
        "bundle_info": {"name": "dags-folder", "version": null},
        "log_path": format!("dag_id={dag}/run_id={run_id}/task_id={task}/attempt=1.log"),
        "ti": {
            "id": format!("0b6c2f4e-{:04x}-4a5b-9c8d-{:012x}", i % 0xffff, i),
            "task_id": task, "dag_id": dag, "run_id": run_id, "try_number": 1,
            "dag_version_id": "98bdc8db-a228-4045-9c8c-e37a51eeb942", "map_index": -1,
            "hostname": null, "context_carrier": null, "queue": "default", "pool_slots": 1,
            "priority_weight": 1,
        },
        "sentry_integration": "",
        "type": "ExecuteTask",
    })
    .to_string()
}

/// The AdmissionReview the API server sends for `pod(i)`.
pub fn review(i: usize) -> Vec<u8> {
    let object = pod(i);
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("0b6c2f4e-{:04x}-4a5b-9c8d-{:012x}", i % 0xffff, i),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": object["metadata"]["name"],
            "namespace": "airflow",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:airflow:airflow-scheduler",
                "uid": "5d8d3e0c-8c3f-4d7e-9a51-0e1c1f6b7a10",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:airflow", "system:authenticated"],
            },
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        }
    })
    .to_string()
    .into_bytes()
}

const FIXED: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"0b6c2f4e-0000-4a5b-9c8d-000000000000","allowed":true}}"#;

async fn fixed(_body: Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], FIXED)
}

/// The baseline: same rustls configuration and HTTP stack as the webhook, fixed answer.
pub async fn start_fixed(cert: &Cert, shutdown: CancellationToken) -> SocketAddr {
    let store = Arc::new(CertStore::new());
    store.set(
        tls::certified_key(
            cert.cert_pem.as_bytes(),
            cert.key_pem.as_bytes(),
            "cert",
            "key",
            &tls::provider(),
        )
        .unwrap(),
    );
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(store).unwrap()));
    let timeout = Duration::from_secs(10);
    let router = Router::new()
        .route("/mutate", post(fixed))
        .layer(DefaultBodyLimit::max(3 * 1024 * 1024))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                () = shutdown.cancelled() => break,
                a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            };
            // What every latency-sensitive TCP server does (see docs/performance.md, P5).
            let _ = tcp.set_nodelay(true);
            let (acceptor, router, shutdown) = (acceptor.clone(), router.clone(), shutdown.clone());
            tokio::spawn(async move {
                let Ok(Ok(tls)) = tokio::time::timeout(timeout, acceptor.accept(tcp)).await else {
                    return;
                };
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(timeout);
                let conn =
                    builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(router));
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = shutdown.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
    });
    addr
}

/// Starts the real webhook in-process; waits until it is ready.
pub async fn start_webhook(cert: &Cert, shutdown: CancellationToken) -> webhook::RunningWebhook {
    let config = WebhookConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        tls: TlsSource::Files {
            cert: cert.cert.clone(),
            key: cert.key.clone(),
        },
        policy: policy_path(),
        reload_interval: Duration::from_secs(5),
        max_body_bytes: 3 * 1024 * 1024,
        request_timeout: Duration::from_secs(10),
        max_in_flight: 8,
    };
    let running = webhook::start(config, shutdown).await.unwrap();
    for _ in 0..500 {
        if running.state.not_ready().is_none() {
            return running;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("webhook not ready: {:?}", running.state.not_ready());
}

/// One HTTPS client (its own connection) trusting `cert`.
pub fn client(cert: &Cert, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert_pem.as_bytes()).unwrap())
        .resolve("localhost", addr)
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub fn url(addr: SocketAddr) -> String {
    format!("https://localhost:{}/mutate", addr.port())
}

/// Checks every body variant once: HTTP/2, 200, allowed, uid echoed. Returns a description.
pub async fn check(client: &reqwest::Client, addr: SocketAddr, bodies: &[Bytes]) -> String {
    let mut patched = 0;
    let mut version = None;
    for (i, body) in bodies.iter().enumerate().take(8) {
        let resp = client
            .post(url(addr))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        version = Some(resp.version());
        assert_eq!(resp.status(), 200, "variant {i}");
        let v: Value = resp.json().await.unwrap();
        let r = &v["response"];
        assert_eq!(r["allowed"], json!(true), "variant {i}: {r}");
        let sent: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(r["uid"], sent["request"]["uid"], "uid echoed");
        if r.get("patch").is_some() {
            patched += 1;
        }
    }
    let version = version.map_or_else(|| "?".to_string(), |v| format!("{v:?}"));
    format!("{version}, {patched}/8 variants patched")
}

/// Closed-loop reviews from every client for `window`.
pub async fn load(
    clients: &[reqwest::Client],
    addr: SocketAddr,
    bodies: &[Bytes],
    window: Duration,
) -> Load {
    let warmup = Duration::from_millis(200).min(window / 2);
    let start = Instant::now() + warmup;
    let end = start + window;
    let mut tasks = Vec::new();
    for (w, client) in clients.iter().enumerate() {
        let (client, bodies, url) = (client.clone(), bodies.to_vec(), url(addr));
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 15);
            let mut errors = 0u64;
            let mut i = w;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let body = bodies[i % bodies.len()].clone();
                i += 1;
                let ok = match client
                    .post(&url)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                    _ => false,
                };
                let done = Instant::now();
                if t >= start {
                    if ok {
                        lat.push(u32::try_from((done - t).as_nanos()).unwrap_or(u32::MAX));
                    } else {
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        }));
    }
    Load::gather(tasks, window).await
}

pub fn clients(mode: &Mode) -> usize {
    std::env::var("AKS_BENCH_WEBHOOK_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if mode.smoke { 2 } else { 8 })
}

/// CPU time of the review itself (parse, decide, patch, encode), one thread, no I/O. Counted
/// in this thread's CPU time (`/proc/thread-self/schedstat`), not wall time, so that other
/// processes on a shared machine do not inflate it; wall time where that file is missing.
pub fn review_cost(bodies: &[Bytes], budget: Duration) -> Duration {
    let policy = Policy::load(&policy_path()).unwrap();
    let metrics = Metrics::new();
    let mut n = 0u32;
    let start = Instant::now();
    let cpu_start = thread_cpu();
    while start.elapsed() < budget {
        for body in bodies {
            let h = review::handle(&policy, &metrics, body).unwrap();
            std::hint::black_box(serde_json::to_vec(&h.response).unwrap());
            n += 1;
        }
    }
    let spent = match (cpu_start, thread_cpu()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => start.elapsed(),
    };
    spent / n.max(1)
}

/// Reference, same run, same thread clock: what decoding alone cost before issue 13 (the
/// review into kube's `DynamicObject`, the object back to a `Value`, then a typed `Pod`).
pub fn old_decode_cost(bodies: &[Bytes], budget: Duration) -> Duration {
    use k8s_openapi::api::core::v1::Pod;
    use kube::core::{DynamicObject, admission::AdmissionReview};
    let mut n = 0u32;
    let start = Instant::now();
    let cpu_start = thread_cpu();
    while start.elapsed() < budget {
        for body in bodies {
            let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body).unwrap();
            let object = review.request.and_then(|r| r.object).unwrap();
            let value = serde_json::to_value(&object).unwrap();
            std::hint::black_box(serde_json::from_value::<Pod>(value).unwrap());
            n += 1;
        }
    }
    let spent = match (cpu_start, thread_cpu()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => start.elapsed(),
    };
    spent / n.max(1)
}

/// `--reviews N`: run only N in-process reviews of [`bodies`] (no server, no database), to
/// count instructions per review with `valgrind --tool=callgrind` (docs/performance.md, P5).
pub fn reviews_arg() -> Option<usize> {
    let mut args = std::env::args().skip_while(|a| a != "--reviews");
    args.next()?;
    args.next().and_then(|n| n.parse().ok())
}

/// N reviews, each as [`review_cost`] counts it (parse, decide, patch, encode the response).
pub fn run_reviews(n: usize) {
    let policy = Policy::load(&policy_path()).unwrap();
    let bodies = bodies();
    review_loop(&policy, &bodies, n);
    say!("{n} reviews done");
}

/// The measured loop (`callgrind --toggle-collect='*review_loop*'`).
#[inline(never)]
fn review_loop(policy: &Policy, bodies: &[Bytes], n: usize) {
    let metrics = Metrics::new();
    for body in bodies.iter().cycle().take(n) {
        let h = review::handle(policy, &metrics, body).unwrap();
        std::hint::black_box(serde_json::to_vec(&h.response).unwrap());
    }
}

/// CPU time this thread has run, from the first field of `/proc/thread-self/schedstat` (ns).
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

pub fn bodies() -> Vec<Bytes> {
    (0..64).map(|i| Bytes::from(review(i))).collect()
}

/// P5.
pub fn p5(mode: &Mode) -> Row {
    let n = clients(mode);
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path());
    let bodies = bodies();
    let server_rt = server_runtime("p5-server", 2);
    let client_rt = server_runtime("p5-client", 2);
    let shutdown = CancellationToken::new();
    let fixed_addr = server_rt.block_on(start_fixed(&cert, shutdown.clone()));
    let running = server_rt.block_on(start_webhook(&cert, shutdown.clone()));
    let real_addr = running.addr;

    let (fixed, real, mut ratios, checked) = client_rt.block_on(async {
        let fixed_clients: Vec<_> = (0..n).map(|_| client(&cert, fixed_addr)).collect();
        let real_clients: Vec<_> = (0..n).map(|_| client(&cert, real_addr)).collect();
        let checked = check(&real_clients[0], real_addr, &bodies).await;
        say!("  P5: webhook answers checked: {checked}");
        let (mut fixed, mut real, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 0..mode.reps {
            let (a, b) = if rep % 2 == 0 {
                let a = load(&fixed_clients, fixed_addr, &bodies, mode.window).await;
                let b = load(&real_clients, real_addr, &bodies, mode.window).await;
                (a, b)
            } else {
                let b = load(&real_clients, real_addr, &bodies, mode.window).await;
                let a = load(&fixed_clients, fixed_addr, &bodies, mode.window).await;
                (a, b)
            };
            say!(
                "  P5 rep {rep}: webhook {:.0}/s p50 {} p99 {} | fixed {:.0}/s p50 {} p99 {}",
                b.rps,
                fmt_dur(b.p50),
                fmt_dur(b.p99),
                a.rps,
                fmt_dur(a.p50),
                fmt_dur(a.p99)
            );
            ratios.push(b.rps / a.rps.max(1.0));
            fixed.push(a);
            real.push(b);
        }
        (fixed, real, ratios, checked)
    });
    client_rt.shutdown_timeout(Duration::from_secs(2));
    shutdown.cancel();
    server_rt.block_on(async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), running.wait()).await;
    });
    server_rt.shutdown_timeout(Duration::from_secs(2));

    let (a, b) = (summarize(&fixed), summarize(&real));
    let ratio = median(&mut ratios);
    let cost = review_cost(
        &bodies,
        if mode.smoke {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        },
    );
    let old_decode = old_decode_cost(
        &bodies,
        if mode.smoke {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        },
    );
    say!(
        "  P5: one review (parse, decide, patch, encode; no I/O) costs {} of CPU on one thread; body {} bytes; the pre-issue-13 decoding alone (DynamicObject → Value → Pod) costs {} on the same bodies",
        fmt_dur(cost),
        bodies[0].len(),
        fmt_dur(old_decode)
    );
    // Issue 13: a review ≤ 50 µs of CPU, p99 ≤ 1.5 ms (the 0.7× ratio was shown unreachable).
    let met = b.rps >= 5000.0
        && b.p99 <= Duration::from_micros(1500)
        && cost <= Duration::from_micros(50)
        && b.errors == 0;
    Row {
        id: "P5".into(),
        figure: format!(
            "webhook reviews over TLS ({n} clients, Airflow 3.3.2-shaped pods, example policy; {checked})"
        ),
        result: format!(
            "{:.0} reviews/s, p50 {}, p99 {}{} (review logic alone: {} CPU each; the old decoding alone: {})",
            b.rps,
            fmt_dur(b.p50),
            fmt_dur(b.p99),
            errors_note(b.errors),
            fmt_dur(cost),
            fmt_dur(old_decode)
        ),
        baseline: format!(
            "same TLS server, fixed \"allowed\": {:.0}/s, p50 {}, p99 {}",
            a.rps,
            fmt_dur(a.p50),
            fmt_dur(a.p99)
        ),
        ratio: format!("{ratio:.2}×"),
        target: "≥ 5 000/s, p99 ≤ 1.5 ms, review ≤ 50 µs CPU".into(),
        verdict: Row::judged(mode.smoke, met),
    }
}
