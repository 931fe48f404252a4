//! Command line: one binary, one subcommand per role. Every flag has an environment variable
//! named by one rule (README, Configuration reference): `AIRFLOW_KEDA_SCALER_` + the command
//! family's infix (none for the scaler's `serve` / `explain` and global flags, `WEBHOOK_` for
//! `webhook` / `validate-policy` / `mutate`, `DEMO_` for `demo`) + the flag in upper snake case.
//! Every default is shown in `--help`, and so are the exit codes ([`exit`]).
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

pub mod exit;

/// The exit codes as `--help` shows them.
const EXIT_CODES: &str = "Exit codes: 0 success; 1 runtime failure (a listener cannot be \
                          opened, the database failed, the drain ran out of time); 2 usage; 3 \
                          invalid input or configuration; 4 a file cannot be read; 5 `mutate`: \
                          the webhook would deny the pod.";

#[derive(Debug, Parser)]
#[command(
    name = "airflow-keda-scaler",
    version,
    about = "KEDA external scaler and pod-override admission webhook for Apache Airflow",
    long_about = "KEDA external scaler (gRPC, externalscaler.ExternalScaler) that sizes Celery \
                  worker queues from the Airflow metadata database, and a mutating admission \
                  webhook for KubernetesExecutor task pods.\n\nStart with `demo`: it needs \
                  nothing but this binary.",
    after_help = EXIT_CODES
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
    #[command(after_help = EXIT_CODES)]
    Serve(Box<ServeArgs>),
    /// Read one snapshot and print what each worker queue would be scaled to.
    #[command(after_help = EXIT_CODES)]
    Explain(ExplainArgs),
    /// Run the scaler on an embedded SQLite database with a synthetic Airflow workload.
    #[command(after_help = EXIT_CODES)]
    Demo(DemoArgs),
    /// Serve the pod-override admission webhook for KubernetesExecutor task pods (HTTPS).
    #[command(after_help = EXIT_CODES)]
    Webhook(Box<WebhookArgs>),
    /// Check a webhook policy file offline and report every problem with its path.
    #[command(after_help = EXIT_CODES)]
    ValidatePolicy(ValidatePolicyArgs),
    /// Show what the webhook would do to a pod (patch and resulting pod, or the denial).
    #[command(after_help = EXIT_CODES)]
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

    /// README's naming rule, for every argument of every command: the environment variable is
    /// `AIRFLOW_KEDA_SCALER_` + the family infix + the flag in upper snake case.
    #[test]
    fn every_argument_has_the_variable_the_naming_rule_gives() {
        let cli = Cli::command();
        let variable = |infix: &str, name: &str| {
            format!(
                "{ENV_PREFIX}{infix}{}",
                name.to_uppercase().replace('-', "_")
            )
        };
        let mut wrong = Vec::new();
        let mut checked = 0;
        let mut check = |command: &str, infix: &str, arg: &clap::Arg| {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                return;
            }
            // The one positional argument, `validate-policy FILE`, is the webhook's policy file.
            let name = arg.get_long().unwrap_or("policy");
            let want = variable(infix, name);
            let have = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            if have.as_deref() != Some(want.as_str()) {
                wrong.push(format!("{command} {id}: {have:?}, want {want}"));
            }
            checked += 1;
        };
        for arg in cli.get_arguments() {
            check("(global)", "", arg);
        }
        for command in cli.get_subcommands() {
            let infix = match command.get_name() {
                "serve" | "explain" => "",
                "webhook" | "validate-policy" | "mutate" => "WEBHOOK_",
                "demo" => "DEMO_",
                other => panic!("`{other}` is in no family of the naming rule: add it"),
            };
            for arg in command.get_arguments() {
                check(command.get_name(), infix, arg);
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        assert!(checked > 30, "{checked} arguments");
    }

    /// Renamed flags keep working under their old spelling (the chart and older scripts).
    #[test]
    fn old_flag_spellings_are_hidden_aliases() {
        let cli = Cli::parse_from([
            "airflow-keda-scaler",
            "serve",
            "--tls-reload-interval",
            "3s",
        ]);
        let Command::Serve(serve) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(serve.reload_interval, Duration::from_secs(3));
        let cli = Cli::parse_from([
            "airflow-keda-scaler",
            "webhook",
            "--addr",
            "127.0.0.1:1",
            "--self-signed",
            "--policy",
            "p.yaml",
        ]);
        let Command::Webhook(webhook) = cli.command else {
            panic!("not webhook")
        };
        assert_eq!(webhook.https_addr, "127.0.0.1:1".parse().unwrap());
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("Exit codes: 0 success"), "{help}");
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
