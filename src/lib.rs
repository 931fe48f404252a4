//! airflow-keda-scaler: KEDA external scaler and pod-override admission webhook for Apache
//! Airflow on Kubernetes. See README.md for the user-facing contract and
//! `docs/ARCHITECTURE.md` for the module graph.
//!
//! Arrows point one way: [`cli`] → [`scaler`] / [`webhook`] / [`demo`] → [`runtime`]. Only
//! [`cli`] (and the binary) know clap; the layers below take their own config types.

pub mod cli;
pub mod demo;
pub mod runtime;
pub mod scaler;
pub mod webhook;
