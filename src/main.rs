//! The `airflow-keda-scaler` binary: parse flags, set up logging, run the chosen subcommand.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use airflow_keda_scaler::{
    app::{self, Scaler, ScalerConfig},
    cli::{Cli, Command},
    demo, shutdown, telemetry,
};
use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = telemetry::init(&cli.log) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            let config = ScalerConfig::from_args(&args)?;
            let token = CancellationToken::new();
            let scaler = Scaler::start(config, token.clone()).await?;
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            let waiter = tokio::spawn(async move {
                let result = scaler.wait().await;
                let _ = done_tx.send(());
                result
            });
            let drain = shutdown::run_until_signal(token, args.shutdown_grace, async {
                let _ = done_rx.await;
            })
            .await;
            tracing::info!(?drain, "stopped");
            if waiter.is_finished() {
                waiter.await.context("server task")??;
            }
            Ok(match drain {
                shutdown::Drain::Clean => ExitCode::SUCCESS,
                _ => ExitCode::from(1),
            })
        }
        Command::Explain(args) => {
            app::explain(&args, &mut std::io::stdout()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            demo::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Webhook(args) => Ok(airflow_keda_scaler::webhook::run(*args).await?),
        Command::ValidatePolicy(args) => Ok(airflow_keda_scaler::webhook::cli::validate_policy(
            &args,
            &mut std::io::stdout(),
        )?),
        Command::Mutate(args) => Ok(airflow_keda_scaler::webhook::cli::mutate(
            &args,
            &mut std::io::stdout(),
        )?),
    }
}
