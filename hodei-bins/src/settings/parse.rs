//! Reads flags and `HODEI_*` variables the same way in every binary: a blank variable
//! counts as unset, and the error for a bad value names the variable it came from.

use std::ffi::OsString;

use clap::{
    Arg, Command, Parser,
    error::{ContextKind, ContextValue, ErrorKind},
};

/// Parses `args` (the program name first) and the `HODEI_*` variables into `T`.
pub fn parse<T: Parser>(
    args: impl IntoIterator<Item = impl Into<OsString>>,
) -> Result<T, clap::Error> {
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut cmd = T::command().mut_args(blank_variable_is_unset);
    cmd.try_get_matches_from_mut(&args)
        .and_then(|mut matches| T::from_arg_matches_mut(&mut matches))
        .map_err(|error| name_the_variable(error.format(&mut cmd), &cmd, &args))
}

/// `HODEI_X=` (or only spaces) leaves the default in force, as if it were not set.
fn blank_variable_is_unset(arg: Arg) -> Arg {
    let blank = arg
        .get_env()
        .and_then(std::env::var_os)
        .is_some_and(|value| value.to_string_lossy().trim().is_empty());
    if blank { arg.env(None) } else { arg }
}

/// clap names the flag of a bad value; when the value came from the flag's variable,
/// that is what the user set, so name the variable instead.
fn name_the_variable(mut error: clap::Error, cmd: &Command, args: &[OsString]) -> clap::Error {
    if !matches!(
        error.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return error;
    }
    let Some(ContextValue::String(shown)) = error.get(ContextKind::InvalidArg) else {
        return error;
    };
    let Some(arg) = cmd.get_arguments().find(|a| a.to_string() == *shown) else {
        return error;
    };
    let (Some(variable), Some(long)) = (arg.get_env(), arg.get_long()) else {
        return error;
    };
    let flag = format!("--{long}");
    let given_as_flag = args.iter().skip(1).any(|a| {
        a.to_str()
            .is_some_and(|a| a == flag || a.strip_prefix(&flag).is_some_and(|r| r.starts_with('=')))
    });
    if !given_as_flag {
        let variable = variable.to_string_lossy().into_owned();
        error.insert(ContextKind::InvalidArg, ContextValue::String(variable));
    }
    error
}

/// On or off: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`, in any case.
pub fn switch(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected 1/0, true/false, yes/no or on/off".to_owned()),
    }
}

/// A duration in `humantime` syntax.
pub fn duration(value: &str) -> Result<humantime::Duration, String> {
    value
        .trim()
        .parse()
        .map_err(|e| format!("{e} (expected e.g. 30s, 2m)"))
}

/// A size in bytes: a byte count or a Kubernetes quantity (`1000000`, `512Mi`, `1Gi`).
pub fn bytes(value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse::<hodei_core::Memory>()
        .map(hodei_core::Memory::bytes)
        .map_err(|e| e.to_string())
}

/// Caps by owner: `alice=20,ci=50`; empty for none. The owner is what precedes the
/// last `=`, so an identity holding `=` can be named.
pub fn owner_caps(value: &str) -> Result<std::collections::BTreeMap<String, usize>, String> {
    let mut caps = std::collections::BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (owner, cap) = entry.rsplit_once('=').ok_or_else(|| {
            format!("{entry:?} is not OWNER=COUNT (expected e.g. alice=20,ci=50)")
        })?;
        let owner = owner.trim();
        if owner.is_empty() {
            return Err(format!("{entry:?} names no owner"));
        }
        let cap = cap
            .trim()
            .parse()
            .map_err(|e| format!("{entry:?}: the count is not a whole number: {e}"))?;
        if caps.insert(owner.to_owned(), cap).is_some() {
            return Err(format!("owner {owner:?} is given twice"));
        }
    }
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Arguments whose variables cargo sets for every test process.
    #[derive(Debug, Parser)]
    struct Probe {
        #[arg(long, env = "CARGO_PKG_NAME", value_parser = duration)]
        wait: Option<humantime::Duration>,
        #[arg(long, env = "CARGO_PKG_HOMEPAGE", default_value = "unset")]
        homepage: String,
    }

    #[test]
    fn a_bad_value_from_a_variable_names_the_variable() {
        let error = parse::<Probe>(["probe"]).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("'CARGO_PKG_NAME'"), "{text}");
        assert!(text.contains("expected e.g. 30s"), "{text}");
    }

    #[test]
    fn a_bad_value_from_a_flag_names_the_flag() {
        for args in [
            ["probe", "--wait", "soon"].as_slice(),
            ["probe", "--wait=soon"].as_slice(),
        ] {
            let text = parse::<Probe>(args.iter().copied())
                .unwrap_err()
                .to_string();
            assert!(text.contains("'--wait <WAIT>'"), "{text}");
        }
    }

    #[test]
    fn a_blank_variable_leaves_the_default() {
        // cargo sets CARGO_PKG_HOMEPAGE, empty for a package without a homepage.
        assert_eq!(
            std::env::var_os("CARGO_PKG_HOMEPAGE"),
            Some(OsString::new())
        );
        let probe = parse::<Probe>(["probe", "--wait", "3s"]).unwrap();
        assert_eq!(probe.homepage, "unset");
    }

    #[test]
    fn sizes_accept_byte_counts_and_quantities() {
        assert_eq!(bytes("1000000"), Ok(1_000_000));
        assert_eq!(bytes(" 512Mi"), Ok(512 << 20));
        assert_eq!(bytes("1Gi"), Ok(1 << 30));
        assert_eq!(bytes("1G"), Ok(1_000_000_000));
        assert!(bytes("big").unwrap_err().contains("64Mi"));
    }

    #[test]
    fn durations_accept_seconds_minutes_and_days() {
        assert_eq!(
            *duration("30s").unwrap(),
            std::time::Duration::from_secs(30)
        );
        assert_eq!(
            *duration("5m").unwrap(),
            std::time::Duration::from_secs(300)
        );
        assert_eq!(
            *duration("7d").unwrap(),
            std::time::Duration::from_secs(7 * 86_400)
        );
    }

    #[test]
    fn switches_accept_the_documented_words() {
        for on in ["1", "true", "YES", "On"] {
            assert_eq!(switch(on), Ok(true), "{on}");
        }
        for off in ["0", "False", "no", "off"] {
            assert_eq!(switch(off), Ok(false), "{off}");
        }
        assert!(switch("maybe").is_err());
    }
}
