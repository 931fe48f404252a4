//! The control plane `.ci/e2e` started: a kube client, server-side apply of any object, waiting
//! with deadlines, Helm (render / install / upgrade / uninstall), and the network namespace's
//! addresses and hosts file.

use std::{
    future::Future,
    io::Write,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::{
    Client, Config,
    api::{Api, DynamicObject, Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    core::GroupVersionKind,
    discovery::{self, Scope},
};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// Field manager of everything the scenarios apply.
pub const MANAGER: &str = "aks-e2e";

/// An environment variable `.ci/e2e` sets.
pub fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the end-to-end tests with .ci/e2e"))
}

/// Where this run keeps its files (logs, pod directories).
pub fn run_dir() -> PathBuf {
    PathBuf::from(env("AKS_E2E_RUN_DIR"))
}

/// A line for `.ci/e2e` to collect into its summary.
pub fn measure(text: impl std::fmt::Display) {
    println!("\ne2e-measure: {text}");
}

/// A client for the API server, as the admin.
pub async fn client() -> Client {
    let kubeconfig = Kubeconfig::read_from(env("AKS_E2E_KUBECONFIG")).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("client configuration");
    Client::try_from(config).expect("kube client")
}

/// Polls `check` every 200 ms until it returns `Ok`, or panics after `timeout` with the last
/// `Err` (what was seen instead).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!(
                    "{what}: not within {}s (last seen: {last})",
                    timeout.as_secs()
                )
            }
            // Poll interval inside the deadline loop above.
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn gvk_of(obj: &Value) -> GroupVersionKind {
    let api_version = obj["apiVersion"].as_str().expect("apiVersion");
    let kind = obj["kind"].as_str().expect("kind");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

/// The dynamic API of `obj`'s kind, in its namespace (or `default_ns`) when namespaced.
pub async fn api_for(client: &Client, obj: &Value, default_ns: &str) -> Api<DynamicObject> {
    let gvk = gvk_of(obj);
    let (resource, caps) = discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("discover {gvk:?}: {e}"));
    if caps.scope == Scope::Namespaced {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or(default_ns)
            .to_string();
        Api::namespaced_with(client.clone(), &ns, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    }
}

pub fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().expect("metadata.name")
}

/// Server-side apply of `obj`; the API server's answer (schema, admission) as the error.
pub async fn try_apply(
    client: &Client,
    obj: &Value,
    default_ns: &str,
) -> Result<DynamicObject, kube::Error> {
    let api = api_for(client, obj, default_ns).await;
    api.patch(
        name_of(obj),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
}

/// Server-side apply of `obj`; panics with the API server's answer.
pub async fn apply(client: &Client, obj: &Value, default_ns: &str) -> DynamicObject {
    try_apply(client, obj, default_ns)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "apply {} {}: {e}",
                obj["kind"].as_str().unwrap_or("?"),
                name_of(obj)
            )
        })
}

/// A namespace whose `default` ServiceAccount exists (pods are refused before it does), plus
/// the ServiceAccounts in `accounts`.
pub async fn namespace(client: &Client, name: &str, accounts: &[&str]) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            name,
            &PatchParams::apply(MANAGER),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            ),
        )
        .await
        .expect("namespace");
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    for sa in accounts {
        sas.patch(
            sa,
            &PatchParams::apply(MANAGER),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}}),
            ),
        )
        .await
        .expect("service account");
    }
    eventually(
        &format!("ServiceAccount {name}/default (made by the controller manager)"),
        Duration::from_secs(30),
        || async {
            sas.get_opt("default")
                .await
                .map_err(|e| e.to_string())?
                .map(|_| ())
                .ok_or_else(|| "absent".to_string())
        },
    )
    .await;
}

/// Runs tests/e2e/helm.py (real Helm through helm-python-sdk): `render`, `install`, `upgrade`
/// or `uninstall` of deploy/helm/airflow-keda-scaler.
pub async fn helm(action: &str, release: &str, namespace: &str, values: &Value) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/helm.py");
    let mut child = tokio::process::Command::new(env("AKS_E2E_PYTHON"))
        .args([script, action, release, namespace])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run helm.py");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(values.to_string().as_bytes())
        .await
        .expect("values to helm.py");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("helm.py within 180 s")
        .expect("helm.py output");
    assert!(
        out.status.success(),
        "helm {action} {release}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("helm.py prints JSON")
}

/// `helm template` of the chart: the objects it renders.
pub async fn render(release: &str, namespace: &str, values: &Value) -> Vec<Value> {
    match helm("render", release, namespace, values).await {
        Value::Array(docs) => docs,
        other => panic!("render printed {other}"),
    }
}

/// The one rendered object of `kind` whose name ends with `suffix`.
pub fn find<'a>(docs: &'a [Value], kind: &str, suffix: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == kind && name_of(d).ends_with(suffix))
        .collect();
    assert_eq!(found.len(), 1, "one {kind} named *{suffix} in the chart");
    found[0]
}

/// Puts `ip` on the namespace's dummy interface (a ClusterIP or a "pod IP").
pub fn add_address(ip: &str) {
    let out = std::process::Command::new("ip")
        .args(["addr", "add", &format!("{ip}/32"), "dev"])
        .arg(env("AKS_E2E_INTERFACE"))
        .output()
        .expect("run ip");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || err.contains("File exists"),
        "ip addr add {ip}: {err}"
    );
}

/// Adds `ip names…` to the namespace's hosts file, in place (it is bind-mounted over
/// /etc/hosts of every process started with `ip netns exec`).
pub fn add_hosts(ip: &str, names: &[&str]) {
    let mut hosts = std::fs::OpenOptions::new()
        .append(true)
        .open(env("AKS_E2E_HOSTS"))
        .expect("hosts file");
    writeln!(hosts, "{ip} {}", names.join(" ")).expect("write hosts");
}

/// Deep-merges `patch` into `base` (objects merge, everything else replaces).
pub fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}
