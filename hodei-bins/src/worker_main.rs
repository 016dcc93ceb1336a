//! `hodei-worker-bin`: reads its settings from the environment and runs one job.

use std::process::ExitCode;

use hodei_core::WorkerAgent;

/// Runs the worker; exit 0 once the server accepted the result.
#[must_use]
pub fn main() -> ExitCode {
    crate::telemetry::init("info");
    let agent = match WorkerAgent::from_env() {
        Ok(agent) => agent,
        Err(error) => {
            eprintln!("hodei-worker-bin: {error}");
            return ExitCode::from(crate::exit_code::USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hodei-worker-bin: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(agent.run(crate::settings::termination_signal())) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "worker failed");
            eprintln!("hodei-worker-bin: {error}");
            ExitCode::FAILURE
        }
    }
}
