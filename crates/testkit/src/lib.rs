//! The test kit of airflow-keda-scaler: one copy of what the tests and the benchmarks need.
//!
//! - [`airflow`]: Airflow-shaped `task_instance` tables (every dialect, Airflow 2.9 / 2.10 / 3)
//!   and rows, and [`airflow::execute`] to write them.
//! - [`db`]: throw-away databases on the real test servers ([`db::TestDb`]).
//! - [`relay`]: a TCP relay that can cut or stall the connection to them.
//! - [`scaler`]: the real scaler started in-process on loopback ports, and its clients.
//! - [`binary`]: the binary as a child process of an async test, its output captured, and
//!   [`binary::Serve`] (`serve` on free loopback ports).
//! - [`process`]: the binary as a synchronous child process, stopped with SIGTERM when dropped.
//!
//! A dev-dependency of the main crate only: nothing here is in the binary.

pub mod airflow;
pub mod binary;
pub mod db;
pub mod process;
pub mod relay;
pub mod scaler;
