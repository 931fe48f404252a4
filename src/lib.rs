//! airflow-keda-scaler: KEDA external scaler and pod-override admission webhook for Apache
//! Airflow on Kubernetes. See README.md for the user-facing contract.
#![forbid(unsafe_code)]

pub mod cli;
pub mod metadata;
pub mod proto;
pub mod scaler_service;
pub mod scaling;
pub mod server;
pub mod snapshot;
pub mod worker_queue;
