//! The Hodei Jobs server.

fn main() -> std::process::ExitCode {
    hodei_bins::server_main::main()
}
