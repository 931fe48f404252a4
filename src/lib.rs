//! airflow-keda-scaler: KEDA external scaler and pod-override admission webhook for Apache
//! Airflow on Kubernetes. See README.md for the user-facing contract.
#![forbid(unsafe_code)]

pub mod cli;
pub mod proto;
pub mod snapshot;
