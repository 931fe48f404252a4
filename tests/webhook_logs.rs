//! The webhook never logs a pod's args (where Airflow puts the workload and its task token) nor
//! a pod's body, at any level: every log line of this process, down to `trace` (hyper, h2,
//! rustls included), is captured while the server answers reviews of the Airflow-built pods —
//! admitted, denied, warned about, malformed — and searched for them.
//!
//! Its own test binary: the subscriber is process-wide.

use std::{
    io::Write,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use airflow_keda_scaler::webhook::server::{self, TlsSource, WebhookConfig};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn airflow_pod(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/webhook/airflow-3.3.2")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn review(uid: &str, object: &Value) -> String {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "airflow",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:airflow:airflow-scheduler"},
            "object": object,
        }
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_args_nor_pod_bodies_are_logged_at_any_level() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the only subscriber of this test binary");

    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/webhook-policy.yaml");
    let mut text = std::fs::read_to_string(example).unwrap();
    // Sidecars denied (the istio pod is refused: a denial is logged), unknown profiles warned.
    text = text
        .replace("sidecars: warn", "sidecars: deny")
        .replace("unknownProfile: deny", "unknownProfile: warn");
    std::fs::write(&policy, text).unwrap();
    let token = CancellationToken::new();
    let server = server::start(
        WebhookConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            tls: TlsSource::SelfSigned {
                hosts: vec!["localhost".into()],
            },
            policy,
            reload_interval: Duration::from_secs(1),
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(5),
            max_in_flight: 8,
        },
        token.clone(),
    )
    .await
    .unwrap();
    let url = format!("https://localhost:{}/mutate", server.addr.port());
    let h2 = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let h1 = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .http1_only()
        .build()
        .unwrap();

    let mut bodies = Vec::new();
    for name in [
        "plain",
        "plain.api-server-defaulted",
        "mapped_try3",
        "override_resources",
        "sidecar_istio_allowed",
        "native_sidecar_init",
    ] {
        let pod = airflow_pod(name);
        bodies.push((
            format!("uid-{name}"),
            review(&format!("uid-{name}"), &pod),
            200,
        ));
        for profile in ["large", "gpu", "no-such-profile"] {
            let mut p = pod.clone();
            p["metadata"]["annotations"]["airflow-keda-scaler/profile"] = json!(profile);
            let uid = format!("uid-{name}-{profile}");
            bodies.push((uid.clone(), review(&uid, &p), 200));
        }
    }
    // A pod the decoder refuses (args as one string) and a body cut in the middle of the args.
    let mut broken = airflow_pod("plain");
    broken["spec"]["containers"][0]["args"] = broken["spec"]["containers"][0]["args"][4].clone();
    bodies.push(("uid-broken".into(), review("uid-broken", &broken), 400));
    let whole = review("uid-cut", &airflow_pod("plain"));
    let cut = whole[..whole.find("dag_rel_path").unwrap()].to_owned();
    bodies.push(("uid-cut".into(), cut, 400));

    for client in [&h2, &h1] {
        for (uid, body, status) in &bodies {
            let resp = client.post(&url).body(body.clone()).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), *status, "{uid}");
            let text = resp.text().await.unwrap();
            assert!(!text.contains("eyJhbGciOi"), "{uid}: token in the answer");
        }
    }
    token.cancel();
    server.wait().await.unwrap();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    // The capture works: every review has its line, the denial and the rejection are there.
    for (uid, _, _) in &bodies {
        assert!(
            logs.contains(uid.as_str()) || uid == "uid-cut",
            "no line for {uid}"
        );
    }
    assert!(logs.contains("outcome=denied"), "no denial logged");
    assert!(
        logs.contains("admission review rejected"),
        "no rejection logged"
    );
    assert!(logs.contains("admission warning"), "no warning logged");
    assert!(logs.contains("TRACE"), "not captured at trace level");
    for secret in [
        "eyJhbGciOi",       // the task's JWT
        "dag_rel_path",     // the workload JSON
        "execute_workload", // the args
        "--json-string",
        "apache/airflow:3.3.2",    // the pod body
        "airflow-fernet-key",      // env from Secrets
        "AIRFLOW__CORE__EXECUTOR", // env
    ] {
        assert!(
            !logs.contains(secret),
            "`{secret}` logged:\n{}",
            logs.lines()
                .filter(|l| l.contains(secret))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
