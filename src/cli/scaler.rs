//! Arguments of the scaler's subcommands (`serve`, `explain`, `demo`) and their conversion into
//! [`crate::scaler::config`] and [`crate::demo`] types.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

use super::parse_duration;
use crate::{
    demo::DemoConfig,
    runtime::{conn::ConnLimits, tls::reloading::TlsFiles},
    scaler::{
        cluster::WorkersConfig,
        config::{self, DbConfig, ExplainConfig, ServeConfig},
    },
};

/// Where the Airflow metadata database is and how to talk to it. `Debug` never shows the URL
/// (it may hold a password).
#[derive(Clone, Args)]
pub struct DbArgs {
    /// Database URL: postgres://, mysql://, sqlite:// or Airflow's SQLAlchemy form
    /// (postgresql+psycopg2://, mysql+mysqldb://, sqlite:////abs/path, ...). When unset,
    /// AIRFLOW__DATABASE__SQL_ALCHEMY_CONN is used.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// File holding the database password (e.g. a mounted Kubernetes Secret); replaces any
    /// password in the URL. Trailing newlines are ignored.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_DATABASE_PASSWORD_FILE")]
    pub database_password_file: Option<PathBuf>,
    /// PostgreSQL schema holding Airflow's tables (Airflow's `[database] sql_alchemy_schema`).
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,
    /// Deprecated, no effect (hidden): the refresh queries use the simple query protocol (no
    /// prepared statements), which works behind PgBouncer in any pooling mode without a
    /// setting. Still accepted so existing deployments start; a warning says it does nothing.
    #[arg(
        long,
        env = "AIRFLOW_KEDA_SCALER_PGBOUNCER",
        default_value_t = false,
        hide = true
    )]
    pub pgbouncer: bool,
    /// Timeout for connecting and for one refresh query.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_DATABASE_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub database_timeout: Duration,
}

impl std::fmt::Debug for DbArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbArgs")
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "<redacted>"),
            )
            .field("database_password_file", &self.database_password_file)
            .field("database_schema", &self.database_schema)
            .field("pgbouncer", &self.pgbouncer)
            .field("database_timeout", &self.database_timeout)
            .finish()
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the gRPC server (ExternalScaler, grpc.health.v1, reflection).
    #[arg(
        long,
        env = "AIRFLOW_KEDA_SCALER_GRPC_ADDR",
        default_value = "0.0.0.0:9090"
    )]
    pub grpc_addr: SocketAddr,
    /// Plaintext listener serving only grpc.health.v1.Health, for Kubernetes' native gRPC
    /// probes (which cannot speak TLS). Services: `liveness`, `readiness`, `""`.
    #[arg(
        long,
        env = "AIRFLOW_KEDA_SCALER_PROBE_ADDR",
        default_value = "0.0.0.0:9092"
    )]
    pub probe_addr: SocketAddr,
    /// Plain-HTTP admin listener: /livez, /readyz, /metrics (Prometheus).
    #[arg(
        long,
        env = "AIRFLOW_KEDA_SCALER_ADMIN_ADDR",
        default_value = "0.0.0.0:9091"
    )]
    pub admin_addr: SocketAddr,
    /// YAML file listing the worker queues (name, queues, maxTasksPerWorker, minWorkers,
    /// maxWorkers). Optional: without it, every trigger must carry its settings inline.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_WORKER_QUEUES")]
    pub worker_queues: Option<PathBuf>,
    /// How often the one refresh query runs (at most; see --refresh-max-duty-cycle).
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_REFRESH_INTERVAL", value_parser = parse_duration, default_value = "1s")]
    pub refresh_interval: Duration,
    /// Most of the wall time the refresh query may take, in percent (0 < x <= 100). A query
    /// slower than this share of --refresh-interval stretches the interval to
    /// query time / share (1 M rows in 0.6 s at 2 %: every 30 s), and the interval comes back
    /// when the query is fast again. Protects the database; costs push latency. 100 = no bound.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_REFRESH_MAX_DUTY_CYCLE", value_parser = parse_percent, default_value = "2")]
    pub refresh_max_duty_cycle: f64,
    /// How old the last good snapshot may be before every RPC answers UNAVAILABLE.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_MAX_STALENESS", value_parser = parse_duration, default_value = "30s")]
    pub max_staleness: Duration,
    /// PEM certificate (chain) of the gRPC port. With --tls-key, the port speaks TLS (ALPN h2);
    /// the file is re-read when it changes.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS).
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// How often the TLS files are checked for changes.
    #[arg(long, alias = "tls-reload-interval", env = "AIRFLOW_KEDA_SCALER_RELOAD_INTERVAL", value_parser = parse_duration, default_value = "10s")]
    pub reload_interval: Duration,
    /// Most connections the gRPC port holds at once (further clients wait in the backlog).
    /// Lowered at start so that 64 file descriptors stay free under the open-files limit, so
    /// the probe and admin ports keep answering when clients exhaust it.
    #[arg(
        long,
        env = "AIRFLOW_KEDA_SCALER_MAX_CONNECTIONS",
        default_value_t = 1000
    )]
    pub max_connections: usize,
    /// Most concurrent HTTP/2 streams (calls, open streams) per gRPC connection.
    #[arg(
        long,
        env = "AIRFLOW_KEDA_SCALER_MAX_CONCURRENT_STREAMS",
        default_value_t = 2048
    )]
    pub max_concurrent_streams: u32,
    /// Interval of the HTTP/2 PINGs the gRPC port sends to every client (KEDA sends none).
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_KEEPALIVE_INTERVAL", value_parser = parse_duration, default_value = "30s")]
    pub keepalive_interval: Duration,
    /// A client that leaves a PING unanswered this long is disconnected.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_KEEPALIVE_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub keepalive_timeout: Duration,
    /// A connection on which the client sent nothing (not even a PING answer) for this long is
    /// closed. Keep it above --keepalive-interval + --keepalive-timeout. 0 = never.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_IDLE_TIMEOUT", value_parser = parse_duration, default_value = "2m")]
    pub idle_timeout: Duration,
    /// After SIGTERM: how long readiness is NOT_SERVING while every port still serves, so
    /// endpoints and KEDA move away before anything is refused. Keep the pod's
    /// terminationGracePeriodSeconds above --drain-delay + --shutdown-grace.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_DRAIN_DELAY", value_parser = parse_duration, default_value = "5s")]
    pub drain_delay: Duration,
    /// After the drain delay: how long in-flight calls get once the ports stop accepting,
    /// before the process exits (exit 1 if they have not finished).
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_SHUTDOWN_GRACE", value_parser = parse_duration, default_value = "10s")]
    pub shutdown_grace: Duration,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub workers: WorkersArgs,
}

/// Parses a percentage in (0, 100], with or without a trailing `%`.
fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage (e.g. 2 or 2%)"))?;
    if v > 0.0 && v <= 100.0 {
        Ok(v)
    } else {
        Err(format!(
            "{s:?} is out of range: give a percentage above 0 and at most 100"
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// YAML file listing the worker queues. Without it, every Airflow queue found in the
    /// database is shown as its own worker queue with default settings.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_WORKER_QUEUES")]
    pub worker_queues: Option<PathBuf>,
    /// Output format.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_OUTPUT", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub workers: WorkersArgs,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Address of the demo's gRPC server.
    #[arg(
        long,
        env = "AIRFLOW_KEDA_SCALER_DEMO_GRPC_ADDR",
        default_value = "127.0.0.1:9090"
    )]
    pub grpc_addr: SocketAddr,
    /// SQLite file to use (created if missing). Default: a new file in a temporary directory.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_DEMO_DB_FILE")]
    pub db_file: Option<PathBuf>,
    /// How often the workload moves tasks and the table is printed.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_DEMO_TICK", value_parser = parse_duration, default_value = "1s")]
    pub tick: Duration,
    /// Stop by itself after this long (default: run until Ctrl-C).
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_DEMO_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Seed of the synthetic workload (same seed, same run).
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_DEMO_SEED", default_value_t = 7)]
    pub seed: u64,
}

/// The workers as Kubernetes runs them, and Airflow's parallelism (README: "Actual workers,
/// parallelism and busy workers").
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Workers and parallelism")]
pub struct WorkersArgs {
    /// Watch each worker queue's scaleTargetRef, its pods and its HPA (ready workers, HPA
    /// desired/current, drift, pod-deletion cost): `off`; `auto` = when a configuration is
    /// found (in-cluster service account, KUBECONFIG or ~/.kube/config); `on` = fail without one.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_KUBERNETES", value_enum, default_value_t = KubeModeArg::Auto)]
    pub kubernetes: KubeModeArg,
    /// Namespace of the Airflow workers (default: the configuration's, in a pod its own).
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_KUBERNETES_NAMESPACE")]
    pub kubernetes_namespace: Option<String>,
    /// Keep controller.kubernetes.io/pod-deletion-cost on Deployment worker pods equal to the
    /// tasks running on each, so a scale-down removes idle workers first (serve; needs `patch
    /// pods`).
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_POD_DELETION_COST", default_value_t = true, action = clap::ArgAction::Set)]
    pub pod_deletion_cost: bool,
    /// Most pod-deletion-cost patches per second (only changed values are written).
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_POD_DELETION_COST_RATE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pod_deletion_cost_rate: u32,
    /// The ScaledObjects set HPA tolerance 0 (the chart's scaledObject.exactTolerance): any
    /// difference between ready workers and the formula counts as drift, and an HPA without
    /// tolerance 0 is reported as "tolerance dropped". False: only differences outside the
    /// HPA's 10 % band count.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_EXACT_TOLERANCE", default_value_t = true, action = clap::ArgAction::Set)]
    pub exact_tolerance: bool,
    /// How long ready workers may differ from the formula before hpa_drift is exported and the
    /// likely cause logged (a few HPA syncs of 15 s).
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_DRIFT_AFTER", value_parser = parse_duration, default_value = "60s")]
    pub drift_after: Duration,
    /// Which [core] parallelism to recommend: `max` = (Σ maxWorkers) x (Σ maxTasksPerWorker),
    /// Astro's current definition, a fixed number; `ready` = (Σ ready workers) x (Σ
    /// maxTasksPerWorker), the seed's, which pins a single worker queue at its size (README).
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_PARALLELISM_MODE", value_enum, default_value_t = ParallelismModeArg::Max)]
    pub parallelism_mode: ParallelismModeArg,
    /// Airflow's configured [core] parallelism (per scheduler): warn and export
    /// parallelism_capped_workers when it keeps a worker queue below maxWorkers, and report
    /// starvation at that limit. When unset, AIRFLOW__CORE__PARALLELISM is read; 0 = unknown.
    #[arg(long, env = "AIRFLOW_KEDA_SCALER_AIRFLOW_PARALLELISM")]
    pub airflow_parallelism: Option<u64>,
}

/// `--kubernetes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KubeModeArg {
    Off,
    Auto,
    On,
}

/// `--parallelism-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ParallelismModeArg {
    Max,
    Ready,
}

impl WorkersArgs {
    /// The settings of the cluster side (reads `AIRFLOW__CORE__PARALLELISM` when the flag is
    /// unset).
    pub fn config(&self) -> WorkersConfig {
        use crate::scaler::{cluster::KubeMode, model::parallelism::ParallelismMode};
        let airflow_parallelism = self
            .airflow_parallelism
            .or_else(|| {
                std::env::var("AIRFLOW__CORE__PARALLELISM")
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
            })
            .filter(|p| *p > 0);
        WorkersConfig {
            kubernetes: match self.kubernetes {
                KubeModeArg::Off => KubeMode::Off,
                KubeModeArg::Auto => KubeMode::Auto,
                KubeModeArg::On => KubeMode::On,
            },
            namespace: self.kubernetes_namespace.clone(),
            deletion_cost: self.pod_deletion_cost,
            deletion_cost_rate: self.pod_deletion_cost_rate,
            exact_tolerance: self.exact_tolerance,
            drift_after: self.drift_after,
            parallelism_mode: match self.parallelism_mode {
                ParallelismModeArg::Max => ParallelismMode::Max,
                ParallelismModeArg::Ready => ParallelismMode::Ready,
            },
            airflow_parallelism,
        }
    }
}

impl From<&DbArgs> for DbConfig {
    fn from(a: &DbArgs) -> Self {
        Self {
            database_url: a.database_url.clone(),
            database_password_file: a.database_password_file.clone(),
            database_schema: a.database_schema.clone(),
            pgbouncer: a.pgbouncer,
            database_timeout: a.database_timeout,
        }
    }
}

impl From<&ServeArgs> for ServeConfig {
    fn from(a: &ServeArgs) -> Self {
        Self {
            grpc_addr: a.grpc_addr,
            probe_addr: a.probe_addr,
            admin_addr: a.admin_addr,
            worker_queues: a.worker_queues.clone(),
            refresh_interval: a.refresh_interval,
            refresh_max_duty_cycle: a.refresh_max_duty_cycle / 100.0,
            max_staleness: a.max_staleness,
            tls: match (&a.tls_cert, &a.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: a.tls_client_ca.clone(),
                    reload_interval: a.reload_interval,
                }),
                _ => None,
            },
            limits: ConnLimits {
                max_connections: a.max_connections,
                idle_timeout: (!a.idle_timeout.is_zero()).then_some(a.idle_timeout),
                keepalive_interval: a.keepalive_interval,
                keepalive_timeout: a.keepalive_timeout,
                max_concurrent_streams: a.max_concurrent_streams,
            },
            drain_delay: a.drain_delay,
            shutdown_grace: a.shutdown_grace,
            db: DbConfig::from(&a.db),
            workers: a.workers.config(),
        }
    }
}

impl From<&ExplainArgs> for ExplainConfig {
    fn from(a: &ExplainArgs) -> Self {
        Self {
            worker_queues: a.worker_queues.clone(),
            output: match a.output {
                OutputFormat::Table => config::OutputFormat::Table,
                OutputFormat::Json => config::OutputFormat::Json,
            },
            db: DbConfig::from(&a.db),
            workers: a.workers.config(),
        }
    }
}

impl From<&DemoArgs> for DemoConfig {
    fn from(a: &DemoArgs) -> Self {
        Self {
            grpc_addr: a.grpc_addr,
            db_file: a.db_file.clone(),
            tick: a.tick,
            duration: a.duration,
            seed: a.seed,
        }
    }
}
