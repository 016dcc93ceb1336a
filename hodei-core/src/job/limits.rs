//! The size limits of a job spec, checked wherever a spec is validated.
//!
//! Every limit is finite and chosen so that any spec that passes can be executed: the
//! exec-related ones follow Linux (`PATH_MAX`, `MAX_ARG_STRLEN`, the default 2 MiB
//! `ARG_MAX`), the label ones follow Kubernetes. Lengths are in bytes of UTF-8.

/// Longest label selector of a list request.
pub const MAX_LABEL_SELECTOR_BYTES: usize = 4 * 1024;
/// Longest job name.
pub const MAX_NAME_BYTES: usize = 253;
/// Longest command: Linux's `PATH_MAX` (4 KiB) less the terminating NUL.
pub const MAX_COMMAND_BYTES: usize = 4 * 1024 - 1;
/// Longest single argument: Linux refuses one of 128 KiB or more (`MAX_ARG_STRLEN`
/// counts the terminating NUL).
pub const MAX_ARG_BYTES: usize = 128 * 1024 - 1;
/// Most arguments.
pub const MAX_ARGS: usize = 4096;
/// Largest command plus arguments, in total.
pub const MAX_COMMAND_LINE_BYTES: usize = 1024 * 1024;
/// Most environment variables.
pub const MAX_ENV_VARS: usize = 1024;
/// Largest single environment variable, name plus value: Linux refuses a `NAME=value`
/// string of 128 KiB or more, counting the `=` and the terminating NUL.
pub const MAX_ENV_VAR_BYTES: usize = 128 * 1024 - 2;
/// Largest environment (names plus values), in total.
pub const MAX_ENV_BYTES: usize = 1024 * 1024;
/// Longest working directory: Linux's `PATH_MAX` less the terminating NUL.
pub const MAX_WORKING_DIR_BYTES: usize = 4 * 1024 - 1;
/// Longest container image reference.
pub const MAX_IMAGE_BYTES: usize = 1024;
/// Longest provider name (a DNS label's length).
pub const MAX_PROVIDER_BYTES: usize = 63;
/// Most labels.
pub const MAX_LABELS: usize = 64;
/// Longest label key prefix (the DNS subdomain before `/`), as in Kubernetes.
pub const MAX_LABEL_PREFIX_BYTES: usize = 253;
/// Longest label key name (after the optional prefix), as in Kubernetes.
pub const MAX_LABEL_NAME_BYTES: usize = 63;
/// Longest label value, as in Kubernetes.
pub const MAX_LABEL_VALUE_BYTES: usize = 63;
/// Most entries of each placement option: node selector labels, tolerations and node
/// affinity terms.
pub const MAX_PLACEMENT_ENTRIES: usize = 32;
/// Most values of one node affinity term.
pub const MAX_AFFINITY_VALUES: usize = 32;
/// Most secret references of each kind: secret env vars and secret files.
pub const MAX_SECRET_REFS: usize = 32;
/// Longest secret name or key, as in Kubernetes.
pub const MAX_SECRET_NAME_BYTES: usize = 253;
/// Longest resource class name (a DNS label's length).
pub const MAX_CLASS_BYTES: usize = 63;
/// Largest spec in total: every string it holds, added up. The command line and the
/// environment may each use up to 1 MiB but not both: together with the worker's own
/// variables and the pointer arrays they must fit Linux's default `ARG_MAX` of 2 MiB.
pub const MAX_SPEC_BYTES: usize = 3 * 512 * 1024;
/// Most characters of a refused value that an error message repeats (escaped); longer
/// values are cut there and their size given instead.
pub const MAX_ECHOED_CHARS: usize = 64;

#[cfg(test)]
mod tests {
    //! Each limit is enforced by [`JobSpec::validate`] and named in the refusal.

    use std::collections::BTreeMap;

    use super::*;
    use crate::job::{JobSpec, JobSpecBuilder, ValidationError};

    fn spec() -> JobSpecBuilder {
        JobSpec::builder("true")
    }

    fn refused(result: Result<JobSpec, ValidationError>) -> ValidationError {
        result.expect_err("spec should be refused")
    }

    /// Refused naming `field`, with `limit` in the message.
    #[track_caller]
    fn assert_refused(result: Result<JobSpec, ValidationError>, field: &str, limit: usize) {
        let error = refused(result);
        assert_eq!(error.field(), field, "{error}");
        assert!(
            error.message().contains(&format!("at most {limit}")),
            "{error}"
        );
    }

    fn env(entries: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
        entries.into_iter().collect()
    }

    #[test]
    fn each_field_may_reach_its_limit() {
        let arg = "a".repeat(MAX_ARG_BYTES);
        spec()
            .name("n".repeat(MAX_NAME_BYTES))
            .args([arg.clone(), arg])
            .working_dir(format!("/{}", "d".repeat(MAX_WORKING_DIR_BYTES - 1)))
            .image("i".repeat(MAX_IMAGE_BYTES))
            .provider("p".repeat(MAX_PROVIDER_BYTES))
            .env(env([("K".into(), "v".repeat(MAX_ENV_VAR_BYTES - 1))]))
            .build()
            .unwrap();
        JobSpec::builder("c".repeat(MAX_COMMAND_BYTES))
            .args(vec![String::new(); MAX_ARGS])
            .build()
            .unwrap();
    }

    #[test]
    fn single_fields_over_their_limit_are_refused_naming_field_and_limit() {
        assert_refused(
            spec().name("n".repeat(MAX_NAME_BYTES + 1)).build(),
            "name",
            MAX_NAME_BYTES,
        );
        assert_refused(
            JobSpec::builder("c".repeat(MAX_COMMAND_BYTES + 1)).build(),
            "command",
            MAX_COMMAND_BYTES,
        );
        assert_refused(
            spec()
                .args(["ok".into(), "a".repeat(MAX_ARG_BYTES + 1)])
                .build(),
            "args[1]",
            MAX_ARG_BYTES,
        );
        assert_refused(
            spec()
                .working_dir(format!("/{}", "d".repeat(MAX_WORKING_DIR_BYTES)))
                .build(),
            "working_dir",
            MAX_WORKING_DIR_BYTES,
        );
        assert_refused(
            spec().image("i".repeat(MAX_IMAGE_BYTES + 1)).build(),
            "image",
            MAX_IMAGE_BYTES,
        );
        assert_refused(
            spec().provider("p".repeat(MAX_PROVIDER_BYTES + 1)).build(),
            "provider",
            MAX_PROVIDER_BYTES,
        );
        assert_refused(
            spec()
                .env(env([("K".into(), "v".repeat(MAX_ENV_VAR_BYTES))]))
                .build(),
            "env[\"K\"]",
            MAX_ENV_VAR_BYTES,
        );
    }

    #[test]
    fn counts_over_their_limit_are_refused_naming_field_and_limit() {
        assert_refused(
            spec().args(vec![String::new(); MAX_ARGS + 1]).build(),
            "args",
            MAX_ARGS,
        );
        let vars = (0..=MAX_ENV_VARS).map(|i| (format!("V{i}"), String::new()));
        assert_refused(spec().env(env(vars)).build(), "env", MAX_ENV_VARS);
        let labels = (0..=MAX_LABELS).map(|i| (format!("l{i}"), String::new()));
        assert_refused(spec().labels(env(labels)).build(), "labels", MAX_LABELS);
    }

    #[test]
    fn totals_over_their_limit_are_refused_naming_field_and_limit() {
        let arg = "a".repeat(MAX_ARG_BYTES);
        let args = vec![arg; MAX_COMMAND_LINE_BYTES / MAX_ARG_BYTES + 1];
        assert_refused(spec().args(args).build(), "args", MAX_COMMAND_LINE_BYTES);
        let big_vars =
            |n: usize| env((0..n).map(|i| (format!("V{i}"), "v".repeat(MAX_ENV_VAR_BYTES - 8))));
        assert_refused(
            spec()
                .env(big_vars(MAX_ENV_BYTES / MAX_ENV_VAR_BYTES + 1))
                .build(),
            "env",
            MAX_ENV_BYTES,
        );
        // The command line and the environment each within their limit, but not together.
        let args = vec!["a".repeat(MAX_ARG_BYTES); MAX_COMMAND_LINE_BYTES / MAX_ARG_BYTES];
        let vars = big_vars(MAX_ENV_BYTES / MAX_ENV_VAR_BYTES);
        assert_refused(spec().args(args).env(vars).build(), "spec", MAX_SPEC_BYTES);
    }

    #[test]
    fn control_characters_are_refused_where_they_make_no_sense() {
        let bell = |s: &str| format!("{s}\u{7}x");
        let cases: Vec<(Result<JobSpec, ValidationError>, &str)> = vec![
            (spec().name(bell("n")).build(), "name"),
            (JobSpec::builder(bell("c")).build(), "command"),
            (JobSpec::builder("c\0").build(), "command"),
            (spec().working_dir(bell("/w")).build(), "working_dir"),
            (spec().working_dir("/w\u{9b}").build(), "working_dir"),
            (spec().image(bell("alpine")).build(), "image"),
            (spec().provider(bell("local")).build(), "provider"),
        ];
        for (result, field) in cases {
            let error = refused(result);
            assert_eq!(error.field(), field, "{error}");
            assert!(
                error
                    .message()
                    .starts_with("must not contain control characters"),
                "{error}"
            );
        }
        let error = refused(spec().env(env([(bell("K"), "v".into())])).build());
        assert_eq!(error.field(), "env[\"K\\u{7}x\"]");
        assert!(error.message().contains("control characters"), "{error}");
        let error = refused(spec().labels(env([("team".into(), bell("x"))])).build());
        assert_eq!(error.field(), "labels[\"team\"]");
    }

    #[test]
    fn args_and_env_values_may_hold_anything_but_nul() {
        let anything = "tab\there\nnew line \u{1b}[31m ünïcödé \u{7f}".to_owned();
        spec()
            .args([anything.clone()])
            .env(env([("V".into(), anything)]))
            .build()
            .unwrap();
        assert_eq!(
            refused(spec().args(["ok", "a\0b"]).build()).field(),
            "args[1]"
        );
        let error = refused(spec().env(env([("V".into(), "a\0b".into())])).build());
        assert_eq!(error.field(), "env[\"V\"]");
        assert!(error.message().contains("NUL"), "{error}");
    }

    #[test]
    fn refusals_echo_at_most_a_short_escaped_prefix() {
        let huge = "\u{1b}".repeat(1_000_000);
        let errors = [
            refused(spec().env(env([(huge.clone(), String::new())])).build()),
            refused(spec().labels(env([(huge.clone(), String::new())])).build()),
            refused(spec().working_dir("relative/".repeat(400)).build()),
            refused(spec().image(format!("a {}", "b".repeat(1000))).build()),
            huge.parse::<crate::job::JobId>().unwrap_err(),
        ];
        for error in errors {
            let text = error.to_string();
            assert!(text.len() < 1000, "{} bytes: {}", text.len(), &text[..200]);
            assert!(!text.contains('\u{1b}'), "{text}");
        }
        let quantity = "9".repeat(10_000).parse::<crate::job::Cpu>();
        let quantity = quantity.map(|_| ()).unwrap_err().to_string();
        assert!(quantity.len() < 300, "{quantity}");
        assert!(quantity.contains("... (10000 bytes)"), "{quantity}");
    }
}
