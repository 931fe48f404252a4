//! The `airflow-keda-scaler` binary: parse flags, set up logging, run the chosen subcommand, and
//! turn a failure into one line on stderr and an exit code (`cli::exit`, README's table).

use std::process::ExitCode;

use airflow_keda_scaler::{
    cli::{Cli, Command, exit},
    demo::{self, DemoError},
    runtime::{
        shutdown::{Drain, DrainTimes},
        tls::TlsError,
    },
    scaler::{
        self, ScalerError, config::ServeConfig, db::DbError, grpc::GrpcError,
        model::worker_queue::WorkerQueueFileError,
    },
    webhook::{
        self,
        commands::{self, CommandError},
        policy::PolicyError,
        server::ServerError,
    },
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
            ExitCode::from(exit_code(&e))
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

/// README's exit codes: 3 invalid input or configuration, 4 a file cannot be read, 1 the rest.
fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(e) = e.downcast_ref::<ScalerError>() {
        scaler_code(e)
    } else if let Some(e) = e.downcast_ref::<DemoError>() {
        match e {
            DemoError::Scaler(e) => scaler_code(e),
            _ => exit::RUNTIME,
        }
    } else if let Some(ServerError::Tls(e)) = e.downcast_ref::<ServerError>() {
        tls_code(e)
    } else if let Some(e) = e.downcast_ref::<CommandError>() {
        match e {
            CommandError::Policy(PolicyError::Read { .. }) | CommandError::ReadPod { .. } => {
                exit::UNREADABLE
            }
            CommandError::Policy(_) | CommandError::NotAPod { .. } => exit::INVALID,
            _ => exit::RUNTIME,
        }
    } else {
        exit::RUNTIME
    }
}

fn scaler_code(e: &ScalerError) -> u8 {
    match e {
        ScalerError::WorkerQueues(WorkerQueueFileError::Read { .. })
        | ScalerError::Db(DbError::Unreadable { .. }) => exit::UNREADABLE,
        ScalerError::WorkerQueues(_) | ScalerError::Db(DbError::Config(_)) => exit::INVALID,
        ScalerError::Grpc(GrpcError::Tls(e)) => tls_code(e),
        _ => exit::RUNTIME,
    }
}

fn tls_code(e: &TlsError) -> u8 {
    match e {
        TlsError::Read { .. } => exit::UNREADABLE,
        TlsError::SelfSigned(_) => exit::RUNTIME,
        _ => exit::INVALID,
    }
}
