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
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Uri, client::conn::http2::SendRequest};
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

/// One HTTP/2 connection over TLS, as the API server keeps one to a webhook. Requests go
/// straight onto hyper's connection handle: no pool, no URL parsing, no timer per request, so
/// that the load generator, which shares the machine's two cores with the server, costs as
/// little as it can (reqwest cost about a third more CPU per request here).
#[derive(Clone)]
pub struct Client {
    send: SendRequest<Full<Bytes>>,
    uri: Uri,
}

/// Connects one [`Client`] to `addr`, trusting `cert`, HTTP/2 by ALPN.
pub async fn client(cert: &Cert, addr: SocketAddr) -> Client {
    use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (send, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    Client {
        send,
        uri: format!("https://localhost:{}/mutate", addr.port())
            .parse()
            .unwrap(),
    }
}

impl Client {
    /// POSTs one review; the status and the whole response body.
    pub async fn review(&self, body: Bytes) -> Result<(StatusCode, Bytes), hyper::Error> {
        let mut send = self.send.clone();
        send.ready().await?;
        let request = Request::post(self.uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .expect("a valid request");
        let response = send.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// Checks every body variant once: 200, allowed, uid echoed. Returns a description.
pub async fn check(client: &Client, bodies: &[Bytes]) -> String {
    let mut patched = 0;
    for (i, body) in bodies.iter().enumerate().take(8) {
        let (status, answer) = client.review(body.clone()).await.unwrap();
        assert_eq!(status, 200, "variant {i}");
        let v: Value = serde_json::from_slice(&answer).unwrap();
        let r = &v["response"];
        assert_eq!(r["allowed"], json!(true), "variant {i}: {r}");
        let sent: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(r["uid"], sent["request"]["uid"], "uid echoed");
        if r.get("patch").is_some() {
            patched += 1;
        }
    }
    format!("HTTP/2, {patched}/8 variants patched")
}

/// Closed-loop reviews from every client for `window`: each sends its next review when the
/// last is answered (at saturation, so latency ≈ clients ÷ throughput).
pub async fn load(clients: &[Client], bodies: &[Bytes], window: Duration) -> Load {
    let warmup = Duration::from_millis(200).min(window / 2);
    let start = Instant::now() + warmup;
    let end = start + window;
    let mut tasks = Vec::new();
    for (w, client) in clients.iter().enumerate() {
        let (client, bodies) = (client.clone(), bodies.to_vec());
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
                let ok = matches!(client.review(body).await, Ok((s, _)) if s == 200);
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

/// Open-loop reviews at `rate` per second, evenly spaced, round-robin over the clients'
/// connections, for `window`: arrivals do not wait for answers (as pods created in a cluster do
/// not), so the latency is the server's under that load rather than the time a request queues
/// behind the generator's own. A plain thread paces the sends (`thread::sleep`, finer than
/// tokio's 1 ms timer, which would send them in bursts); each review is timed from the moment
/// it was due, not from when it was sent, so a late pacer counts against the server (no
/// coordinated omission).
pub async fn paced(clients: &[Client], bodies: &[Bytes], rate: u32, window: Duration) -> Load {
    let warmup = Duration::from_millis(200).min(window / 2);
    let handle = tokio::runtime::Handle::current();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<u32>>();
    let (clients, bodies) = (clients.to_vec(), bodies.to_vec());
    let interval_ns = 1_000_000_000 / u64::from(rate.max(1));
    let pacer = std::thread::spawn(move || {
        let realtime = realtime_priority();
        let mut late: Vec<u32> = Vec::new();
        let began = Instant::now();
        let (start, end) = (began + warmup, began + warmup + window);
        for k in 0u64.. {
            let due = began + Duration::from_nanos(k * interval_ns);
            if due >= end {
                break;
            }
            match due.checked_duration_since(Instant::now()) {
                Some(wait) => std::thread::sleep(wait),
                None => late.push(u32::try_from(due.elapsed().as_micros()).unwrap_or(u32::MAX)),
            }
            let i = usize::try_from(k).unwrap_or_default();
            let (client, body) = (
                clients[i % clients.len()].clone(),
                bodies[i % bodies.len()].clone(),
            );
            let tx = tx.clone();
            handle.spawn(async move {
                let ok = matches!(client.review(body).await, Ok((s, _)) if s == 200);
                if due >= start {
                    let ns = u32::try_from(due.elapsed().as_nanos()).unwrap_or(u32::MAX);
                    let _ = tx.send(ok.then_some(ns));
                }
            });
        }
        (late, realtime)
    });
    let (mut lat, mut errors) = (Vec::new(), 0u64);
    // Ends when the pacer and every review it started have dropped their senders.
    while let Some(r) = rx.recv().await {
        match r {
            Some(ns) => lat.push(ns),
            None => errors += 1,
        }
    }
    let (mut late, realtime) = pacer.join().expect("the pacer thread");
    late.sort_unstable();
    if std::env::var_os("AKS_BENCH_PACER").is_some() {
        say!(
            "  pacer (real-time priority: {realtime}): {} of the sends late, worst {} µs, 99th of the late {} µs",
            late.len(),
            late.last().copied().unwrap_or(0),
            late.get(late.len() * 99 / 100).copied().unwrap_or(0)
        );
    }
    Load::of(lat, errors, window)
}

/// Gives the calling thread (the pacer) real-time priority with `chrt` (needs root, as the
/// suite has anyway for its databases): a thread that sleeps between sends must wake on time
/// among four busy ones (two client and two server workers on two cores), or its lateness is
/// counted against the server. Returns whether it took; without it the figures are only more
/// pessimistic.
fn realtime_priority() -> bool {
    let Some(tid) = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|link| link.file_name()?.to_str().map(str::to_owned))
    else {
        return false;
    };
    std::process::Command::new("chrt")
        .args(["--fifo", "--pid", "10", &tid])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
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

    let rate = paced_rate(mode);
    let (runs, mut ratios, checked) = client_rt.block_on(async {
        let mut fixed_clients = Vec::new();
        let mut real_clients = Vec::new();
        for _ in 0..n {
            fixed_clients.push(client(&cert, fixed_addr).await);
            real_clients.push(client(&cert, real_addr).await);
        }
        let checked = check(&real_clients[0], &bodies).await;
        say!("  P5: webhook answers checked: {checked}");
        let mut runs = Runs::default();
        let mut ratios = Vec::new();
        for rep in 0..mode.reps {
            // Alternating which side goes first, so that a slow second is not always one side.
            let mut sides = [(&fixed_clients, false), (&real_clients, true)];
            if rep % 2 == 1 {
                sides.reverse();
            }
            let mut closed = [None, None];
            let mut open = [None, None];
            for (clients, real) in sides {
                closed[usize::from(real)] = Some(load(clients, &bodies, mode.window).await);
                open[usize::from(real)] = Some(paced(clients, &bodies, rate, mode.window).await);
            }
            let [Some(a), Some(b)] = closed else { unreachable!() };
            let [Some(pa), Some(pb)] = open else { unreachable!() };
            say!(
                "  P5 rep {rep}: closed loop: webhook {:.0}/s p50 {} p99 {} | fixed {:.0}/s p50 {} p99 {}; at {rate}/s: webhook p50 {} p99 {} | fixed p50 {} p99 {}",
                b.rps,
                fmt_dur(b.p50),
                fmt_dur(b.p99),
                a.rps,
                fmt_dur(a.p50),
                fmt_dur(a.p99),
                fmt_dur(pb.p50),
                fmt_dur(pb.p99),
                fmt_dur(pa.p50),
                fmt_dur(pa.p99)
            );
            ratios.push(b.rps / a.rps.max(1.0));
            runs.fixed.push(a);
            runs.real.push(b);
            runs.fixed_paced.push(pa);
            runs.real_paced.push(pb);
        }
        (runs, ratios, checked)
    });
    client_rt.shutdown_timeout(Duration::from_secs(2));
    shutdown.cancel();
    server_rt.block_on(async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), running.wait()).await;
    });
    server_rt.shutdown_timeout(Duration::from_secs(2));

    let (a, b) = (summarize(&runs.fixed), summarize(&runs.real));
    let (pa, pb) = (summarize(&runs.fixed_paced), summarize(&runs.real_paced));
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
    // Issue 13: a review ≤ 50 µs of CPU, p99 ≤ 1.5 ms at 8 clients (the 0.7× ratio was shown
    // unreachable). The p99 judged is the one at the throughput target's rate; at saturation
    // (closed loop) latency is clients ÷ throughput by Little's law and is reported beside it.
    let met = b.rps >= 5000.0
        && pb.p99 <= Duration::from_micros(1500)
        && cost <= Duration::from_micros(50)
        && b.errors + pb.errors == 0;
    Row {
        id: "P5".into(),
        figure: format!(
            "webhook reviews over TLS ({n} clients, Airflow 3.3.2-shaped pods, example policy; {checked})"
        ),
        result: format!(
            "at {rate}/s: p50 {}, p99 {}; closed loop: {:.0} reviews/s, p50 {}, p99 {}{} (review logic alone: {} CPU each; the old decoding alone: {})",
            fmt_dur(pb.p50),
            fmt_dur(pb.p99),
            b.rps,
            fmt_dur(b.p50),
            fmt_dur(b.p99),
            errors_note(b.errors + pb.errors),
            fmt_dur(cost),
            fmt_dur(old_decode)
        ),
        baseline: format!(
            "same TLS server, fixed \"allowed\": at {rate}/s p50 {}, p99 {}; closed loop {:.0}/s, p50 {}, p99 {}",
            fmt_dur(pa.p50),
            fmt_dur(pa.p99),
            a.rps,
            fmt_dur(a.p50),
            fmt_dur(a.p99)
        ),
        ratio: format!("{ratio:.2}×"),
        target: "≥ 5 000/s; p99 ≤ 1.5 ms at 5 000/s; review ≤ 50 µs CPU".into(),
        verdict: Row::judged(mode.smoke, met),
    }
}

/// The four loads of one P5 run.
#[derive(Default)]
struct Runs {
    fixed: Vec<Load>,
    real: Vec<Load>,
    fixed_paced: Vec<Load>,
    real_paced: Vec<Load>,
}

/// The open-loop rate: the throughput target (`AKS_BENCH_WEBHOOK_RATE` to change it); smoke
/// runs use a tenth of it.
pub fn paced_rate(mode: &Mode) -> u32 {
    std::env::var("AKS_BENCH_WEBHOOK_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if mode.smoke { 500 } else { 5000 })
}
