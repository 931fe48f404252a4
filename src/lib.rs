//! airflow-keda-scaler: KEDA external scaler and pod-override admission webhook for Apache
//! Airflow on Kubernetes. See README.md for the user-facing contract.
#![forbid(unsafe_code)]

pub mod admin;
pub mod airflow_fixture;
pub mod app;
pub mod cli;
pub mod cluster;
pub mod db;
pub mod demo;
pub mod metadata;
pub mod metrics;
pub mod parallelism;
pub mod proto;
pub mod refresher;
pub mod reload;
pub mod scaler_service;
pub mod scaling;
pub mod server;
pub mod shutdown;
pub mod snapshot;
pub mod telemetry;
pub mod tls;
pub mod webhook;
pub mod worker_queue;
