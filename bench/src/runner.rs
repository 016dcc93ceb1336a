//! Runs the scenarios of a [`BenchConfig`] into one report.

use std::{process::ExitCode, time::Instant};

use crate::{
    binaries::Binaries,
    config::BenchConfig,
    report::{Report, ScenarioReport},
    scenarios,
    target::Target,
};

/// Runs every scenario of `config`, writes the report and prints its summary; fails
/// (exit 1) when a scenario failed to run.
pub fn run(config: &BenchConfig) -> anyhow::Result<ExitCode> {
    let bins = Binaries::locate(config.server_bin.as_deref(), config.worker_bin.as_deref())?;
    let runtime = tokio::runtime::Runtime::new()?;
    let target = runtime.block_on(Target::connect(&config.target))?;
    let mut report = Report::new(config.command_line.clone());
    for &scenario in &config.scenarios {
        let name = scenario.name().to_owned();
        eprintln!("hodei-bench: running {name} ...");
        let load = crate::procfs::load_average();
        let started = Instant::now();
        let result = runtime.block_on(scenarios::run(scenario, config, &bins, &target));
        let scenario_report = ScenarioReport::new(name, load, started.elapsed(), result);
        if let Some(error) = &scenario_report.error {
            eprintln!("hodei-bench: {} failed: {error}", scenario_report.name);
        }
        report.scenarios.push(scenario_report);
    }
    report.write(&config.report)?;
    print!("{}", report.summary());
    println!("report: {}", config.report.display());
    Ok(if report.scenarios.iter().any(|s| s.error.is_some()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
