//! Helpers shared by the integration tests: throw-away databases on the real test servers and
//! a TCP relay that can cut the connection to them.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod databases;
pub mod relay;
pub mod scaler;
