//! The `airflow-keda-scaler` binary: parse flags, set up logging, run the chosen subcommand.

use std::process::ExitCode;

use airflow_keda_scaler::{
    cli::{Cli, Command},
    demo,
    runtime::shutdown::Drain,
    scaler::{self, config::ServeConfig},
    webhook::{self, commands},
};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.log.init() {
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
    let stdout = &mut std::io::stdout();
    Ok(match command {
        Command::Serve(args) => match scaler::serve(&ServeConfig::from(&*args)).await? {
            Drain::Clean => ExitCode::SUCCESS,
            Drain::GraceExpired | Drain::Forced => ExitCode::from(1),
        },
        Command::Explain(args) => {
            scaler::explain(&(&args).into(), stdout).await?;
            ExitCode::SUCCESS
        }
        Command::Demo(args) => {
            demo::run((&args).into()).await?;
            ExitCode::SUCCESS
        }
        Command::Webhook(args) => webhook::run((&*args).into(), args.shutdown_grace).await?,
        Command::ValidatePolicy(args) => commands::validate_policy(&args.file, stdout)?,
        Command::Mutate(args) => commands::mutate(&(&args).into(), stdout)?,
    })
}
