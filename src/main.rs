//! `service-to-service`: the job of Snowpark Container Services Tutorial 3,
//! as a static binary. It POSTs rows to a service that speaks the
//! service-function row format, checks every reply, and exits non-zero when
//! anything failed, so that SPCS reports the job as FAILED.

mod client;
mod config;
mod error;
mod input;
mod job;
mod logging;
mod output;
mod resolve;
mod rows;
mod signals;
mod thread_name;
mod unwind;

use std::process::ExitCode;

fn main() -> ExitCode {
    if let Some(code) = answer_command_line() {
        return code;
    }
    signals::watch();
    #[cfg(feature = "panic-trigger")]
    if let Some(message) = std::env::var_os("S2S_TEST_PANIC") {
        panic!("{}", message.to_string_lossy());
    }
    let outcome = logging::init()
        .and_then(|()| config::Config::from_env())
        .and_then(|config| {
            // Before the first request: the client's log lines may quote
            // what the service sends back, password and all.
            logging::hide(config.service.secrets());
            job::run(&config)
        });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{error}");
            ExitCode::from(error.exit_code() as u8)
        }
    }
}

/// `--help` and `--version`; the job itself takes no arguments, only
/// environment variables, as an SPCS specification sets them.
fn answer_command_line() -> Option<ExitCode> {
    let argument = std::env::args_os().nth(1)?;
    match argument.to_str() {
        Some("-h" | "--help") => {
            print!("{}", config::help());
            Some(ExitCode::SUCCESS)
        }
        Some("-V" | "--version") => {
            println!("service-to-service {}", env!("CARGO_PKG_VERSION"));
            Some(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!(
                "service-to-service: unexpected argument {argument:?}; settings come from \
                 environment variables, see --help"
            );
            Some(ExitCode::from(64))
        }
    }
}
