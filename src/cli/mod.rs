//! Command line: one binary, one subcommand per role. Every flag has an environment variable
//! (prefix `AIRFLOW_KEDA_SCALER_`), and every default is shown in `--help`.
//!
//! Only this module knows clap. Each argument struct converts into the configuration type of
//! the layer it drives ([`scaler`]: the scaler's `serve`, `explain` and `demo`; [`webhook`]:
//! `webhook`, `validate-policy`, `mutate`).

pub mod scaler;
pub mod webhook;

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use self::{
    scaler::{DbArgs, DemoArgs, ExplainArgs, OutputFormat, ServeArgs},
    webhook::{MutateArgs, MutateOutput, ValidatePolicyArgs, WebhookArgs},
};
use crate::runtime::telemetry;

/// Prefix of every environment variable this program reads (besides Airflow's own).
pub const ENV_PREFIX: &str = "AIRFLOW_KEDA_SCALER_";

#[derive(Debug, Parser)]
#[command(
    name = "airflow-keda-scaler",
    version,
    about = "KEDA external scaler and pod-override admission webhook for Apache Airflow",
    long_about = "KEDA external scaler (gRPC, externalscaler.ExternalScaler) that sizes Celery \
                  worker queues from the Airflow metadata database, and a mutating admission \
                  webhook for KubernetesExecutor task pods.\n\nStart with `demo`: it needs \
                  nothing but this binary."
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve KEDA's ExternalScaler gRPC API (with gRPC health and reflection).
    Serve(Box<ServeArgs>),
    /// Read one snapshot and print what each worker queue would be scaled to.
    Explain(ExplainArgs),
    /// Run the scaler on an embedded SQLite database with a synthetic Airflow workload.
    Demo(DemoArgs),
    /// Serve the pod-override admission webhook for KubernetesExecutor task pods (HTTPS).
    Webhook(Box<WebhookArgs>),
    /// Check a webhook policy file offline and report every problem with its path.
    ValidatePolicy(ValidatePolicyArgs),
    /// Show what the webhook would do to a pod (patch and resulting pod, or the denial).
    Mutate(MutateArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, global = true, env = "AIRFLOW_KEDA_SCALER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter in tracing's EnvFilter syntax (e.g. `info`, `airflow_keda_scaler=debug`).
    #[arg(
        long,
        global = true,
        env = "AIRFLOW_KEDA_SCALER_LOG",
        default_value = "info"
    )]
    pub log: String,
}

impl LogArgs {
    /// Installs the global logger these flags describe.
    pub fn init(&self) -> Result<(), telemetry::TelemetryError> {
        let format = match self.log_format {
            LogFormat::Text => telemetry::LogFormat::Text,
            LogFormat::Json => telemetry::LogFormat::Json,
        };
        telemetry::init(&self.log, format)
    }
}

/// Parses `500ms`, `1s`, `2m`, `1h30m` (humantime syntax).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 500ms, 1s or 2m: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn debug_never_shows_the_database_url() {
        let cli = Cli::parse_from([
            "airflow-keda-scaler",
            "serve",
            "--database-url",
            "postgres://u:hunter2@db/airflow",
        ]);
        assert!(!format!("{cli:?}").contains("hunter2"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
    }
}
