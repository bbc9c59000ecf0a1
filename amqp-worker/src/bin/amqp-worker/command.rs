//! The `run` subcommand's handler: runs the configured command per task in its own process
//! group, with the body on stdin and the task in `AMQP_*` environment variables, its output
//! logged line by line with the task id, and the tail of its stderr kept for the task's
//! `x-last-error`.
//!
//! Exit 0 acks the task; [`PARK_NOW_EXIT_CODE`] parks it at once; anything else fails the
//! attempt.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use amqp_worker::{DeadLetter, Handler, HandlerError, Task};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// The exit code with which a command says "do not retry this task, park it now": 65,
/// `EX_DATAERR` of sysexits(3), "the input data was incorrect": the usual reason retrying
/// cannot help. (75, `EX_TEMPFAIL`, means the opposite, "try again later".)
pub(crate) const PARK_NOW_EXIT_CODE: i32 = 65;

/// How much of a failed command's stderr goes into the task's `x-last-error`, in bytes.
pub(crate) const STDERR_TAIL: usize = 1024;

/// Longest output line logged as one record; longer lines are split.
const MAX_LINE: usize = 8192;

/// After the command exited, how long its output may still be read (a background process
/// it left may hold the pipes open).
const DRAIN: Duration = Duration::from_millis(500);

/// The process groups of the commands running now (each command leads its own group).
#[derive(Debug, Clone, Default)]
pub(crate) struct Groups(Arc<GroupsInner>);

#[derive(Debug, Default)]
struct GroupsInner {
    running: Mutex<HashSet<u32>>,
    /// Set when the worker is about to exit: a command ending now was killed, and its task
    /// must be left unsettled for the broker to redeliver, not counted as a failed attempt.
    terminating: AtomicBool,
}

impl Groups {
    fn insert(&self, id: u32) {
        self.0
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id);
    }

    fn remove(&self, id: u32) {
        self.0
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// The groups running now.
    pub(crate) fn snapshot(&self) -> Vec<u32> {
        self.0
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }

    /// Ends every running command: SIGTERM to each group, up to `grace` for them to exit,
    /// then SIGKILL to every group signalled. Returns how many groups there were.
    pub(crate) async fn terminate_all(&self, grace: Duration) -> usize {
        self.0.terminating.store(true, Ordering::SeqCst);
        let groups = self.snapshot();
        for g in &groups {
            signal_group(*g, "TERM").await;
        }
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline
            && groups.iter().any(|g| self.snapshot().contains(g))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Also reaches what a command left behind in its group after it exited itself.
        for g in &groups {
            signal_group(*g, "KILL").await;
        }
        groups.len()
    }

    /// True once [`terminate_all`](Self::terminate_all) started.
    fn is_terminating(&self) -> bool {
        self.0.terminating.load(Ordering::SeqCst)
    }
}

/// Sends `SIG<name>` to process group `group` (no such group is not an error).
async fn signal_group(group: u32, name: &str) {
    let _ = tokio::process::Command::new("kill")
        .args([&format!("-{name}"), "--", &format!("-{group}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

/// Checks, before anything starts, that `program` can run: a path must be an executable
/// file; a bare name must be one in a directory of `PATH`. The error says why not.
pub(crate) fn check_program(program: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let judge = |path: &Path| -> Result<(), String> {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "does not exist".to_owned(),
            _ => format!("cannot be read ({e})"),
        })?;
        if meta.is_dir() {
            return Err("is a directory".to_owned());
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err("is not executable (no x permission)".to_owned());
        }
        Ok(())
    };
    if program.is_empty() {
        return Err("is empty".to_owned());
    }
    if program.contains('/') {
        let path = PathBuf::from(program);
        judge(&path)?;
        return Ok(path);
    }
    let mut not_executable = None;
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path_var) {
        let candidate = dir.join(program);
        match judge(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(why) if candidate.exists() => {
                not_executable.get_or_insert(format!("{} {why}", candidate.display()));
            }
            Err(_) => {}
        }
    }
    Err(match not_executable {
        Some(found) => format!("was found only as {found}"),
        None => "was not found in any directory of PATH".to_owned(),
    })
}

/// Runs the configured command per task.
pub(crate) struct CommandHandler {
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    pub(crate) on_dead_letter: Option<String>,
    pub(crate) groups: Groups,
}

/// `AMQP_HEADER_<NAME>`: the header name upper-cased, anything but letters and digits as `_`.
fn header_var(name: &str) -> String {
    let mut var = String::from("AMQP_HEADER_");
    var.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    var
}

/// The task's properties and scalar headers as environment variables.
fn task_env(task: &Task) -> Vec<(String, String)> {
    let p = &task.properties;
    let text = |s: Option<amqp_client::amqp_codec::ShortStr>| {
        s.map(|s| String::from_utf8_lossy(&s).into_owned())
    };
    let mut env = vec![
        (
            "AMQP_EXCHANGE".to_owned(),
            text(Some(task.exchange.clone())),
        ),
        (
            "AMQP_ROUTING_KEY".to_owned(),
            text(Some(task.routing_key.clone())),
        ),
        ("AMQP_ATTEMPT".to_owned(), Some(task.attempt.to_string())),
        (
            "AMQP_REDELIVERED".to_owned(),
            Some(task.redelivered.to_string()),
        ),
        (
            "AMQP_ORIGINAL_EXCHANGE".to_owned(),
            Some(task.original_exchange()),
        ),
        (
            "AMQP_ORIGINAL_ROUTING_KEY".to_owned(),
            Some(task.original_routing_key()),
        ),
        ("AMQP_MESSAGE_ID".to_owned(), text(p.message_id())),
        ("AMQP_CORRELATION_ID".to_owned(), text(p.correlation_id())),
        ("AMQP_REPLY_TO".to_owned(), text(p.reply_to())),
        ("AMQP_CONTENT_TYPE".to_owned(), text(p.content_type())),
        (
            "AMQP_CONTENT_ENCODING".to_owned(),
            text(p.content_encoding()),
        ),
        ("AMQP_TYPE".to_owned(), text(p.kind())),
        ("AMQP_APP_ID".to_owned(), text(p.app_id())),
        (
            "AMQP_TIMESTAMP".to_owned(),
            p.timestamp().map(|t| t.to_string()),
        ),
    ];
    for (name, value) in &task.headers() {
        let name = String::from_utf8_lossy(&name).into_owned();
        env.push((header_var(&name), amqp_worker::handler::field_text(&value)));
    }
    env.into_iter()
        .filter_map(|(k, v)| v.filter(|v| !v.contains('\0')).map(|v| (k, v)))
        .collect()
}

/// The last `max` bytes of `bytes` as text, starting at a character boundary.
pub(crate) fn utf8_tail(bytes: &[u8], max: usize) -> String {
    let mut start = bytes.len().saturating_sub(max);
    // Skip continuation bytes of a character cut in half (at most three).
    while start < bytes.len() && start > 0 && (bytes[start] & 0xC0) == 0x80 {
        start += 1;
    }
    String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
}

/// Logs each line of one output stream of a command with the task id; keeps the last
/// [`STDERR_TAIL`] bytes (more, before trimming to a character boundary).
async fn pump(
    mut reader: impl AsyncRead + Unpin,
    stream: &'static str,
    task_id: String,
) -> Vec<u8> {
    let mut tail: Vec<u8> = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    let emit = |line: &[u8]| {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        tracing::info!(task_id = %task_id, stream, line = %text, "handler output");
    };
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = &chunk[..n];
        tail.extend_from_slice(data);
        if tail.len() > 2 * STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL - 4);
        }
        for &b in data {
            if b == b'\n' {
                emit(&line);
                line.clear();
            } else {
                line.push(b);
                if line.len() >= MAX_LINE {
                    emit(&line);
                    line.clear();
                }
            }
        }
    }
    if !line.is_empty() {
        emit(&line);
    }
    tail
}

/// How a command ended.
struct Finished {
    status: std::process::ExitStatus,
    /// The tail of its stderr, as text.
    stderr_tail: String,
}

/// Spawns `cmd` with the task on stdin, logs its output and waits for it. The child leads
/// its own process group, so a Ctrl-C meant for the worker does not kill the tasks it lets
/// finish; the group is killed if the handler is dropped (timeout).
async fn run_child(
    mut cmd: tokio::process::Command,
    what: &str,
    task: &Task,
    extra_env: Vec<(String, String)>,
    groups: &Groups,
) -> Result<Finished, HandlerError> {
    cmd.envs(task_env(task))
        .envs(extra_env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| HandlerError::new(format!("cannot start {what}: {e}")))?;
    let mut guard = GroupGuard {
        group: child.id(),
        groups: groups.clone(),
    };
    if let Some(id) = guard.group {
        groups.insert(id);
    }
    let task_id = task.message_id().unwrap_or_default();
    let out = child
        .stdout
        .take()
        .map(|r| tokio::spawn(pump(r, "stdout", task_id.clone())));
    let err = child
        .stderr
        .take()
        .map(|r| tokio::spawn(pump(r, "stderr", task_id)));
    let stdin = child.stdin.take();
    let body = task.body.clone();
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A command that does not read its input closes the pipe: not an error.
            let _ = stdin.write_all(&body).await;
        }
    };
    let ((), status) = tokio::join!(feed, child.wait());
    if let Some(id) = guard.group.take() {
        groups.remove(id);
    }
    let status =
        status.map_err(|e| HandlerError::new(format!("waiting for {what} failed: {e}")))?;
    if let Some(out) = out {
        drain(out).await;
    }
    let stderr_tail = match err {
        Some(err) => utf8_tail(&drain(err).await, STDERR_TAIL),
        None => String::new(),
    };
    Ok(Finished {
        status,
        stderr_tail,
    })
}

/// The output a pump read, waiting at most [`DRAIN`] for the pipe to close.
async fn drain(pump: tokio::task::JoinHandle<Vec<u8>>) -> Vec<u8> {
    let abort = pump.abort_handle();
    match tokio::time::timeout(DRAIN, pump).await {
        Ok(Ok(tail)) => tail,
        _ => {
            abort.abort();
            Vec::new()
        }
    }
}

/// Kills the child's whole process group if the handler is dropped before the child exited
/// (the handler timed out): `kill_on_drop` alone would kill only the shell, not what it started.
struct GroupGuard {
    group: Option<u32>,
    groups: Groups,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.group.take() {
            self.groups.remove(pid);
            // The group id is the child's pid (`process_group(0)`).
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map(|mut c| std::thread::spawn(move || c.wait()));
        }
    }
}

/// `: <tail>` when there is a stderr tail.
fn with_tail(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; stderr: {tail}")
    }
}

impl Handler for CommandHandler {
    async fn handle(&self, task: &Task) -> Result<(), HandlerError> {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args);
        let done = run_child(cmd, &self.program, task, Vec::new(), &self.groups).await?;
        if self.groups.is_terminating() {
            // Killed because the worker exits: settle nothing, the broker redelivers.
            std::future::pending::<()>().await;
        }
        let status = done.status;
        let tail = with_tail(&done.stderr_tail);
        match status.code() {
            Some(0) => Ok(()),
            Some(PARK_NOW_EXIT_CODE) => Err(HandlerError::park_now(format!(
                "{} exited with {PARK_NOW_EXIT_CODE}: do not retry{tail}",
                self.program
            ))),
            _ => Err(HandlerError::new(format!(
                "{} failed ({status}){tail}",
                self.program
            ))),
        }
    }

    async fn on_dead_letter(&self, task: &Task, dead: &DeadLetter) {
        let Some(hook) = &self.on_dead_letter else {
            return;
        };
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg(hook);
        let extra = vec![
            (
                "AMQP_LAST_ERROR".to_owned(),
                dead.last_error.replace('\0', ""),
            ),
            ("AMQP_ATTEMPTS".to_owned(), dead.attempts.to_string()),
            (
                "AMQP_PARK_REASON".to_owned(),
                dead.reason.as_str().to_owned(),
            ),
            (
                "AMQP_FIRST_FAILURE_AT".to_owned(),
                dead.first_failure_at.to_string(),
            ),
            (
                "AMQP_LAST_FAILURE_AT".to_owned(),
                dead.last_failure_at.to_string(),
            ),
            ("AMQP_PARKING_QUEUE".to_owned(), dead.parking_queue.clone()),
        ];
        let what = "the --on-dead-letter command";
        match run_child(cmd, what, task, extra, &self.groups).await {
            Ok(done) if done.status.success() => {}
            Ok(done) => {
                tracing::error!(status = %done.status, stderr = %done.stderr_tail, "{what} failed")
            }
            Err(e) => tracing::error!(error = %e, "{what} did not run"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_bounded_and_starts_on_a_character() {
        let text = "é".repeat(1000); // 2000 bytes
        let tail = utf8_tail(text.as_bytes(), 1001);
        assert!(tail.len() <= 1001, "{}", tail.len());
        assert!(tail.chars().all(|c| c == 'é'), "{tail}");
        assert_eq!(utf8_tail(b"short\n", 1024), "short");
    }

    #[test]
    fn programs_are_checked() {
        assert!(check_program("sh").is_ok());
        let missing = check_program("amqp-worker-no-such-command").unwrap_err();
        assert!(missing.contains("not found"), "{missing}");
        assert_eq!(check_program("/").unwrap_err(), "is a directory");
        let dir = std::env::temp_dir().join(format!("amqp-worker-check-{}", std::process::id()));
        std::fs::write(&dir, "#!/bin/sh\n").unwrap();
        let plain = check_program(dir.to_str().unwrap()).unwrap_err();
        let _ = std::fs::remove_file(&dir);
        assert!(plain.contains("not executable"), "{plain}");
    }
}
