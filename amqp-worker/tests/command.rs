//! The `run` subcommand's command handling, as a process against the real broker: a command
//! that cannot start is refused at start (exit 2); exit 65 parks a task at once; a parked
//! task's `x-last-error` keeps the tail of the command's stderr; `--log-format json` writes
//! only JSON lines, the command's output and the final error included; a second signal ends
//! the running commands' process groups before the worker exits.

// Tests unwrap (a failure is the test failing) and print their figures.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use amqp_client::GetOptions;
use amqp_client::amqp_codec::FieldValue;
use amqp_test_support::unique_name;
use amqp_worker::retry;
use support::{
    Cleanup, bin, connect, publish_ids, ready, run_bin, test_config, wait_until, within,
};
use tokio::process::Child;

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique_name("amqp-worker-cmd"));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the binary with `args`, stdout and stderr into files in `dir`.
fn spawn(args: &[&str], dir: &Path) -> Child {
    let mut cmd = tokio::process::Command::from(bin());
    cmd.args(args)
        .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd.spawn().unwrap()
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

async fn signal(child: &Child, sig: &str) {
    let pid = child.id().unwrap().to_string();
    let status = tokio::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

/// True while `pid` is a live process (a zombie left to a non-reaping init counts as gone).
fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            state != Some("Z")
        }
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_command_that_cannot_run_is_refused_at_start_with_exit_2() {
    let scratch = Scratch::new();
    let plain = scratch.0.join("not-executable.sh");
    std::fs::write(&plain, "#!/bin/sh\nexit 0\n").unwrap();
    let plain = plain.display().to_string();
    let cases = [
        ("/nonexistent/amqp-worker-handler", "does not exist"),
        (
            "amqp-worker-no-such-command",
            "was not found in any directory of PATH",
        ),
        (plain.as_str(), "is not executable"),
        ("/", "is a directory"),
    ];
    for (command, why) in cases {
        // An unreachable broker: without the check the worker would try it until give-up.
        let (status, _, stderr) = run_bin(
            &[
                "run",
                "--queue",
                "q",
                "--url",
                "amqp://guest:guest@127.0.0.1:1/%2f",
                "--give-up-after",
                "1s",
                "--",
                command,
            ],
            Duration::from_secs(20),
        )
        .await;
        println!("command {command}: {status}: {}", stderr.trim());
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        let line = stderr.trim();
        assert!(
            line.starts_with(&format!("amqp-worker: the handler command '{command}' "))
                && line.contains(why),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_65_parks_at_once_and_x_last_error_keeps_the_stderr_tail() {
    let mut cleanup = Cleanup::new();
    let scratch = Scratch::new();
    within(Duration::from_secs(60), async {
        let config = test_config("exit65");
        cleanup.config(&config);
        // "park" tasks exit 65 at once; others write 3000 bytes then a last line, exit 3.
        let script = r#"body=$(cat); echo "working on $AMQP_MESSAGE_ID"
if [ "$body" = "park-1" ]; then echo "bad input: $AMQP_MESSAGE_ID" >&2; exit 65; fi
head -c 3000 /dev/zero | tr '\0' 'x' >&2; echo >&2; echo "final words é $AMQP_ATTEMPT" >&2; exit 3"#;
        let mut worker = spawn(
            &[
                "run", "--queue", &config.queue, "--retry-delays", "100ms", "--max-attempts", "3",
                "--", "sh", "-c", script,
            ],
            &scratch.0,
        );
        let conn = connect().await;
        let started = Instant::now();
        // The worker declares its queues; wait for them before publishing.
        let parking = config.parking_queue();
        loop {
            let ch = conn.open_channel().await.unwrap();
            let passive = amqp_client::QueueDeclareOptions::default().with_passive();
            if ch.queue_declare(&parking, passive).await.is_ok() {
                let _ = ch.close().await;
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "{}", read(&scratch.0, "stderr"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        publish_ids(&conn, "", &config.queue, &["park-1".to_owned(), "fail-1".to_owned()]).await;
        let mut n = 0;
        while n < 2 {
            n = ready(&conn, &parking).await;
            assert!(started.elapsed() < Duration::from_secs(40), "{}", read(&scratch.0, "stderr"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        signal(&worker, "-TERM").await;
        let status = tokio::time::timeout(Duration::from_secs(20), worker.wait()).await.unwrap().unwrap();
        assert!(status.success(), "{status}");
        let ch = conn.open_channel().await.unwrap();
        let mut parked = std::collections::BTreeMap::new();
        for _ in 0..2 {
            let got = ch.basic_get(&parking, GetOptions::default()).await.unwrap().unwrap();
            let h = got.delivery.properties.headers().unwrap();
            let text = |k: &str| h.get(k).and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            let attempts = match h.get(retry::ATTEMPTS_HEADER) {
                Some(FieldValue::I32(n)) => n,
                other => panic!("{other:?}"),
            };
            let id = String::from_utf8_lossy(&got.delivery.body).into_owned();
            parked.insert(id, (attempts, text(retry::PARK_REASON_HEADER), text(retry::LAST_ERROR_HEADER)));
        }
        println!("exit 65 / stderr tail: {parked:#?}");
        let (attempts, reason, error) = &parked["park-1"];
        assert_eq!(*attempts, 1, "parked at once, no retries");
        assert_eq!(reason, "rejected");
        assert!(error.contains("exited with 65") && error.ends_with("bad input: park-1"), "{error}");
        let (attempts, reason, error) = &parked["fail-1"];
        assert_eq!(*attempts, 3);
        assert_eq!(reason, "attempts-exhausted");
        assert!(error.contains("exit status: 3"), "{error}");
        assert!(error.ends_with("final words é 3"), "{error}");
        let tail = error.split_once("; stderr: ").unwrap().1;
        assert!(tail.len() <= 1024 && tail.len() > 900, "{}", tail.len());
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_only_json_lines_with_the_commands_output_and_the_final_error() {
    let mut cleanup = Cleanup::new();
    let scratch = Scratch::new();
    within(Duration::from_secs(60), async {
        let config = test_config("json");
        cleanup.config(&config);
        let script = r#"echo "out-line $AMQP_MESSAGE_ID"; echo "err-line $AMQP_MESSAGE_ID" >&2"#;
        let mut worker = spawn(
            &[
                "--log-format",
                "json",
                "run",
                "--queue",
                &config.queue,
                "--retry-delays",
                "100ms,200ms",
                "--",
                "sh",
                "-c",
                script,
            ],
            &scratch.0,
        );
        wait_until(Duration::from_secs(20), "consuming", || {
            read(&scratch.0, "stderr").contains("consuming")
        })
        .await;
        let conn = connect().await;
        publish_ids(&conn, "", &config.queue, &["j-1".to_owned()]).await;
        wait_until(Duration::from_secs(20), "the command's output", || {
            read(&scratch.0, "stderr").contains("err-line j-1")
        })
        .await;
        signal(&worker, "-TERM").await;
        let status = tokio::time::timeout(Duration::from_secs(20), worker.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "{status}");
        let (stdout, stderr) = (read(&scratch.0, "stdout"), read(&scratch.0, "stderr"));
        let records: Vec<serde_json::Value> = stdout
            .lines()
            .chain(stderr.lines())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let output = |stream: &str, line: &str| {
            records.iter().any(|r| {
                r["fields"]["stream"] == stream
                    && r["fields"]["line"] == line
                    && r["fields"]["task_id"] == "j-1"
            })
        };
        println!(
            "json: {} records, e.g. {}",
            records.len(),
            stderr.lines().find(|l| l.contains("err-line")).unwrap()
        );
        assert!(output("stderr", "err-line j-1"), "{stderr}");
        assert!(output("stdout", "out-line j-1"), "{stderr}");

        // The final error is a JSON record too, and so is an argument error.
        let (status, stdout, stderr) = run_bin(
            &[
                "--log-format",
                "json",
                "run",
                "--queue",
                "q",
                "--url",
                "amqp://guest:guest@127.0.0.1:1/%2f",
                "--give-up-after",
                "1s",
                "--",
                "true",
            ],
            Duration::from_secs(20),
        )
        .await;
        assert_eq!(status.code(), Some(1));
        assert!(stdout.is_empty(), "{stdout}");
        let last: Vec<serde_json::Value> = stderr
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let last = last.last().unwrap();
        assert_eq!(last["level"], "ERROR", "{last}");
        assert!(
            last["fields"]["message"]
                .as_str()
                .unwrap()
                .starts_with("amqp-worker: gave up after"),
            "{last}"
        );
        let (status, _, stderr) = run_bin(
            &["--log-format", "json", "run", "--bogus-flag", "--", "true"],
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(status.code(), Some(2));
        let record: serde_json::Value =
            serde_json::from_str(stderr.trim()).unwrap_or_else(|e| panic!("{e}: {stderr}"));
        assert!(
            record["fields"]["message"]
                .as_str()
                .unwrap()
                .contains("--bogus-flag"),
            "{record}"
        );
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_ends_the_running_commands_before_the_worker_exits() {
    let mut cleanup = Cleanup::new();
    let scratch = Scratch::new();
    within(Duration::from_secs(60), async {
        let config = test_config("second-signal");
        cleanup.config(&config);
        let pids = scratch.0.join("pids");
        // The shell and the sleep it waits for, both in the command's process group.
        let script = format!("echo $$ >> {p}; sleep 30 & echo $! >> {p}; wait", p = pids.display());
        let mut worker = spawn(
            &[
                "run", "--queue", &config.queue, "--concurrency", "2", "--retry-delays", "100ms,200ms",
                "--", "sh", "-c", &script,
            ],
            &scratch.0,
        );
        wait_until(Duration::from_secs(20), "consuming", || read(&scratch.0, "stderr").contains("consuming")).await;
        let conn = connect().await;
        publish_ids(&conn, "", &config.queue, &["s-1".to_owned(), "s-2".to_owned()]).await;
        wait_until(Duration::from_secs(20), "two commands running", || {
            read(&scratch.0, "pids").lines().count() == 4
        })
        .await;
        let pids: Vec<String> = read(&scratch.0, "pids").lines().map(str::to_owned).collect();
        assert!(pids.iter().all(|p| alive(p)), "{pids:?}");
        signal(&worker, "-TERM").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        signal(&worker, "-TERM").await;
        let status = tokio::time::timeout(Duration::from_secs(15), worker.wait()).await.unwrap().unwrap();
        let left: Vec<&String> = pids.iter().filter(|p| alive(p)).collect();
        // Killed, not failed: the tasks were not settled, and are back in the queue.
        let mut back = 0;
        for _ in 0..50 {
            back = ready(&conn, &config.queue).await;
            if back == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("second signal: exit {status}, command processes left {left:?}, tasks back in the queue {back}");
        for p in &left {
            let _ = std::process::Command::new("kill").args(["-KILL", p.as_str()]).status();
        }
        assert_eq!(status.code(), Some(130));
        assert!(left.is_empty(), "orphans: {left:?}");
        assert_eq!(back, 2, "{}", read(&scratch.0, "stderr"));
        assert_eq!(ready(&conn, &config.parking_queue()).await, 0);
        conn.close().await.unwrap();
    })
    .await;
}
