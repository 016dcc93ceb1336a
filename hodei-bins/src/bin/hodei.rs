//! The `hodei` CLI.

fn main() -> std::process::ExitCode {
    hodei_bins::cli::main()
}
