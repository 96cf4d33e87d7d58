//! `service-to-service`: the job of Snowpark Container Services Tutorial 3,
//! as a library with a thin binary. It POSTs rows to a service that speaks
//! the service-function row format, `{"data": [[index, value], ...]}`,
//! checks every reply, and tells the caller, through one error type with one
//! exit code each, when anything failed, so that SPCS reports the job as
//! FAILED.
//!
//! The binary (`src/main.rs`) reads the configuration, runs the job and maps
//! the outcome to an exit code; everything else is here, one module a
//! concern:
//!
//! - [`config`]: every environment variable, its default and its checks;
//! - [`job`]: batches, request threads, in-order output, progress;
//! - `input` and `output`: rows in, with the byte scanning of their lines;
//!   replies out;
//! - `client` and `resolve`: HTTP through ureq's agent, retries, names;
//! - the row format: `rows` (a batch's rows), `request` (encoding one),
//!   [`reply`] (checking one, and its output lines), the [`json`] scanner
//!   under replies and Jsonl lines with its eight-bytes-at-a-time helpers
//!   and its re-encoder to compact JSON, and `decimal` (indices without
//!   `fmt`);
//! - [`logging`] and `secrets`: log lines, and what they must never show;
//! - [`signals`]: SIGTERM and SIGINT, also as PID 1;
//! - [`error`]: the one error enum and its exit codes.
//!
//! Left out on purpose: TLS (traffic between services inside SPCS is plain
//! HTTP), proxies, redirects for POST, compression, and any async runtime:
//! a job that sends a few requests at a time needs threads, not an executor.
//!
//! Unsafe code is denied here but for two modules that call libc where std
//! has no way: blocking signals and waiting for them, and asking for IPv4
//! addresses alone.
#![deny(unsafe_code)]

mod client;
pub mod config;
mod decimal;
pub mod error;
mod input;
pub mod job;
pub mod json;
mod limit;
pub mod logging;
mod output;
mod random;
pub mod reply;
mod request;
#[allow(unsafe_code)]
mod resolve;
mod rows;
pub mod secrets;
#[allow(unsafe_code)]
pub mod signals;
mod split;
mod time;
