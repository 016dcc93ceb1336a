//! The Hodei Jobs worker: started by a provider, runs exactly one job.

fn main() -> std::process::ExitCode {
    hodei_bins::worker_main::main()
}
