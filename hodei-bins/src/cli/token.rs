//! `hodei token new`, and the token the CLI sends (`--token`, `HODEI_TOKEN`,
//! `HODEI_TOKEN_FILE`).

use std::{io::Read, path::Path};

use clap::{Args, Subcommand};
use hodei_core::auth::{Role, generate_token, token_line};

use super::CliError;
use crate::exit_code;

/// The largest token file read.
const MAX_TOKEN_FILE_LEN: u64 = 64 * 1024;

#[derive(Debug, Subcommand)]
pub(super) enum TokenCommand {
    /// Print a new random token on stdout, and on stderr the line that grants it in the
    /// server's tokens file (HODEI_AUTH_TOKENS_FILE).
    New(NewArgs),
}

#[derive(Debug, Args)]
pub(super) struct NewArgs {
    /// Name of the identity holding the token; its jobs are owned by this name.
    #[arg(value_name = "NAME", value_parser = identity_name)]
    name: String,
    /// Roles: submit, read, admin (comma-separated or repeated).
    #[arg(long = "role", value_name = "ROLE", value_delimiter = ',', required = true,
        value_parser = role)]
    roles: Vec<Role>,
}

fn role(value: &str) -> Result<Role, String> {
    value
        .trim()
        .parse()
        .map_err(|e: hodei_core::auth::UnknownRole| e.to_string())
}

fn identity_name(value: &str) -> Result<String, String> {
    if value.is_empty()
        || value.len() > 256
        || value.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("must be 1 to 256 characters without spaces".to_owned());
    }
    Ok(value.to_owned())
}

pub(super) fn run(command: TokenCommand) -> u8 {
    match command {
        TokenCommand::New(args) => {
            let token = generate_token();
            println!("{token}");
            eprintln!("# add this line to the server's HODEI_AUTH_TOKENS_FILE:");
            eprintln!("{}", token_line(&token, &args.name, &args.roles));
            0
        }
    }
}

/// The token to send: `--token`/`HODEI_TOKEN` first, else the content of
/// `HODEI_TOKEN_FILE` (surrounding whitespace removed).
pub(super) fn resolve(
    token: Option<String>,
    file: Option<&Path>,
) -> Result<Option<String>, CliError> {
    if let Some(token) = token {
        return Ok(Some(token.trim().to_owned()));
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let fail = |what: String| {
        CliError::new(
            exit_code::USAGE,
            format!("HODEI_TOKEN_FILE {}: {what}", path.display()),
        )
    };
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut text = String::new();
    file.take(MAX_TOKEN_FILE_LEN + 1)
        .read_to_string(&mut text)
        .map_err(|e| fail(e.to_string()))?;
    if text.len() as u64 > MAX_TOKEN_FILE_LEN {
        return Err(fail(format!("larger than {MAX_TOKEN_FILE_LEN} bytes")));
    }
    let token = text.trim();
    if token.is_empty() {
        return Err(fail("is empty".to_owned()));
    }
    Ok(Some(token.to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_flag_wins_over_the_file_and_the_file_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  from-file\n").unwrap();
        assert_eq!(
            resolve(Some("flag".into()), Some(&path))
                .unwrap()
                .as_deref(),
            Some("flag")
        );
        assert_eq!(
            resolve(None, Some(&path)).unwrap().as_deref(),
            Some("from-file")
        );
        assert_eq!(resolve(None, None).unwrap(), None);
    }

    #[test]
    fn a_missing_or_empty_file_is_an_error_naming_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        for path in [dir.path().join("none"), empty] {
            let error = resolve(None, Some(&path)).unwrap_err();
            assert!(
                error.message.contains("HODEI_TOKEN_FILE"),
                "{}",
                error.message
            );
        }
    }
}
