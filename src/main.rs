//! `service-to-service`: read the configuration, run the job, and map the
//! outcome to an exit code, which SPCS turns into the job's status.
//!
//! The two modules here are the binary's own: what its static link would
//! otherwise take from libunwind and from musl's printf engine.

mod thread_name;
mod unwind;

use std::process::ExitCode;

use service_to_service::{config, job, logging, secrets, signals};

fn main() -> ExitCode {
    if let Some(code) = answer_command_line() {
        return code;
    }
    signals::watch();
    #[cfg(feature = "panic-trigger")]
    if let Some(message) = std::env::var_os("S2S_TEST_PANIC") {
        panic!("{}", message.to_string_lossy());
    }
    // First of all, before anything can fail on it: from here on no log
    // line shows the password in SERVICE_URL, however the URL turns out.
    let url = std::env::var_os("SERVICE_URL").unwrap_or_default();
    secrets::hide_in_logs(&secrets::Secrets::of_url(&url.to_string_lossy()));
    let outcome = logging::init()
        .and_then(|()| config::Config::from_env())
        .and_then(|config| job::run(&config));
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
            // Quoted as configuration errors quote values (`{:?}` of an
            // OsString would link a formatter of its own for this line).
            eprintln!(
                "service-to-service: unexpected argument {}; settings come from \
                 environment variables, see --help",
                logging::quoted(&argument.to_string_lossy())
            );
            Some(ExitCode::from(64))
        }
    }
}
