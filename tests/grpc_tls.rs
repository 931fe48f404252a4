//! TLS and mutual TLS on the scaler's gRPC port, with certificates made in the test (rcgen),
//! as KEDA uses them: PEM text of a CA, a client certificate and key, ALPN h2.

use std::{path::Path, time::Duration};

use airflow_keda_scaler::{
    runtime::tls::reloading::TlsFiles,
    scaler::grpc::GrpcOptions,
    scaler::grpc::proto::externalscaler::{
        GetMetricsRequest, external_scaler_client::ExternalScalerClient,
    },
    scaler::metrics::Metrics,
    scaler::model::worker_queue::WorkerQueues,
    scaler::{Scaler, ScalerConfig},
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use testkit::airflow::{AirflowVersion, FixtureRow};
use testkit::{
    db::TestDb,
    scaler::{WORKER_QUEUES, create, db_config, object},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate and key (PEM) for `localhost`, for server or client use.
    fn leaf(&self, client: bool) -> (String, String) {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(path: &Path, text: &str) {
    // Write-then-rename, like a Secret volume update.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The scaler over TLS, and its metrics (the TLS reloader reports into them).
async fn start_tls(db: &TestDb, files: TlsFiles) -> (Scaler, Metrics) {
    let metrics = Metrics::new();
    let config = ScalerConfig {
        grpc: GrpcOptions {
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            probe_addr: Some("127.0.0.1:0".parse().unwrap()),
            max_staleness: Duration::from_secs(30),
            tls: Some(files),
            metrics: metrics.clone(),
            limits: Default::default(),
        },
        admin_addr: None,
        declared: WorkerQueues::parse(WORKER_QUEUES).unwrap(),
        refresh_interval: Duration::from_millis(100),
        refresh_max_duty_cycle: 1.0,
        db: db_config(db.url()),
    };
    let scaler = Scaler::start(config, CancellationToken::new())
        .await
        .unwrap();
    let mut rx = scaler.store.subscribe();
    while rx.borrow_and_update().latest.is_none() {
        rx.changed().await.unwrap();
    }
    (scaler, metrics)
}

/// Waits (deadline 10 s) until the TLS reloader has reported `result` for `what` `n` times:
/// the event a rotation test must see before it judges what is served.
async fn reloaded(metrics: &Metrics, what: &'static str, result: &'static str, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metrics.tls_reloads(what, result) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reloader never reported {what} {result}"
        );
        // Poll interval inside the 10 s deadline above (the counter has no change event).
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn client(
    addr: std::net::SocketAddr,
    ca: &str,
    identity: Option<(&str, &str)>,
) -> Result<ExternalScalerClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(ExternalScalerClient::new(channel))
}

async fn ask(client: &mut ExternalScalerClient<Channel>) -> Result<i64, tonic::Status> {
    let r = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(object(&[("workerQueue", "default")])),
            metric_name: String::new(),
        })
        .await?;
    Ok(r.into_inner().metric_values[0].metric_value)
}

async fn seeded_db() -> TestDb {
    let db = TestDb::sqlite().await;
    let rows: Vec<FixtureRow> = (0..3)
        .map(|i| FixtureRow::new("dag", &format!("t{i}"), "run", Some("queued"), "default"))
        .collect();
    create(&db, AirflowVersion::V3, &rows).await;
    db
}

/// Mutual TLS: a client with a certificate from the client CA is served; one without, or with a
/// certificate from another CA, is refused. The CA bundle is re-read while running.
#[tokio::test]
async fn mutual_tls_requires_a_valid_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("server-ca");
    let client_ca = Ca::new("client-ca");
    let other_ca = Ca::new("other-ca");
    let (cert, key) = server_ca.leaf(false);
    let paths = [
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("ca.crt"),
    ];
    write(&paths[0], &cert);
    write(&paths[1], &key);
    write(&paths[2], &client_ca.pem());
    let db = seeded_db().await;
    let (scaler, metrics) = start_tls(
        &db,
        TlsFiles {
            cert: paths[0].clone(),
            key: paths[1].clone(),
            client_ca: Some(paths[2].clone()),
            reload_interval: Duration::from_millis(100),
        },
    )
    .await;
    let addr = scaler.grpc_addr;

    let (c_cert, c_key) = client_ca.leaf(true);
    let mut good = client(addr, &server_ca.pem(), Some((&c_cert, &c_key)))
        .await
        .unwrap();
    assert_eq!(ask(&mut good).await.unwrap(), 3);

    // No client certificate: the handshake is refused, no RPC is served.
    let anonymous = match client(addr, &server_ca.pem(), None).await {
        Ok(mut c) => ask(&mut c).await.map(|_| ()).map_err(|s| s.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(anonymous.is_err(), "anonymous client was served");

    // A certificate from another CA: refused.
    let (o_cert, o_key) = other_ca.leaf(true);
    let foreign = match client(addr, &server_ca.pem(), Some((&o_cert, &o_key))).await {
        Ok(mut c) => ask(&mut c).await.map(|_| ()).map_err(|s| s.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(foreign.is_err(), "foreign client certificate was accepted");
    // Both refusals are counted.
    let declared = WorkerQueues::parse(WORKER_QUEUES).unwrap();
    let refused = || {
        let text = metrics.encode(&scaler.store, &declared, Duration::from_secs(30));
        text.lines()
            .find_map(|l| l.strip_prefix("airflow_keda_scaler_tls_handshakes_refused_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let started = std::time::Instant::now();
    while refused() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refused: {}",
            refused()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Rotate the client CA to `other-ca`: once the reloader has applied it, that client is
    // accepted at its first handshake.
    write(&paths[2], &other_ca.pem());
    reloaded(&metrics, "client_ca", "applied", 1).await;
    let mut c = client(addr, &server_ca.pem(), Some((&o_cert, &o_key)))
        .await
        .expect("rotated client CA accepts the new client");
    assert_eq!(ask(&mut c).await.unwrap(), 3);
    scaler.stop().await.unwrap();
}

/// The server certificate is replaced on disk: new connections get the new one without a
/// restart; a broken replacement keeps the previous certificate.
#[tokio::test]
async fn server_certificate_rotates_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first_ca = Ca::new("first");
    let second_ca = Ca::new("second");
    let (cert, key) = first_ca.leaf(false);
    let cert_path = dir.path().join("tls.crt");
    let key_path = dir.path().join("tls.key");
    write(&cert_path, &cert);
    write(&key_path, &key);
    let db = seeded_db().await;
    let (scaler, metrics) = start_tls(
        &db,
        TlsFiles {
            cert: cert_path.clone(),
            key: key_path.clone(),
            client_ca: None,
            reload_interval: Duration::from_millis(100),
        },
    )
    .await;
    let addr = scaler.grpc_addr;
    let mut c = client(addr, &first_ca.pem(), None).await.unwrap();
    assert_eq!(ask(&mut c).await.unwrap(), 3);

    // A broken pair (key of another certificate) is rejected; the old one keeps serving.
    let (_, wrong_key) = second_ca.leaf(false);
    write(&key_path, &wrong_key);
    reloaded(&metrics, "certificate", "rejected", 1).await;
    let mut still = client(addr, &first_ca.pem(), None).await.unwrap();
    assert_eq!(ask(&mut still).await.unwrap(), 3);
    assert_eq!(metrics.tls_reloads("certificate", "applied"), 0);

    // A valid new pair from another CA: new connections must trust `second`.
    let (cert2, key2) = second_ca.leaf(false);
    write(&cert_path, &cert2);
    write(&key_path, &key2);
    reloaded(&metrics, "certificate", "applied", 1).await;
    let mut c2 = client(addr, &second_ca.pem(), None)
        .await
        .expect("new certificate served once applied");
    assert_eq!(ask(&mut c2).await.unwrap(), 3);
    assert!(
        client(addr, &first_ca.pem(), None).await.is_err(),
        "old certificate still served"
    );
    scaler.stop().await.unwrap();
}
