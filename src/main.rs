//! The `airflow-keda-scaler` binary: parse flags, set up logging, run the chosen subcommand, and
//! turn a failure into one line on stderr and an exit code (`cli::exit`, README's table).

use std::process::ExitCode;

use airflow_keda_scaler::{
    cli::{Cli, Command, exit},
    demo,
    runtime::shutdown::{Drain, DrainTimes},
    scaler::{self, config::ServeConfig},
    webhook::{self, commands},
};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // Fault injection for the proofs: reads `FAILPOINTS` in builds with the `failpoints`
    // feature; does nothing otherwise.
    let _faults = fail::FailScenario::setup();
    let cli = Cli::parse();
    if let Err(e) = cli.log.init() {
        eprintln!("error: {e}");
        return ExitCode::from(exit::INVALID);
    }
    match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(exit::code(e.as_ref()))
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let stdout = &mut std::io::stdout();
    Ok(match command {
        Command::Serve(args) => match scaler::serve(&ServeConfig::from(&*args)).await? {
            Drain::Clean => ExitCode::SUCCESS,
            Drain::GraceExpired | Drain::Forced => ExitCode::from(exit::RUNTIME),
        },
        Command::Explain(args) => {
            scaler::explain(&(&args).into(), stdout).await?;
            ExitCode::SUCCESS
        }
        Command::Demo(args) => {
            demo::run((&args).into()).await?;
            ExitCode::SUCCESS
        }
        Command::Webhook(args) => {
            let times = DrainTimes {
                delay: args.drain_delay,
                grace: args.shutdown_grace,
            };
            webhook::run((&*args).into(), times).await?
        }
        Command::ValidatePolicy(args) => commands::validate_policy(&args.file, stdout)?,
        Command::Mutate(args) => commands::mutate(&(&args).into(), stdout)?,
    })
}

/// The error and its causes on one line, each cause once: a layer that already put its cause
/// into its own message (`cannot read x: No such file (os error 2)`) does not get it repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}
