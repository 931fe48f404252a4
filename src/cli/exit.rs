//! Exit codes, the same for every command (README's table, `--help`), and which error gets
//! which.

use std::error::Error;

use crate::{
    demo::DemoError,
    runtime::tls::TlsError,
    scaler::{
        ScalerError, db::DbError, grpc::GrpcError, model::worker_queue::WorkerQueueFileError,
    },
    webhook::{commands::CommandError, policy::PolicyError, server::ServerError},
};

/// A runtime failure: a listener, the database for `explain`, the drain after SIGTERM.
pub const RUNTIME: u8 = 1;
/// Usage: unknown flag, missing or malformed value (clap's own code).
pub const USAGE: u8 = 2;
/// Invalid input or configuration (worker-queue file, policy, database URL, log filter, pod).
pub const INVALID: u8 = 3;
/// A file cannot be read.
pub const UNREADABLE: u8 = 4;
/// `mutate`: the webhook would deny the pod.
pub const DENIED: u8 = 5;

/// The exit code for a command's error: 3 invalid input or configuration, 4 a file cannot be
/// read, 1 the rest.
pub fn code(e: &(dyn Error + 'static)) -> u8 {
    if let Some(e) = e.downcast_ref::<ScalerError>() {
        scaler_code(e)
    } else if let Some(e) = e.downcast_ref::<DemoError>() {
        match e {
            DemoError::Scaler(e) => scaler_code(e),
            _ => RUNTIME,
        }
    } else if let Some(ServerError::Tls(e)) = e.downcast_ref::<ServerError>() {
        tls_code(e)
    } else if let Some(e) = e.downcast_ref::<CommandError>() {
        match e {
            CommandError::Policy(PolicyError::Read { .. }) | CommandError::ReadPod { .. } => {
                UNREADABLE
            }
            CommandError::Policy(_) | CommandError::NotAPod { .. } => INVALID,
            _ => RUNTIME,
        }
    } else {
        RUNTIME
    }
}

fn scaler_code(e: &ScalerError) -> u8 {
    match e {
        ScalerError::WorkerQueues(WorkerQueueFileError::Read { .. })
        | ScalerError::Db(DbError::Unreadable { .. }) => UNREADABLE,
        ScalerError::WorkerQueues(_) | ScalerError::Db(DbError::Config(_)) => INVALID,
        ScalerError::Grpc(GrpcError::Tls(e)) => tls_code(e),
        _ => RUNTIME,
    }
}

fn tls_code(e: &TlsError) -> u8 {
    match e {
        TlsError::Read { .. } => UNREADABLE,
        TlsError::SelfSigned(_) => RUNTIME,
        _ => INVALID,
    }
}
