//! E2, E3, E4: KEDA scales a worker Deployment through the real HPA from the real scaler over
//! PostgreSQL with Airflow's schema. The chart renders the scaler's Deployment, Service,
//! ConfigMap, Secrets, TriggerAuthentication and ScaledObject; the scaler runs as a process on a
//! "pod IP" that the headless Service's DNS name resolves to in the namespace's hosts file.

use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::{
    apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1::Event,
    core::v1::Service,
};
use kube::{Api, Client, api::ListParams};
use serde_json::{Value, json};

use crate::{
    cluster::{self, apply, eventually, measure, merge, name_of},
    kubelet::{self, Process},
};
use testkit::{
    airflow::{self as airflow_fixture, AirflowVersion, FixtureRow},
    db::TestDb,
    relay::Relay,
};

pub const RELEASE: &str = "aks";
pub const FULLNAME: &str = "aks-airflow-keda-scaler";
pub const WORKER: &str = "airflow-worker";
pub const TASKS_PER_WORKER: i64 = 16;

/// How a scenario sets up the chart and the scaler.
pub struct Options {
    pub trigger: &'static str,
    /// The scaler's "pod IP" (unique per scenario).
    pub pod_ip: &'static str,
    pub min: i32,
    pub max: i32,
    /// Replicas of the worker Deployment before KEDA takes over.
    pub initial: i32,
    /// Chart values merged over the scenario's defaults.
    pub values: Value,
    /// Route the scaler's database connection through a relay the test can cut.
    pub relay: bool,
    /// Replace the KEDA client certificate with one signed by another CA.
    pub wrong_client_cert: bool,
    /// Wait for KEDA to create the HPA (it does not when it cannot reach the scaler).
    pub wait_hpa: bool,
    /// Changes the chart's ScaledObject before it is applied.
    pub edit_scaled_object: fn(&mut Value),
}

impl Default for Options {
    fn default() -> Self {
        Self {
            trigger: "external",
            pod_ip: "10.244.0.10",
            min: 1,
            max: 12,
            initial: 4,
            values: json!({}),
            relay: false,
            wrong_client_cert: false,
            wait_hpa: true,
            edit_scaled_object: |_| {},
        }
    }
}

pub struct Scaling {
    pub client: Client,
    pub ns: String,
    pub db: TestDb,
    pub relay: Option<Relay>,
    /// The scaler process, running until the scenario ends.
    pub _scaler: Process,
    pub scaled_object: String,
    pub workers: Api<Deployment>,
    pub label: String,
}

pub async fn setup(ns: &str, label: &str, opts: Options) -> Scaling {
    let client = cluster::client().await;
    cluster::namespace(&client, ns, &[]).await;
    let db = TestDb::postgres().await;
    airflow_fixture::execute(
        db.url(),
        &airflow_fixture::create_table_sql(db.dialect(), AirflowVersion::V3),
    )
    .await
    .expect("create task_instance");
    let relay = if opts.relay {
        Some(Relay::start(db.addr()).await)
    } else {
        None
    };
    let url = match &relay {
        Some(r) => db.url_via(r.addr()),
        None => db.url().to_string(),
    };

    let mut values = json!({
        "airflow": {"fullname": "airflow"},
        "database": {"url": url, "timeout": "2s"},
        "workerQueueDefaults": {
            "targetKind": "Deployment",
            "maxTasksPerWorker": TASKS_PER_WORKER,
            "minWorkers": opts.min,
            "maxWorkers": opts.max,
        },
        "workerQueues": [{"name": "default", "queues": ["default"]}],
        "scaler": {"replicas": 1, "refreshInterval": "1s"},
        "scaledObject": {
            "triggerType": opts.trigger,
            "pollingInterval": 5,
            "cooldownPeriod": 30,
            // The HPA's default 300 s scale-down stabilization would make "back down" slow.
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}},
        },
    });
    merge(&mut values, &opts.values);

    // The workload KEDA scales (its pods stay Pending: there is no kubelet).
    let workers: Api<Deployment> = Api::namespaced(client.clone(), ns);
    apply(
        &client,
        &json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": WORKER, "namespace": ns},
            "spec": {
                "replicas": opts.initial,
                "selector": {"matchLabels": {"component": "worker"}},
                "template": {
                    "metadata": {"labels": {"component": "worker"}},
                    "spec": {"containers": [{"name": "worker", "image": "apache/airflow:3.3.2"}]},
                },
            },
        }),
        ns,
    )
    .await;

    let mut docs = cluster::render(RELEASE, ns, &values).await;
    if opts.wrong_client_cert {
        let secret = docs
            .iter_mut()
            .find(|d| d["kind"] == "Secret" && name_of(d).ends_with("-keda-client"))
            .expect("the chart's KEDA client Secret");
        let (cert, key) = foreign_client_certificate();
        let b64 = base64::engine::general_purpose::STANDARD;
        secret["data"]["tls.crt"] = json!(b64.encode(cert));
        secret["data"]["tls.key"] = json!(b64.encode(key));
    }
    let (mut scaled_objects, rest): (Vec<Value>, Vec<Value>) =
        docs.into_iter().partition(|d| d["kind"] == "ScaledObject");
    scaled_objects.iter_mut().for_each(opts.edit_scaled_object);
    for doc in &rest {
        apply(&client, doc, ns).await;
    }
    let so = scaled_objects.first().expect("a ScaledObject").clone();
    let address = so["spec"]["triggers"][0]["metadata"]["scalerAddress"]
        .as_str()
        .expect("scalerAddress")
        .to_string();
    let host = address.rsplit_once(':').expect("host:port").0;
    assert_eq!(
        host,
        format!("{FULLNAME}.{ns}.svc.cluster.local"),
        "the chart points KEDA at its Service"
    );

    // The scaler's Service is headless: its DNS name resolves to the pods' IPs.
    cluster::add_address(opts.pod_ip);
    cluster::add_hosts(opts.pod_ip, &[host]);
    let svc: Service = Api::namespaced(client.clone(), ns)
        .get(FULLNAME)
        .await
        .expect("scaler Service");
    let mut scaler = kubelet::run_deployment(&client, ns, FULLNAME, opts.pod_ip, Some(&svc)).await;
    scaler.wait_listening().await;

    // Tasks for exactly the initial workers, so that the first step ("idle") is a real change.
    let scaling_tasks = (opts.initial.max(0) as usize) * TASKS_PER_WORKER as usize;
    set_tasks(&db, scaling_tasks).await;
    for so in &scaled_objects {
        apply(&client, so, ns).await;
    }
    let scaled_object = name_of(&so).to_string();
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
    let hpa_name = format!("keda-hpa-{scaled_object}");
    if opts.wait_hpa {
        eventually(
            &format!("KEDA creates HPA {hpa_name}"),
            Duration::from_secs(60),
            || async {
                hpas.get_opt(&hpa_name)
                    .await
                    .map_err(|e| e.to_string())?
                    .map(|_| ())
                    .ok_or_else(|| "absent".into())
            },
        )
        .await;
    }
    Scaling {
        client,
        ns: ns.into(),
        db,
        relay,
        _scaler: scaler,
        scaled_object,
        workers,
        label: label.into(),
    }
}

/// A client certificate and key from a CA the scaler does not trust.
fn foreign_client_certificate() -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["keda-operator".to_string()]).expect("params");
    let cert = leaf
        .signed_by(&key, &issuer)
        .expect("foreign client certificate");
    (cert.pem(), key.serialize_pem())
}

/// Replaces every task instance with `n` on queue `default`, half queued, half running.
async fn set_tasks(db: &TestDb, n: usize) {
    let mut statements = vec!["DELETE FROM task_instance".to_string()];
    if n > 0 {
        let rows: Vec<FixtureRow> = (0..n)
            .map(|i| {
                let state = if i % 2 == 0 { "queued" } else { "running" };
                FixtureRow::new("e2e", &format!("t{i}"), "run", Some(state), "default")
            })
            .collect();
        statements.push(airflow_fixture::insert_sql(
            db.dialect(),
            AirflowVersion::V3,
            &rows,
        ));
    }
    airflow_fixture::execute(db.url(), &statements)
        .await
        .expect("set task instances");
}

impl Scaling {
    /// Replaces every task instance with `n` (see [`set_tasks`]).
    pub async fn set_tasks(&self, n: usize) {
        set_tasks(&self.db, n).await;
    }

    /// The worker Deployment's `spec.replicas` (what the HPA sets).
    pub async fn replicas(&self) -> Result<i32, String> {
        let d = self.workers.get(WORKER).await.map_err(|e| e.to_string())?;
        Ok(d.spec.and_then(|s| s.replicas).unwrap_or(1))
    }

    /// Waits until the HPA has set `expected` replicas; returns how long that took.
    pub async fn wait_replicas(&self, expected: i32, timeout: Duration) -> Duration {
        let t0 = Instant::now();
        eventually(
            &format!("{}: worker replicas = {expected}", self.label),
            timeout,
            || async {
                let r = self.replicas().await?;
                if r == expected {
                    Ok(())
                } else {
                    Err(format!("{r} replicas; {}", self.hpa_status().await))
                }
            },
        )
        .await;
        t0.elapsed()
    }

    /// `n` tasks, then waits for `expected` workers and reports the latency.
    pub async fn step(&self, what: &str, n: usize, expected: i32) -> Duration {
        self.set_tasks(n).await;
        let took = self.wait_replicas(expected, Duration::from_secs(90)).await;
        measure(format_args!(
            "{} {what}: {n} tasks -> {expected} workers in {:.1} s (row change to spec.replicas)",
            self.label,
            took.as_secs_f64()
        ));
        took
    }

    /// The HPA's conditions and current metric, for failure messages.
    pub async fn hpa_status(&self) -> String {
        let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), &self.ns);
        match hpas.get(&format!("keda-hpa-{}", self.scaled_object)).await {
            Ok(h) => {
                let s = h.status.unwrap_or_default();
                let conditions: Vec<String> = s
                    .conditions
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| format!("{}={} {}", c.type_, c.status, c.message.unwrap_or_default()))
                    .collect();
                format!(
                    "HPA desired {} current {}; metrics {}; {}",
                    s.desired_replicas,
                    s.current_replicas.unwrap_or(0),
                    serde_json::to_string(&s.current_metrics).unwrap_or_default(),
                    conditions.join("; ")
                )
            }
            Err(e) => format!("HPA: {e}"),
        }
    }

    /// Asserts the replicas stay `expected` for `duration` (sampled every second).
    pub async fn assert_replicas_stay(&self, expected: i32, duration: Duration) {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            let r = self.replicas().await.expect("read replicas");
            assert_eq!(
                r,
                expected,
                "{}: replicas changed while they should stay ({})",
                self.label,
                self.hpa_status().await
            );
            // Polling interval of a "replicas must stay" check: holding for a duration is the assertion.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// KEDA's Warning events on the ScaledObject.
    pub async fn keda_warnings(&self) -> Vec<(String, String)> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let lp =
            ListParams::default().fields(&format!("involvedObject.name={}", self.scaled_object));
        events
            .list(&lp)
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .filter(|e| e.type_.as_deref() == Some("Warning"))
                    .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether KEDA's HPA for the ScaledObject exists.
    pub async fn hpa_exists(&self) -> bool {
        let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), &self.ns);
        hpas.get_opt(&format!("keda-hpa-{}", self.scaled_object))
            .await
            .expect("get HPA")
            .is_some()
    }

    /// The ScaledObject's condition `type_`: (status, message).
    pub async fn scaled_object_condition(&self, type_: &str) -> Option<(String, String)> {
        let so = json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"}});
        let api = cluster::api_for(&self.client, &so, &self.ns).await;
        let got = api.get(&self.scaled_object).await.ok()?;
        got.data["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)
            .map(|c| {
                (
                    c["status"].as_str().unwrap_or("").to_string(),
                    c["message"].as_str().unwrap_or("").to_string(),
                )
            })
    }

    /// The HPA's behavior as stored (after the API server's admission and defaulting).
    pub async fn hpa_tolerances(&self) -> (Option<String>, Option<String>) {
        let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), &self.ns);
        let h = hpas
            .get(&format!("keda-hpa-{}", self.scaled_object))
            .await
            .expect("HPA");
        let b = h.spec.and_then(|s| s.behavior).unwrap_or_default();
        (
            b.scale_up.and_then(|r| r.tolerance).map(|q| q.0),
            b.scale_down.and_then(|r| r.tolerance).map(|q| q.0),
        )
    }
}

/// E2: the whole arithmetic through KEDA and the HPA, for one trigger type.
pub async fn keda_drives_hpa(trigger: &'static str, ns: &str, pod_ip: &'static str) {
    let s = setup(
        ns,
        &format!("E2 {trigger}"),
        Options {
            trigger,
            pod_ip,
            ..Options::default()
        },
    )
    .await;
    let (up, down) = s.hpa_tolerances().await;
    assert_eq!(
        (up.as_deref(), down.as_deref()),
        (Some("0"), Some("0")),
        "the HPA carries the chart's tolerance 0 (HPAConfigurableTolerance)"
    );
    let started = Instant::now();
    s.step("idle", 0, 1).await;
    s.step("ceil(45/16)", 45, 3).await;
    s.step("ceil(160/16)", 160, 10).await;
    // 161 / (16 * 10) = 1.006: inside the default 10 % band the HPA would stay at 10.
    s.step("dead band, tolerance 0", 161, 11).await;
    s.step("above maxWorkers", 400, 12).await;
    s.step("back down to minWorkers", 0, 1).await;
    measure(format_args!(
        "E2 {trigger}: whole sequence {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    drop(s);
}

/// E3: KEDA over mutual TLS with the chart's TriggerAuthentication.
pub async fn mtls() {
    let s = setup(
        "e3-mtls",
        "E3 mTLS",
        Options {
            pod_ip: "10.244.0.30",
            initial: 2,
            values: json!({"tls": {"enabled": true, "mutual": true}}),
            ..Options::default()
        },
    )
    .await;
    s.step("over mTLS", 45, 3).await;
    s.step("over mTLS", 0, 1).await;
}

/// E3: a client certificate from a CA the scaler does not trust is refused; KEDA says so.
pub async fn wrong_client_cert() {
    let s = setup(
        "e3-wrong-cert",
        "E3 wrong client certificate",
        Options {
            pod_ip: "10.244.0.31",
            initial: 2,
            values: json!({"tls": {"enabled": true, "mutual": true}}),
            wrong_client_cert: true,
            wait_hpa: false,
            ..Options::default()
        },
    )
    .await;
    s.set_tasks(45).await;
    // KEDA reports it in the ScaledObject's status (Ready=False: it cannot build the HPA
    // without the scaler's metric spec) and, with the TLS error, in its log.
    let ready = eventually(
        "KEDA reports the ScaledObject not Ready",
        Duration::from_secs(60),
        || async {
            match s.scaled_object_condition("Ready").await {
                Some((status, message)) if status == "False" => Ok(message),
                other => Err(format!("Ready {other:?}")),
            }
        },
    )
    .await;
    let keda_log = cluster::run_dir().join("logs").join("keda-operator.log");
    let refused = eventually(
        "KEDA's operator logs the refused TLS handshake for this ScaledObject",
        Duration::from_secs(30),
        || async {
            let text = std::fs::read_to_string(&keda_log).map_err(|e| e.to_string())?;
            text.lines()
                .find(|l| l.contains(&s.ns) && l.contains("tls: unknown certificate authority"))
                .map(|l| l.to_string())
                .ok_or_else(|| "not yet".to_string())
        },
    )
    .await;
    assert!(
        refused.contains("remote error"),
        "the scaler (the remote end) refused the certificate: {refused}"
    );
    assert!(
        !s.hpa_exists().await,
        "no HPA without the scaler's metric spec"
    );
    measure(format_args!(
        "E3 wrong client certificate: ScaledObject Ready=False ({ready}); KEDA: remote error: tls: unknown certificate authority"
    ));
    s.assert_replicas_stay(2, Duration::from_secs(10)).await;
}

/// E4: the database goes away; KEDA keeps the replicas (no fallback) or applies its fallback.
pub async fn db_outage(fallback: bool) {
    let label = if fallback { "E4 fallback" } else { "E4 outage" };
    let mut values = json!({"scaler": {"maxStaleness": "5s"}});
    if fallback {
        values["scaledObject"] = json!({"fallback": {"failureThreshold": 2, "replicas": 6}});
    }
    let s = setup(
        if fallback { "e4-fallback" } else { "e4-outage" },
        label,
        Options {
            pod_ip: if fallback {
                "10.244.0.41"
            } else {
                "10.244.0.40"
            },
            initial: 2,
            values,
            relay: true,
            ..Options::default()
        },
    )
    .await;
    s.step("before the outage", 45, 3).await;
    s.relay.as_ref().expect("relay").cut();
    let cut = Instant::now();
    if fallback {
        let took = s.wait_replicas(6, Duration::from_secs(90)).await;
        measure(format_args!(
            "{label}: database cut -> fallback 6 replicas in {:.1} s",
            took.as_secs_f64()
        ));
    } else {
        // Past maxStaleness (5 s) every call fails; several HPA syncs (5 s) must change nothing.
        s.assert_replicas_stay(3, Duration::from_secs(30)).await;
        let warnings = s.keda_warnings().await;
        measure(format_args!(
            "{label}: replicas kept at 3 for {:.0} s after the cut; KEDA warnings: {}",
            cut.elapsed().as_secs_f64(),
            warnings.len()
        ));
        s.relay.as_ref().expect("relay").restore();
        s.step("after the outage", 100, 7).await;
    }
}
