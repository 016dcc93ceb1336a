//! `hodei-bench`: see `docs/BENCHMARKS.md`.

fn main() -> std::process::ExitCode {
    hodei_bench::cli::main()
}
