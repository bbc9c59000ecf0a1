//! One way for a test to say that it cannot run here (a missing program, file or package):
//! [`skip_or_fail`].
//!
//! In CI (`CI=true`) a skip is a failure: a green CI run means every test ran. Elsewhere the
//! test may pass without running, but never silently: the reason goes to the terminal (past
//! libtest's output capture) and, when `./scripts/test` runs the suite, to the file named by
//! [`SKIP_LOG_ENV`], from which the script prints a `skipped: ...` line at the end.

use std::io::Write;

/// The environment variable naming the file skips are appended to (set by `./scripts/test`).
pub const SKIP_LOG_ENV: &str = "AMQP_TEST_SKIP_LOG";

/// True when running in CI: `CI` is `true` (any case) or `1`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The test that is running, as `binary::test` (e.g. `tls_broker::tls_against_a_private_rabbitmq_node`):
/// libtest names each test's thread after the test, and the binary's file name is its
/// target's name plus `-<hash>`.
pub fn current_test() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|stem| match stem.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
            _ => stem,
        })
        .unwrap_or_else(|| "?".to_owned());
    let thread = std::thread::current();
    match thread.name() {
        Some(name) if name != "main" => format!("{binary}::{name}"),
        _ => binary,
    }
}

/// The calling test cannot run here, because of `reason` (what is missing, and how to get
/// it). With `CI=true` this panics, failing the test. Otherwise it returns, after writing
/// `SKIPPED <test>: <reason>` to stderr and appending `<test>: <reason>` as one line to the
/// file named by [`SKIP_LOG_ENV`], if set; the caller then returns without running.
///
/// The line is written with a single `write` on a file opened for appending, so concurrent
/// tests (threads or processes) append whole lines.
#[track_caller]
pub fn skip_or_fail(reason: &str) {
    let log = std::env::var_os(SKIP_LOG_ENV).map(std::path::PathBuf::from);
    skip_or_fail_with(in_ci(), log.as_deref(), reason);
}

/// [`skip_or_fail`] with the environment passed in.
#[track_caller]
fn skip_or_fail_with(ci: bool, log: Option<&std::path::Path>, reason: &str) {
    let test = current_test();
    let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
    if ci {
        panic!("{test} cannot run here, and a skip fails the run in CI (CI=true): {reason}");
    }
    // Straight to the stream, not through `eprintln!`, which libtest captures and shows only
    // for failing tests.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
    if let Some(path) = log {
        let line = format!("{test}: {reason}\n");
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(err) = appended {
            let _ = writeln!(
                std::io::stderr(),
                "(could not record the skip in {}: {err})",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_test_by_binary_and_thread() {
        let name = current_test();
        assert!(
            name.ends_with("::tests::names_the_test_by_binary_and_thread"),
            "{name}"
        );
        assert!(name.starts_with("amqp_test_skip"), "{name}");
    }

    #[test]
    fn outside_ci_a_skip_is_one_line_in_the_log() {
        let log = std::env::temp_dir().join(format!("amqp-test-skip-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&log);
        skip_or_fail_with(false, Some(&log), "no  openssl\n on the PATH");
        skip_or_fail_with(false, Some(&log), "second");
        let text = std::fs::read_to_string(&log).expect("the log was written");
        let _ = std::fs::remove_file(&log);
        let test = current_test();
        assert_eq!(
            text,
            format!("{test}: no openssl on the PATH\n{test}: second\n")
        );
    }

    #[test]
    #[should_panic(expected = "a skip fails the run in CI (CI=true): no openssl")]
    fn in_ci_a_skip_fails_the_test() {
        skip_or_fail_with(true, None, "no openssl");
    }
}
