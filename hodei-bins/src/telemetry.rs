//! Installs the tracing subscriber of a binary: text or JSON, filtered by `HODEI_LOG`.

use tracing_subscriber::{EnvFilter, fmt};

/// Env var with the log filter, e.g. `info` or `hodei_core=debug`.
pub const ENV_LOG: &str = "HODEI_LOG";
/// Env var selecting `json` or `text` logs.
pub const ENV_LOG_FORMAT: &str = "HODEI_LOG_FORMAT";

/// Logs to stderr at `default_level` unless `HODEI_LOG` says otherwise.
pub fn init(default_level: &str) {
    let filter = EnvFilter::try_from_env(ENV_LOG).unwrap_or_else(|_| EnvFilter::new(default_level));
    let json = std::env::var(ENV_LOG_FORMAT).is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init()
    } else {
        builder.try_init()
    };
    if let Err(error) = result {
        eprintln!("hodei: logging is already set up: {error}");
    }
}
