//! Proof, through the real binary: the webhook's edges (issue 13 point 11).
//!
//! - a request whose declared `Content-Length` is over `--max-body-bytes` gets 413 at once;
//! - 64 concurrent 2.9 MiB reviews: every one answered, the process's peak RSS stays well under
//!   the chart's 128Mi limit (in-flight reviews are bounded by `--max-in-flight`);
//! - SIGTERM: `/readyz` 503 at once, reviews still answered on new connections for
//!   `--drain-delay`, then exit 0.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{Value, json};
use std::sync::Arc;
use testkit::{
    binary::{self, Binary},
    process::free_port,
};

const BIN: &str = env!("CARGO_BIN_EXE_airflow-keda-scaler");

struct Webhook {
    process: Binary,
    addr: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Webhook {
    async fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, "").unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut cmd = binary::command(BIN, None);
        cmd.args(["webhook", "--self-signed"])
            .args(["--addr", &addr.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .arg("--policy")
            .arg(&policy)
            .args(extra);
        let w = Self {
            process: Binary::spawn(cmd),
            addr,
            admin,
            _dir: dir,
        };
        binary::until(
            "/readyz 200",
            Duration::from_secs(15),
            || w.process.stderr(),
            || async { w.readyz().await == Some(200) },
        )
        .await;
        w
    }

    async fn readyz(&self) -> Option<u16> {
        let r = reqwest::get(format!("http://{}/readyz", self.admin))
            .await
            .ok()?;
        Some(r.status().as_u16())
    }

    /// A new client (so a new connection) that trusts the self-signed certificate.
    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }

    fn url(&self) -> String {
        format!("https://localhost:{}/mutate", self.addr.port())
    }
}

fn review(padding: usize) -> Vec<u8> {
    // A task pod as Airflow 3.3.2 builds it.
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/webhook/airflow-3.3.2/plain.json");
    let mut pod: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    pod["metadata"]["annotations"]["padding"] = json!("x".repeat(padding));
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-0000-0000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "airflow",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:airflow:airflow-scheduler"},
            "object": pod,
            "dryRun": false
        }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_limit_content_length_gets_413_at_once() {
    let w = Webhook::start(&["--max-body-bytes", "1048576", "--request-timeout", "10s"]).await;
    // Headers declare 4 MiB, the body never comes.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(w.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let started = Instant::now();
    tls.write_all(
        b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
          content-length: 4194304\r\n\r\n{",
    )
    .await
    .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut head))
        .await
        .expect("an answer before the request timeout")
        .unwrap();
    let took = started.elapsed();
    assert_eq!(&head, b"HTTP/1.1 413", "{}", String::from_utf8_lossy(&head));
    assert!(took < Duration::from_secs(2), "413 after {took:?}");
    eprintln!("webhook_runtime: declared 4 MiB over a 1 MiB limit: 413 after {took:?}");
}

/// Accepts the webhook's self-signed certificate (signatures are still checked).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_large_reviews_stay_well_under_128_mib() {
    // A debug build decodes a 3 MiB review slowly: give the queue time (memory is the point).
    let w = Webhook::start(&["--request-timeout", "120s"]).await;
    let base = w.process.peak_rss_kib();
    let body = review(2_900_000);
    assert!(body.len() < 3 * 1024 * 1024);
    let started = Instant::now();
    let calls = (0..64).map(|_| {
        let body = body.clone();
        let url = w.url();
        tokio::spawn(async move {
            let r = Webhook::client()
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{status}: {}", &text[..text.len().min(300)]));
            (status, v["response"]["allowed"].as_bool())
        })
    });
    for call in futures::future::join_all(calls).await {
        assert_eq!(call.unwrap(), (200, Some(true)));
    }
    let took = started.elapsed();
    let peak = w.process.peak_rss_kib();
    assert!(peak < 96 * 1024, "peak RSS {peak} KiB");
    eprintln!(
        "webhook_runtime: 64 concurrent {:.1} MiB reviews answered in {took:?}; peak RSS {:.1} MiB \
         (idle {:.1} MiB, debug build; chart limit 128Mi)",
        body.len() as f64 / 1048576.0,
        peak as f64 / 1024.0,
        base as f64 / 1024.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_answering_through_the_drain_delay_with_readiness_off() {
    let mut w = Webhook::start(&["--drain-delay", "1500ms", "--shutdown-grace", "5s"]).await;
    let body = review(0);
    let signalled = Instant::now();
    w.process.signal();
    let started = Instant::now();
    while w.readyz().await != Some(503) {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "/readyz still 200"
        );
        // Poll interval inside the 1 s deadline above (no event to wait on over HTTP).
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let not_ready_after = signalled.elapsed();
    let mut answered = 0;
    while signalled.elapsed() < Duration::from_millis(1200) {
        let r = Webhook::client()
            .post(w.url())
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("answered during the drain delay");
        assert_eq!(r.status().as_u16(), 200);
        answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = w.process.exit_within(Duration::from_secs(5)).await;
    let took = signalled.elapsed();
    assert!(status.success(), "exit {status}");
    assert!(took >= Duration::from_millis(1500), "exit after {took:?}");
    eprintln!(
        "webhook_runtime: SIGTERM (drain delay 1.5 s): /readyz 503 after {not_ready_after:?}, \
         {answered} reviews on new connections answered during the delay, exit 0 after {took:?}"
    );
}
