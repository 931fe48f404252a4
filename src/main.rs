//! The `airflow-keda-scaler` binary: parse flags, set up logging, run the chosen subcommand.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use airflow_keda_scaler::{
    app,
    cli::{Cli, Command},
    demo,
    shutdown::Drain,
    telemetry,
};
use clap::Parser;

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
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => Ok(match app::serve(&args).await? {
            Drain::Clean => ExitCode::SUCCESS,
            Drain::GraceExpired | Drain::Forced => ExitCode::from(1),
        }),
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
