//! End-to-end tests of the pod-override webhook: real HTTPS requests to a running server whose
//! certificates are made here (rcgen), AdmissionReviews carrying Airflow 2 / Airflow 3
//! KubernetesExecutor pods, every returned patch applied with json-patch, certificate rotation
//! and policy reload without restart, and the admin commands.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    sync::Arc,
    time::Duration,
};

use airflow_keda_scaler::webhook::{
    commands::{self, MutateOutput, MutateRequest},
    server::{self, RunningWebhook, TlsSource, WebhookConfig},
};
use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/webhook")
        .join(name)
}

fn pod(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

/// A task pod exactly as Airflow 3.3.2 builds it (`tests/fixtures/webhook/airflow-3.3.2/`).
fn airflow_pod(name: &str) -> Value {
    pod(&format!("airflow-3.3.2/{name}.json"))
}

/// The shipped example policy.
fn example_policy() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/webhook-policy.yaml"),
    )
    .unwrap()
}

fn warnings_of(response: &Value) -> Vec<String> {
    response["warnings"]
        .as_array()
        .map(|w| w.iter().map(|w| w.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn instance_type(pod: &Value) -> &Value {
    &pod["spec"]["nodeSelector"]["node.kubernetes.io/instance-type"]
}

fn tolerates(pod: &Value, key: &str, value: Option<&str>) -> bool {
    pod["spec"]["tolerations"].as_array().is_some_and(|ts| {
        ts.iter()
            .any(|t| t["key"] == key && value.is_none_or(|v| t["value"] == v))
    })
}

/// A test CA that signs leaf certificates for `localhost`.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "webhook test CA");
        let cert = params.self_signed(&key).unwrap();
        Self {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// (cert PEM, key PEM, cert DER) of a new leaf named `cn`.
    fn leaf(&self, cn: &str) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

/// Writes a cert/key pair the way a Secret volume does: files are symlinks into a `..data`
/// directory that is swapped atomically.
fn write_secret_volume(dir: &Path, cert: &str, key: &str, generation: u32) {
    let data = dir.join(format!("..{generation}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("tls.crt"), cert).unwrap();
    std::fs::write(data.join("tls.key"), key).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&data, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        let link = dir.join(f);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(f), &link).unwrap();
        }
    }
}

struct Harness {
    server: Option<RunningWebhook>,
    token: CancellationToken,
    ca: Arc<Ca>,
    dir: tempfile::TempDir,
    client: reqwest::Client,
}

impl Harness {
    async fn start(policy: Option<&str>) -> Self {
        Self::start_with(policy, Duration::from_secs(5)).await
    }

    async fn start_with(policy: Option<&str>, request_timeout: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(Ca::new());
        let (cert, key, _) = ca.leaf("leaf-1");
        write_secret_volume(dir.path(), &cert, &key, 1);
        let policy_path = dir.path().join("policy.yaml");
        if let Some(p) = policy {
            std::fs::write(&policy_path, p).unwrap();
        }
        let config = WebhookConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            tls: TlsSource::Files {
                cert: dir.path().join("tls.crt"),
                key: dir.path().join("tls.key"),
            },
            policy: policy_path,
            reload_interval: Duration::from_millis(50),
            max_body_bytes: 256 * 1024,
            request_timeout,
            max_in_flight: 8,
        };
        let token = CancellationToken::new();
        let server = server::start(config, token.clone()).await.unwrap();
        let client = client(&ca);
        Self {
            server: Some(server),
            token,
            ca,
            dir,
            client,
        }
    }

    fn server(&self) -> &RunningWebhook {
        self.server.as_ref().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.server().addr.port())
    }

    fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.server().admin_addr.port())
    }

    async fn post(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url("/mutate"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Sends a review for `pod` and returns the `response` object.
    async fn review(&self, uid: &str, pod: &Value) -> Value {
        let resp = self.post(review(uid, "airflow", pod).to_string()).await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(body["kind"], "AdmissionReview");
        let r = body["response"].clone();
        assert_eq!(r["uid"], uid, "the uid is echoed");
        r
    }

    /// Sends a review that must be admitted; returns the response and the patched pod.
    async fn admitted(&self, uid: &str, pod: &Value) -> (Value, Value) {
        let r = self.review(uid, pod).await;
        assert_eq!(r["allowed"], true, "{uid}: {r}");
        let (patched, _) = apply(&r, pod);
        (r, patched)
    }

    /// Sends a review that must be denied (403, no patch); returns the message.
    async fn denied(&self, uid: &str, pod: &Value) -> String {
        let r = self.review(uid, pod).await;
        assert_eq!(r["allowed"], false, "{uid}: {r}");
        assert_eq!(r["status"]["code"], 403, "{uid}: {r}");
        assert!(r.get("patch").is_none(), "{uid}: {r}");
        r["status"]["message"].as_str().unwrap().to_owned()
    }

    async fn write_policy(&self, text: &str) {
        let path = self.dir.path().join("policy.yaml");
        let tmp = self.dir.path().join("policy.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    async fn stop(mut self) {
        self.token.cancel();
        if let Some(s) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(5), s.wait())
                .await
                .expect("webhook stops within 5 s")
                .expect("no webhook task failed");
        }
    }
}

fn client(ca: &Ca) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .tls_info(true)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn review(uid: &str, namespace: &str, object: &Value) -> Value {
    let kind = object["kind"].as_str().unwrap_or("Pod");
    let (group, version, resource) = match kind {
        "Deployment" => ("apps", "v1", "deployments"),
        _ => ("", "v1", "pods"),
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "name": object["metadata"]["name"],
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:airflow:airflow-scheduler", "groups": ["system:serviceaccounts"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

/// Decodes the base64 JSONPatch of a response and applies it to `pod`.
fn apply(response: &Value, pod: &Value) -> (Value, usize) {
    let Some(encoded) = response.get("patch") else {
        assert!(response.get("patchType").is_none());
        return (pod.clone(), 0);
    };
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.as_str().expect("patch is a base64 string"))
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    (out, patch.0.len())
}

fn base(pod: &Value) -> &Value {
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["name"], "base", "base stays first");
    c
}

fn with_annotation(mut pod: Value, key: &str, value: &str) -> Value {
    pod["metadata"]["annotations"][key] = json!(value);
    pod
}

/// Sends the mutated pod again (as on reinvocation): no further ops.
async fn assert_idempotent(h: &Harness, uid: &str, original: &Value, first: &Value) {
    let again = h.review(uid, original).await;
    assert_eq!(
        again.get("patch"),
        first.get("patch"),
        "same review, same patch"
    );
    let (mutated, _) = apply(first, original);
    let second = h.review(&format!("{uid}-again"), &mutated).await;
    assert_eq!(second["allowed"], true);
    assert!(
        second.get("patch").is_none(),
        "mutated pod sent again must give no patch: {second}"
    );
}

#[tokio::test]
async fn airflow2_pod_without_resources_gets_defaults_and_node_type() {
    let h = Harness::start(Some(
        &std::fs::read_to_string(fixture("policy.yaml")).unwrap(),
    ))
    .await;
    let original = pod("airflow2-pod.yaml");
    let r = h.review("a2-defaults", &original).await;
    assert_eq!(r["allowed"], true);
    let (p, ops) = apply(&r, &original);
    assert!(ops > 0);
    let b = base(&p);
    assert_eq!(
        b["resources"]["requests"],
        json!({"cpu": "1", "memory": "512Mi"})
    );
    assert_eq!(
        b["resources"]["limits"],
        json!({"cpu": "1", "memory": "512Mi"})
    );
    assert_eq!(
        b["args"], original["spec"]["containers"][0]["args"],
        "args untouched"
    );
    assert_eq!(p["spec"]["nodeSelector"], json!({"pool": "small"}));
    let tolerations = p["spec"]["tolerations"].as_array().unwrap();
    assert_eq!(tolerations.len(), 3, "appended after the API server's own");
    assert_eq!(tolerations[2]["value"], "small");
    let applied = p["metadata"]["annotations"]["airflow-keda-scaler/applied"]
        .as_str()
        .unwrap();
    assert!(applied.contains("requests.cpu=1 (defaults)"), "{applied}");
    assert!(
        applied.contains("node type small (defaultNodeType)"),
        "{applied}"
    );
    // Airflow's labels and annotations are untouched.
    assert_eq!(p["metadata"]["labels"], original["metadata"]["labels"]);
    assert_idempotent(&h, "a2-defaults", &original, &r).await;
    h.stop().await;
}

#[tokio::test]
async fn airflow2_pod_with_its_own_resources_keeps_them() {
    let h = Harness::start(Some(
        &std::fs::read_to_string(fixture("policy.yaml")).unwrap(),
    ))
    .await;
    let mut original = pod("airflow2-pod.yaml");
    original["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "2", "memory": "3Gi"}, "limits": {"memory": "3Gi"}});
    let r = h.review("a2-own", &original).await;
    let (p, _) = apply(&r, &original);
    let b = base(&p);
    assert_eq!(
        b["resources"]["requests"],
        json!({"cpu": "2", "memory": "3Gi"})
    );
    // The missing cpu limit is filled, raised to the request rather than the 1 CPU default.
    assert_eq!(
        b["resources"]["limits"],
        json!({"cpu": "2", "memory": "3Gi"})
    );
    assert_idempotent(&h, "a2-own", &original, &r).await;
    h.stop().await;
}

#[tokio::test]
async fn airflow3_pod_with_profile_gets_node_type_and_temp_storage_without_touching_args() {
    let h = Harness::start(Some(
        &std::fs::read_to_string(fixture("policy.yaml")).unwrap(),
    ))
    .await;
    for (i, name) in ["plain", "plain.api-server-defaulted"]
        .into_iter()
        .enumerate()
    {
        let original = with_annotation(airflow_pod(name), "airflow-keda-scaler/profile", "large");
        let uid = format!("a3-large-{i}");
        let r = h.review(&uid, &original).await;
        assert_eq!(r["allowed"], true, "{name}: {r}");
        let (p, _) = apply(&r, &original);
        let b = base(&p);
        let ob = &original["spec"]["containers"][0];
        assert_eq!(
            b["args"], ob["args"],
            "{name}: execute_workload args untouched"
        );
        assert!(
            b["args"][4].as_str().unwrap().contains("\"token\""),
            "the workload and its token are inline in --json-string"
        );
        assert_eq!(
            b["resources"]["requests"],
            json!({"cpu": "8", "memory": "32Gi"})
        );
        assert_eq!(p["spec"]["nodeSelector"], json!({"pool": "big"}));
        // Airflow's volumes and mounts unchanged and first; ours appended.
        let (ov, om) = (
            original["spec"]["volumes"].as_array().unwrap(),
            ob["volumeMounts"].as_array().unwrap(),
        );
        let volumes = p["spec"]["volumes"].as_array().unwrap();
        let mounts = b["volumeMounts"].as_array().unwrap();
        assert_eq!(&volumes[..ov.len()], &ov[..]);
        assert_eq!(&mounts[..om.len()], &om[..]);
        assert_eq!(
            volumes[ov.len()..],
            [json!({"name": "airflow-keda-scaler-tmp", "emptyDir": {"sizeLimit": "20Gi"}})]
        );
        assert_eq!(
            mounts[om.len()..],
            [json!({"name": "airflow-keda-scaler-tmp", "mountPath": "/scratch"})]
        );
        let env = b["env"].as_array().unwrap();
        let oenv = ob["env"].as_array().unwrap();
        assert_eq!(&env[..oenv.len()], &oenv[..]);
        assert_eq!(
            env[oenv.len()..],
            [json!({"name": "TMPDIR", "value": "/scratch"})]
        );
        assert_eq!(p["metadata"]["labels"]["size"], "large");
        assert_eq!(p["metadata"]["labels"]["dag_id"], "example_etl");
        let applied = p["metadata"]["annotations"]["airflow-keda-scaler/applied"]
            .as_str()
            .unwrap();
        assert!(applied.starts_with("profile=large"), "{applied}");
        assert_idempotent(&h, &uid, &original, &r).await;
    }
    h.stop().await;
}

#[tokio::test]
async fn sidecars_get_a_warning_and_oversize_requests_are_denied() {
    let h = Harness::start(Some(
        &std::fs::read_to_string(fixture("policy.yaml")).unwrap(),
    ))
    .await;
    let mut with_sidecar = airflow_pod("plain");
    let containers = with_sidecar["spec"]["containers"].as_array_mut().unwrap();
    containers.push(json!({"name": "log-shipper", "image": "fluent-bit:3", "resources": {"requests": {"cpu": "100m"}}}));
    containers.push(json!({"name": "istio-proxy", "image": "istio/proxyv2"}));
    let r = h.review("sidecar", &with_sidecar).await;
    assert_eq!(r["allowed"], true);
    let warnings = r["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = warnings[0].as_str().unwrap();
    assert!(
        w.contains("log-shipper") && !w.contains("istio-proxy"),
        "{w}"
    );
    let (p, _) = apply(&r, &with_sidecar);
    let names: Vec<&str> = p["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["base", "log-shipper", "istio-proxy"], "order kept");
    assert!(p["spec"]["containers"][1].get("resources").unwrap()["limits"].is_null());
    assert_idempotent(&h, "sidecar", &with_sidecar, &r).await;

    let mut big = pod("airflow2-pod.yaml");
    big["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "6", "memory": "2Gi"}});
    let r = h.review("too-big", &big).await;
    assert_eq!(r["allowed"], false);
    assert!(r.get("patch").is_none());
    assert_eq!(r["status"]["code"], 403);
    let msg = r["status"]["message"].as_str().unwrap();
    for part in [
        "example_etl.transform",
        "6 CPU",
        "`small` offers 4 CPU",
        "`big`",
        "`large`",
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg}");
    }

    let unknown = with_annotation(
        pod("airflow2-pod.yaml"),
        "airflow-keda-scaler/profile",
        "huge",
    );
    let r = h.review("unknown-profile", &unknown).await;
    assert_eq!(r["allowed"], false);
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("known profiles: large")
    );
    h.stop().await;
}

#[tokio::test]
async fn rules_apply_by_namespace_and_dag() {
    let h = Harness::start(Some(
        &std::fs::read_to_string(fixture("policy.yaml")).unwrap(),
    ))
    .await;
    let mut original = pod("airflow2-pod.yaml");
    original["metadata"]["annotations"]["dag_id"] = json!("report_daily");
    let r = h.review("rule", &original).await;
    let (p, _) = apply(&r, &original);
    assert_eq!(
        p["metadata"]["annotations"]["example.com/team"],
        "reporting"
    );
    assert_eq!(p["spec"]["priorityClassName"], "airflow-low");
    assert!(
        p["spec"].get("priority").is_none(),
        "recomputed by the Priority plugin"
    );
    assert_idempotent(&h, "rule", &original, &r).await;
    h.stop().await;
}

#[tokio::test]
async fn other_objects_and_bad_requests() {
    let h = Harness::start(Some(
        &std::fs::read_to_string(fixture("policy.yaml")).unwrap(),
    ))
    .await;
    // Not an Airflow pod: allowed, no patch.
    let r = h.review("nginx", &pod("nginx-pod.yaml")).await;
    assert_eq!(r["allowed"], true);
    assert!(r.get("patch").is_none() && r.get("patchType").is_none());
    // Wrong kind: allowed untouched.
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {}});
    let r = h.review("deploy", &deployment).await;
    assert_eq!(r["allowed"], true);
    assert!(r.get("patch").is_none());
    // Malformed bodies: 400, never a crash.
    for body in [
        "{".to_owned(),
        "null".to_owned(),
        "[1,2]".to_owned(),
        json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}})
            .to_string(),
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).to_string(),
        review(
            "bad-pod",
            "airflow",
            &json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": 7}}),
        )
        .to_string(),
    ] {
        let resp = h.post(body.clone()).await;
        assert_eq!(resp.status(), 400, "{body}");
    }
    // Oversize body: 413.
    let big = "x".repeat(300 * 1024);
    assert_eq!(h.post(big).await.status(), 413);
    // Wrong method / path.
    let get = h.client.get(h.url("/mutate")).send().await.unwrap();
    assert_eq!(get.status(), 405);
    let other = h.client.post(h.url("/nope")).send().await.unwrap();
    assert_eq!(other.status(), 404);
    // HTTP/1.1 works as well as HTTP/2.
    let h1 = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(h.ca.pem.as_bytes()).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let resp = h1
        .post(h.url("/mutate"))
        .body(review("h1", "airflow", &pod("nginx-pod.yaml")).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);

    // Metrics count reviews by outcome.
    let metrics = reqwest::get(h.admin("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"airflow_keda_scaler_webhook_reviews_total{outcome="skipped"} 3"#,
        r#"airflow_keda_scaler_webhook_reviews_total{outcome="invalid"} 7"#,
        "airflow_keda_scaler_webhook_review_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    h.stop().await;
}

#[tokio::test]
async fn ready_only_with_policy_and_certificate() {
    let h = Harness::start(None).await;
    let ready = reqwest::get(h.admin("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("no valid policy"));
    assert_eq!(reqwest::get(h.admin("/livez")).await.unwrap().status(), 200);
    // Without a policy, reviews are refused with 503 (the API server applies failurePolicy).
    let r = h
        .post(review("early", "airflow", &pod("airflow2-pod.yaml")).to_string())
        .await;
    assert_eq!(r.status(), 503);
    h.write_policy("defaults: {resources: {requests: {cpu: 250m}}}")
        .await;
    wait_until(|| async { reqwest::get(h.admin("/readyz")).await.unwrap().status() == 200 }).await;
    let original = pod("airflow2-pod.yaml");
    let r = h.review("late", &original).await;
    let (p, _) = apply(&r, &original);
    assert_eq!(base(&p)["resources"], json!({"requests": {"cpu": "250m"}}));
    h.stop().await;
}

async fn wait_until<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met within 5 s");
}

#[tokio::test]
async fn policy_hot_reload_and_broken_policy_keeps_the_last_good_one() {
    let h = Harness::start(Some("defaults: {resources: {requests: {cpu: '1'}}}")).await;
    let original = pod("airflow2-pod.yaml");
    let cpu = |r: &Value| {
        apply(r, &original).0["spec"]["containers"][0]["resources"]["requests"]["cpu"].clone()
    };
    assert_eq!(cpu(&h.review("v1", &original).await), "1");

    h.write_policy("defaults: {resources: {requests: {cpu: '2'}}}")
        .await;
    wait_until(|| async { cpu(&h.review("v2", &original).await) == "2" }).await;

    h.write_policy("defaults: {resources: {requests: {cpu: two}}}\nsurprise: true")
        .await;
    wait_until(|| async {
        let m = reqwest::get(h.admin("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        m.contains(r#"airflow_keda_scaler_webhook_reloads_total{what="policy",result="error"} 1"#)
    })
    .await;
    assert_eq!(
        cpu(&h.review("v3", &original).await),
        "2",
        "last good policy still in force"
    );
    assert_eq!(
        reqwest::get(h.admin("/readyz")).await.unwrap().status(),
        200
    );

    h.write_policy("guardRails: {sidecars: deny}").await;
    let mut with_sidecar = pod("airflow2-pod.yaml");
    with_sidecar["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "helper", "image": "busybox"}));
    wait_until(|| async { h.review("v4", &with_sidecar).await["allowed"] == false }).await;
    let r = h.review("v4b", &with_sidecar).await;
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("`helper`")
    );
    h.stop().await;
}

async fn served_certificate(h: &Harness) -> Vec<u8> {
    // A new client per call: a pooled connection would keep the old certificate.
    let resp = client(&h.ca)
        .post(h.url("/mutate"))
        .body("{}")
        .send()
        .await
        .unwrap();
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn certificate_rotation_without_restart() {
    let h = Harness::start(Some("")).await;
    let first = served_certificate(&h).await;
    let (cert2, key2, der2) = h.ca.leaf("leaf-2");
    assert_ne!(first, der2);
    // A broken pair (new cert, old key) is refused; the old certificate stays.
    let (cert3, _, der3) = h.ca.leaf("leaf-3");
    let old_key = std::fs::read_to_string(h.dir.path().join("tls.key")).unwrap();
    write_secret_volume(h.dir.path(), &cert3, &old_key, 2);
    wait_until(|| async {
        let m = reqwest::get(h.admin("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        m.contains(
            r#"airflow_keda_scaler_webhook_reloads_total{what="certificate",result="error"} 1"#,
        )
    })
    .await;
    let still = served_certificate(&h).await;
    assert_eq!(still, first);
    assert_ne!(still, der3);
    // The Secret is updated (symlink swap): the new certificate is served without restart.
    write_secret_volume(h.dir.path(), &cert2, &key2, 3);
    wait_until(|| async { served_certificate(&h).await == der2 }).await;
    assert_eq!(
        reqwest::get(h.admin("/readyz")).await.unwrap().status(),
        200
    );
    h.stop().await;
}

#[test]
fn example_policy_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/webhook-policy.yaml");
    let mut out = Vec::new();
    let code = commands::validate_policy(&path, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(code, ExitCode::SUCCESS, "{text}");
    assert!(!text.contains("warning"), "{text}");
}

#[test]
fn validate_policy_reports_every_problem_with_its_path() {
    let mut out = Vec::new();
    let code = commands::validate_policy(&fixture("broken-policy.yaml"), &mut out).unwrap();
    assert_eq!(code, ExitCode::from(3), "invalid configuration");
    let text = String::from_utf8(out).unwrap();
    for path in [
        "nodeTypes.small.allocatable.cpu:",
        "defaultNodeType:",
        "profiles.large.nodeType:",
        "profiles.large.resources.limits.cpu:",
        "profiles.large.tempStorage.path:",
        "rules[0].match.dagIds[0]:",
        "rules[0].labels.dag_id:",
        "guardRails.sidecars:",
    ] {
        assert!(text.contains(path), "{path} not reported in\n{text}");
    }
}

#[test]
fn mutate_command_prints_patch_and_pod_or_denial() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/webhook-policy.yaml");
    let dir = tempfile::tempdir().unwrap();
    let pod_file = dir.path().join("pod.yaml");
    let p = with_annotation(
        airflow_pod("plain.api-server-defaulted"),
        "airflow-keda-scaler/profile",
        "large",
    );
    std::fs::write(&pod_file, serde_saphyr::to_string(&p).unwrap()).unwrap();
    let args = |output| MutateRequest {
        policy: example.clone(),
        pod: pod_file.clone(),
        namespace: None,
        output,
    };
    let mut out = Vec::new();
    assert_eq!(
        commands::mutate(&args(MutateOutput::Json), &mut out).unwrap(),
        ExitCode::SUCCESS
    );
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["allowed"], true);
    assert_eq!(
        v["pod"]["spec"]["nodeSelector"]["node.kubernetes.io/instance-type"],
        "r5.2xlarge"
    );
    let mut applied = p.clone();
    let patch: json_patch::Patch = serde_json::from_value(v["patch"].clone()).unwrap();
    json_patch::patch(&mut applied, &patch).unwrap();
    assert_eq!(applied, v["pod"]);
    let mut out = Vec::new();
    commands::mutate(&args(MutateOutput::Yaml), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("# outcome: mutated") && text.contains("op: add"),
        "{text}"
    );

    let mut big = pod("airflow2-pod.yaml");
    big["spec"]["containers"][0]["resources"] = json!({"requests": {"memory": "100Gi"}});
    std::fs::write(&pod_file, serde_saphyr::to_string(&big).unwrap()).unwrap();
    let mut out = Vec::new();
    let code = commands::mutate(&args(MutateOutput::Yaml), &mut out).unwrap();
    assert_eq!(code, ExitCode::from(commands::EXIT_DENIED));
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("DENIED: task example_etl.transform"),
        "{text}"
    );
    assert!(text.contains("100Gi of memory"), "{text}");
}

#[test]
fn binary_runs_the_admin_commands() {
    let bin = env!("CARGO_BIN_EXE_airflow-keda-scaler");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/webhook-policy.yaml");
    let ok = Command::new(bin)
        .arg("validate-policy")
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = Command::new(bin)
        .arg("validate-policy")
        .arg(fixture("broken-policy.yaml"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(3), "invalid configuration");
    let out = Command::new(bin)
        .args(["mutate", "--output", "json", "--policy"])
        .arg(&example)
        .arg("--pod")
        .arg(fixture("airflow2-pod.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["pod"]["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "1"
    );
    let help = Command::new(bin)
        .args(["webhook", "--help"])
        .output()
        .unwrap();
    // Collapse the wrapping clap does for the terminal width.
    let help = String::from_utf8_lossy(&help.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for flag in [
        "AIRFLOW_KEDA_SCALER_WEBHOOK_HTTPS_ADDR",
        "AIRFLOW_KEDA_SCALER_WEBHOOK_TLS_CERT",
        "AIRFLOW_KEDA_SCALER_WEBHOOK_TLS_KEY",
        "AIRFLOW_KEDA_SCALER_WEBHOOK_POLICY",
        "AIRFLOW_KEDA_SCALER_WEBHOOK_ADMIN_ADDR",
        "[default: 0.0.0.0:8443]",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start_with(Some(""), Duration::from_millis(300)).await;
    let addr = h.server().addr;
    // No TLS handshake at all: the connection is closed.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut buf))
        .await
        .expect("server closes an idle connection")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // A body that never completes: 408.
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject as _;
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(h.ca.pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    tls.write_all(b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1000\r\n\r\n{")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tls.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    h.stop().await;
}

#[tokio::test]
async fn self_signed_for_local_runs() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "").unwrap();
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
    assert!(server.state.not_ready().is_none());
    let insecure = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let r: Value = insecure
        .post(format!("https://localhost:{}/mutate", server.addr.port()))
        .body(review("local", "default", &pod("airflow2-pod.yaml")).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["response"]["allowed"], true);
    token.cancel();
    server.wait().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Pods as Airflow builds them, against the shipped example policy (issue 13).
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn extended_resources_are_placed_on_a_node_type_that_has_them() {
    let h = Harness::start(Some(&example_policy())).await;
    // A pod_override asking for a GPU, no profile: placed on the node type with GPUs.
    let gpu = pod("gpu-override.json");
    let (r, p) = h.admitted("gpu", &gpu).await;
    assert_eq!(instance_type(&p), "g5.xlarge");
    assert!(tolerates(&p, "nvidia.com/gpu", None), "{}", p["spec"]);
    let applied = p["metadata"]["annotations"]["airflow-keda-scaler/applied"]
        .as_str()
        .unwrap();
    assert!(applied.contains("node type g5.xlarge"), "{applied}");
    assert_idempotent(&h, "gpu", &gpu, &r).await;

    // A profile placing the pod on a node type without GPUs: denied, not Pending forever.
    let on_r5 = with_annotation(gpu.clone(), "airflow-keda-scaler/profile", "large");
    let msg = h.denied("gpu-on-r5", &on_r5).await;
    for part in [
        "1 of nvidia.com/gpu",
        "`r5.2xlarge` offers none of nvidia.com/gpu",
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg}");
    }
    // A profile that places nothing: the GPU still decides the node type.
    let medium = with_annotation(gpu.clone(), "airflow-keda-scaler/profile", "medium");
    let (_, p) = h.admitted("gpu-medium", &medium).await;
    assert_eq!(instance_type(&p), "g5.xlarge");

    // Hugepages no node type offers: denied.
    let msg = h.denied("hugepages", &pod("hugepages-override.json")).await;
    assert!(msg.contains("hugepages-2Mi"), "{msg}");
    assert!(msg.contains("no node type of this cluster"), "{msg}");
    h.stop().await;
}

#[tokio::test]
async fn pod_level_resources_are_respected() {
    let h = Harness::start(Some(&example_policy())).await;
    let original = pod("pod-level-resources.json");
    let (r, p) = h.admitted("pod-level", &original).await;
    // No default is added to what the pod budgets at pod level: the API server would refuse
    // containers whose requests sum above spec.resources.
    let res = &base(&p)["resources"];
    assert!(res["requests"]["cpu"].is_null(), "{res}");
    assert!(res["limits"]["memory"].is_null(), "{res}");
    assert_eq!(p["spec"]["resources"], original["spec"]["resources"]);
    assert_idempotent(&h, "pod-level", &original, &r).await;

    // A profile asking for more than the pod-level budget: a clear denial.
    let medium = with_annotation(original, "airflow-keda-scaler/profile", "medium");
    let msg = h.denied("pod-level-medium", &medium).await;
    for part in ["pod-level", "spec.resources", "500m", "profile medium"] {
        assert!(msg.contains(part), "{part:?} not in {msg}");
    }
    h.stop().await;
}

#[tokio::test]
async fn duplicate_env_names_the_last_one_gets_the_value() {
    let h = Harness::start(Some(&example_policy())).await;
    let original = with_annotation(
        pod("duplicate-env.json"),
        "airflow-keda-scaler/profile",
        "large",
    );
    let (r, p) = h.admitted("dup-env", &original).await;
    let tmpdirs: Vec<&Value> = base(&p)["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "TMPDIR")
        .collect();
    assert_eq!(tmpdirs.len(), 2, "no entry added or removed");
    assert_eq!(
        tmpdirs[0]["value"], "/tmp",
        "the template's entry is left alone"
    );
    assert_eq!(
        tmpdirs[1]["value"], "/scratch",
        "the last entry is the one that runs"
    );
    assert_idempotent(&h, "dup-env", &original, &r).await;
    h.stop().await;
}

#[tokio::test]
async fn partial_node_selector_and_required_affinity_name_a_known_node_type() {
    let h = Harness::start(Some(&example_policy())).await;
    for name in ["partial-node-selector.json", "node-affinity.json"] {
        let original = pod(name);
        let r = h.review(name, &original).await;
        assert_eq!(r["allowed"], true, "{name}: {r}");
        assert!(warnings_of(&r).is_empty(), "{name}: {r}");
        let (p, _) = apply(&r, &original);
        assert!(
            tolerates(&p, "airflow.example.com/pool", Some("tasks-memory")),
            "{name}: {}",
            p["spec"]
        );
        assert_eq!(instance_type(&p), "r5.2xlarge", "{name}");
        assert_idempotent(&h, name, &original, &r).await;

        // Its requests are checked against that node type.
        let mut big = original.clone();
        big["spec"]["containers"][0]["resources"] = json!({"requests": {"memory": "60Gi"}});
        let msg = h.denied(&format!("{name}-big"), &big).await;
        assert!(msg.contains("`r5.2xlarge` offers 58Gi"), "{msg}");
    }
    h.stop().await;
}

#[tokio::test]
async fn denial_advice_can_be_followed() {
    let policy = r#"
nodeTypes:
  small: {allocatable: {cpu: "4", memory: 16Gi}, nodeSelector: {pool: small}}
  big: {allocatable: {cpu: "16", memory: 64Gi}, nodeSelector: {pool: big}}
defaultNodeType: small
profiles:
  large: {nodeType: big, resources: {requests: {cpu: "2"}, limits: {cpu: "2"}}}
rules:
  - name: pin-small
    match: {dagIds: ["example_*"]}
    nodeType: small
"#;
    let h = Harness::start(Some(policy)).await;
    let mut p = with_annotation(
        airflow_pod("override_resources"),
        "airflow-keda-scaler/profile",
        "large",
    );
    p["spec"]["containers"][0]["resources"]["requests"]["memory"] = json!("20Gi");
    p["spec"]["containers"][0]["resources"]["limits"]["memory"] = json!("20Gi");
    let msg = h.denied("advice", &p).await;
    assert!(msg.contains("rule `pin-small`"), "{msg}");
    assert!(
        !msg.contains("`large`"),
        "advises the profile the task already has: {msg}"
    );
    h.stop().await;
}

#[test]
fn validate_policy_refuses_run_time_traps() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("traps.yaml");
    std::fs::write(
        &file,
        r#"
nodeTypes:
  cpu: {allocatable: {cpu: "8", memory: 32Gi}, nodeSelector: {pool: cpu}}
  cpu-too: {allocatable: {cpu: "8", memory: 32Gi}, nodeSelector: {pool: cpu}}
  gpu: {allocatable: {cpu: "8", memory: 32Gi, nvidia.com/gpu: 1}, nodeSelector: {pool: gpu}}
  bare: {nodeSelector: {pool: bare}}
defaultNodeType: cpu
profiles:
  gpu-on-cpu:
    nodeType: cpu
    resources: {requests: {nvidia.com/gpu: 1}, limits: {nvidia.com/gpu: 1}}
  trainer:
    nodeType: gpu
    resources: {requests: {nvidia.com/gpu: 1}, limits: {nvidia.com/gpu: 1}}
  scratch:
    tempStorage: {path: /scratch, sizeLimit: 50Gi}
    env: {TMPDIR: /scratch}
  ram-disk:
    resources: {limits: {memory: 1Gi}}
    tempStorage: {path: /fast, medium: Memory, sizeLimit: 4Gi, volumeName: fast}
rules:
  - name: everything-on-cpu
    match: {namespaces: [airflow]}
    nodeType: cpu
  - name: reports
    match: {dagIds: ["report_*"]}
    tempStorage: {path: /tmp/reports, sizeLimit: 10Gi}
"#,
    )
    .unwrap();
    let mut out = Vec::new();
    let code = commands::validate_policy(&file, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(code, ExitCode::from(3), "{text}");
    for (path, words) in [
        ("nodeTypes.cpu-too.nodeSelector:", "same nodeSelector"),
        ("nodeTypes.bare.allocatable:", "allocatable"),
        (
            "profiles.gpu-on-cpu.resources.requests.nvidia.com/gpu:",
            "offers none",
        ),
        ("rules[0].nodeType:", "profile `trainer`"),
        ("rules[1].tempStorage.volumeName:", "profile `scratch`"),
        ("profiles.ram-disk.tempStorage.sizeLimit:", "memory limit"),
    ] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(path))
            .unwrap_or_else(|| panic!("{path} not reported in\n{text}"));
        assert!(line.contains(words), "{words:?} not in {line}");
    }
}

#[test]
fn unknown_profile_allow_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("allow.yaml");
    std::fs::write(&file, "guardRails: {unknownProfile: allow}\n").unwrap();
    let mut out = Vec::new();
    let code = commands::validate_policy(&file, &mut out).unwrap();
    assert_eq!(code, ExitCode::SUCCESS, "{}", String::from_utf8_lossy(&out));
}

#[tokio::test]
async fn warnings_reach_the_pod_and_the_metrics() {
    let policy = "guardRails: {sidecars: warn, unknownProfile: warn}\n";
    let h = Harness::start(Some(policy)).await;
    let original = with_annotation(
        airflow_pod("sidecar_istio_allowed"),
        "airflow-keda-scaler/profile",
        "nope",
    );
    let r = h.review("warned", &original).await;
    assert_eq!(r["allowed"], true, "{r}");
    let warnings = warnings_of(&r);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    let (p, _) = apply(&r, &original);
    let note = p["metadata"]["annotations"]["airflow-keda-scaler/warnings"]
        .as_str()
        .expect("warnings annotation");
    let lines: Vec<&str> = note.lines().collect();
    assert_eq!(lines.len(), 2, "one warning a line: {note}");
    assert!(note.contains("`istio-proxy`"), "{note}");
    assert!(note.contains("unknown profile `nope`"), "{note}");
    assert_idempotent(&h, "warned", &original, &r).await;
    let metrics = reqwest::get(h.admin("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The review, the same review again, then the mutated pod: three times each, in this
    // webhook's own registry.
    let line = r#"airflow_keda_scaler_webhook_warnings_total{kind="unknown-profile"} 3"#;
    assert!(metrics.contains(line), "{line} not in\n{metrics}");
    assert!(
        metrics.contains(r#"airflow_keda_scaler_webhook_warnings_total{kind="sidecar"}"#),
        "{metrics}"
    );
    h.stop().await;
}

#[tokio::test]
async fn reinvocation_rechecks_containers_added_by_later_webhooks() {
    let h = Harness::start(Some(&example_policy())).await;
    let original = airflow_pod("plain.api-server-defaulted");
    let r = h.review("first", &original).await;
    let (mutated, _) = apply(&r, &original);
    // A service mesh's webhook adds its proxy; the API server reinvokes ours (IfNeeded).
    let mut meshed = mutated.clone();
    meshed["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "istio-proxy", "image": "istio/proxyv2", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}));
    let r = h.review("reinvoked", &meshed).await;
    assert_eq!(r["allowed"], true, "{r}");
    assert!(
        r.get("patch").is_none(),
        "allowed sidecar: nothing to change: {r}"
    );
    // One that does not fit any more is refused on reinvocation.
    meshed["spec"]["containers"][1]["resources"]["requests"]["cpu"] = json!("3500m");
    let msg = h.denied("reinvoked-big", &meshed).await;
    assert!(
        msg.contains("4.5 CPU") && msg.contains("sidecars count too"),
        "{msg}"
    );
    // A sidecar that is not allowed gets its warning, on the pod too.
    meshed["spec"]["containers"][1] = json!({"name": "log-shipper", "image": "fluent-bit:3"});
    let (_, p) = h.admitted("reinvoked-warned", &meshed).await;
    assert!(
        p["metadata"]["annotations"]["airflow-keda-scaler/warnings"]
            .as_str()
            .is_some_and(|w| w.contains("log-shipper")),
        "{p}"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_pod_that_cannot_be_read_is_refused_without_echoing_it() {
    let h = Harness::start(Some(&example_policy())).await;
    let mut broken = airflow_pod("plain");
    let args = broken["spec"]["containers"][0]["args"][4].clone();
    // args as one string instead of a list: the decoder's message would quote it.
    broken["spec"]["containers"][0]["args"] = args.clone();
    let resp = h
        .post(review("broken", "airflow", &broken).to_string())
        .await;
    assert_eq!(resp.status(), 400);
    let body = resp.text().await.unwrap();
    assert!(body.contains("spec.containers[0].args"), "{body}");
    assert!(
        !body.contains("eyJhbGciOi"),
        "the task token is echoed: {body}"
    );
    assert!(
        !body.contains("dag_rel_path"),
        "the workload is echoed: {body}"
    );
    h.stop().await;
}
