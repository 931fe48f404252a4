//! Arguments of `webhook`, `validate-policy` and `mutate`, and their conversion into
//! [`crate::webhook`] types. Every flag has an environment variable; defaults are shown in
//! `--help`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{ArgGroup, Args, ValueEnum};

use super::parse_duration;
use crate::webhook::{
    commands::{self, MutateRequest},
    server::{TlsSource, WebhookConfig},
};

/// `webhook`: serve the admission webhook over HTTPS.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("tls").required(true).args(["tls_cert", "self_signed"])))]
pub struct WebhookArgs {
    /// HTTPS address serving `POST /mutate`.
    #[arg(
        long,
        alias = "addr",
        env = "AIRFLOW_KEDA_SCALER_WEBHOOK_HTTPS_ADDR",
        default_value = "0.0.0.0:8443"
    )]
    pub https_addr: SocketAddr,
    /// Plain HTTP address serving `/livez`, `/readyz` and `/metrics`.
    #[arg(
        long,
        env = "AIRFLOW_KEDA_SCALER_WEBHOOK_ADMIN_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub admin_addr: SocketAddr,
    /// PEM certificate (chain) file; re-read when it changes.
    #[arg(
        long,
        env = "AIRFLOW_KEDA_SCALER_WEBHOOK_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key file; re-read when it changes.
    #[arg(
        long,
        env = "AIRFLOW_KEDA_SCALER_WEBHOOK_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Generate a self-signed certificate at start (local runs only: the API server will not
    /// trust it).
    #[arg(
        long,
        env = "AIRFLOW_KEDA_SCALER_WEBHOOK_SELF_SIGNED",
        conflicts_with_all = ["tls_cert", "tls_key"],
        default_value_t = false
    )]
    pub self_signed: bool,
    /// Names and addresses the self-signed certificate is valid for (comma-separated).
    #[arg(
        long,
        env = "AIRFLOW_KEDA_SCALER_WEBHOOK_SELF_SIGNED_HOSTS",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1"
    )]
    pub self_signed_hosts: Vec<String>,
    /// Policy file (YAML); re-read when it changes, a bad new version keeps the last good one.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_WEBHOOK_POLICY")]
    pub policy: PathBuf,
    /// How often the certificate, key and policy files are checked for changes.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_WEBHOOK_RELOAD_INTERVAL", value_parser = parse_duration, default_value = "5s")]
    pub reload_interval: Duration,
    /// Largest AdmissionReview body accepted, in bytes (larger: 413).
    #[arg(
        long,
        env = "AIRFLOW_KEDA_SCALER_WEBHOOK_MAX_BODY_BYTES",
        default_value_t = 3 * 1024 * 1024
    )]
    pub max_body_bytes: usize,
    /// Time allowed for one request, TLS handshake and headers included.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_WEBHOOK_REQUEST_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub request_timeout: Duration,
    /// Reviews read and decoded at once; further requests wait (body unread) for a slot within
    /// --request-timeout. Bounds memory: each in-flight review may hold --max-body-bytes and
    /// its decoded pod.
    #[arg(
        long,
        env = "AIRFLOW_KEDA_SCALER_WEBHOOK_MAX_IN_FLIGHT",
        default_value_t = 4
    )]
    pub max_in_flight: usize,
    /// After SIGTERM: how long /readyz answers 503 while both ports still serve, so the
    /// Service's endpoints drop the pod before anything is refused (with failurePolicy Ignore,
    /// a refused review is a pod admitted without the policy). Keep terminationGracePeriodSeconds
    /// above --drain-delay + --shutdown-grace.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_WEBHOOK_DRAIN_DELAY", value_parser = parse_duration, default_value = "5s")]
    pub drain_delay: Duration,
    /// After the drain delay: how long in-flight requests get once the ports stop accepting,
    /// before the process exits.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_WEBHOOK_SHUTDOWN_GRACE", value_parser = parse_duration, default_value = "10s")]
    pub shutdown_grace: Duration,
}

/// `validate-policy FILE`: check a policy offline.
#[derive(Debug, Clone, Args)]
pub struct ValidatePolicyArgs {
    /// Policy file to check.
    #[arg(env = "AIRFLOW_KEDA_SCALER_WEBHOOK_POLICY")]
    pub file: PathBuf,
}

/// Output format of `mutate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MutateOutput {
    /// Comments, the patch as JSON and the pod as YAML.
    Yaml,
    /// One JSON object: `allowed`, `patch`, `pod`, `warnings`, `message`, `applied`.
    Json,
}

/// `mutate --policy FILE --pod POD.yaml`: show what the webhook would do to a pod.
#[derive(Debug, Clone, Args)]
pub struct MutateArgs {
    /// Policy file.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_WEBHOOK_POLICY")]
    pub policy: PathBuf,
    /// Pod manifest (YAML or JSON), e.g. from `kubectl get pod -o yaml` or
    /// `airflow kubernetes generate-dag-yaml`.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_WEBHOOK_POD")]
    pub pod: PathBuf,
    /// Namespace the pod is created in (default: the pod's own, else `default`).
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_WEBHOOK_NAMESPACE")]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_WEBHOOK_OUTPUT", value_enum, default_value_t = MutateOutput::Yaml)]
    pub output: MutateOutput,
}

impl From<&WebhookArgs> for WebhookConfig {
    fn from(a: &WebhookArgs) -> Self {
        let tls = match (&a.tls_cert, &a.tls_key) {
            (Some(cert), Some(key)) if !a.self_signed => TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => TlsSource::SelfSigned {
                hosts: a.self_signed_hosts.clone(),
            },
        };
        Self {
            addr: a.https_addr,
            admin_addr: a.admin_addr,
            tls,
            policy: a.policy.clone(),
            reload_interval: a.reload_interval,
            max_body_bytes: a.max_body_bytes,
            request_timeout: a.request_timeout,
            max_in_flight: a.max_in_flight,
        }
    }
}

impl From<&MutateArgs> for MutateRequest {
    fn from(a: &MutateArgs) -> Self {
        Self {
            policy: a.policy.clone(),
            pod: a.pod.clone(),
            namespace: a.namespace.clone(),
            output: match a.output {
                MutateOutput::Yaml => commands::MutateOutput::Yaml,
                MutateOutput::Json => commands::MutateOutput::Json,
            },
        }
    }
}
