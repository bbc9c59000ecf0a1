//! The `amqp-worker` binary as a process against the real broker: SIGTERM mid-batch lets the
//! running tasks finish, acks them and exits 0 with nothing lost; kill -9 mid-task loses
//! nothing either (a restarted worker gets the unacknowledged tasks). Also checks the task
//! command's stdin and environment, `publish --file`, and the /healthz and /metrics endpoint.

// Tests unwrap (a failure is the test failing) and print their figures.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use amqp_test_support::unique_name;
use support::{Cleanup, bin, connect, ready, run_bin, test_config, wait_until, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;

const TASKS: usize = 40;

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique_name("amqp-worker-test"));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The task command: checks its stdin and environment, records `start`, works for `secs`,
/// records `done`. Lines: `<event> <worker> <message id> <attempt>`.
fn task_script(log: &Path, secs: &str) -> String {
    format!(
        r#"body=$(cat); [ "$body" = "payload $AMQP_MESSAGE_ID" ] || exit 3; [ "$AMQP_HEADER_TEAM" = blue ] || exit 4; echo "start $WORKER $AMQP_MESSAGE_ID $AMQP_ATTEMPT" >> {log}; sleep {secs}; echo "done $WORKER $AMQP_MESSAGE_ID $AMQP_ATTEMPT" >> {log}"#,
        log = log.display()
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `amqp-worker run` on `queue` as worker `name`, serving metrics on `port`.
fn spawn_worker(queue: &str, name: &str, port: u16, script: &str, dir: &Path) -> Child {
    let stderr = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut cmd = tokio::process::Command::from(bin());
    cmd.args([
        "run",
        "--queue",
        queue,
        "--concurrency",
        "4",
        "--prefetch",
        "8",
    ])
    .args([
        "--retry-delays",
        "100ms",
        "--max-attempts",
        "3",
        "--shutdown-timeout",
        "20s",
    ])
    .args(["--connection-name", &format!("{queue}-{name}")])
    .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
    .args(["--", "sh", "-c", script])
    .env("WORKER", name)
    .stdout(Stdio::null())
    .stderr(stderr)
    .kill_on_drop(true);
    cmd.spawn().unwrap()
}

/// One GET on the metrics endpoint: status line and body, or None if nothing listens.
async fn http_get(port: u16, path: &str) -> Option<(String, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_owned(), body.to_owned()))
}

async fn wait_healthy(port: u16) {
    for _ in 0..200 {
        if let Some((status, _)) = http_get(port, "/healthz").await
            && status.contains("200")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the worker never reported healthy on port {port}");
}

/// `event -> worker -> ids` from the log file.
fn events(log: &Path) -> BTreeMap<(String, String), BTreeSet<String>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if let [event, worker, id, _attempt] = f[..] {
            out.entry((event.to_owned(), worker.to_owned()))
                .or_default()
                .insert(id.to_owned());
        }
    }
    out
}

fn ids_of(
    ev: &BTreeMap<(String, String), BTreeSet<String>>,
    event: &str,
    worker: &str,
) -> BTreeSet<String> {
    ev.get(&(event.to_owned(), worker.to_owned()))
        .cloned()
        .unwrap_or_default()
}

fn all_done(ev: &BTreeMap<(String, String), BTreeSet<String>>) -> BTreeSet<String> {
    ev.iter()
        .filter(|((e, _), _)| e == "done")
        .flat_map(|(_, ids)| ids.clone())
        .collect()
}

/// Publishes TASKS tasks `t-1..` with the binary, from a file, with header team=blue.
async fn publish_tasks(queue: &str, dir: &Path) -> BTreeSet<String> {
    let file = dir.join("tasks.txt");
    let ids: Vec<String> = (1..=TASKS).map(|i| format!("t-{i}")).collect();
    let lines: Vec<String> = ids.iter().map(|id| format!("payload {id}")).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let file = file.display().to_string();
    let (status, stdout, stderr) = run_bin(
        &[
            "publish",
            "--routing-key",
            queue,
            "--file",
            &file,
            "--id-prefix",
            "t",
            "--header",
            "team=blue",
        ],
        Duration::from_secs(20),
    )
    .await;
    assert!(status.success(), "publish failed: {stderr}");
    assert!(
        stdout.contains(&format!("published {TASKS} task(s)")),
        "{stdout}"
    );
    ids.into_iter().collect()
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

async fn exit_status(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    tokio::time::timeout(limit, child.wait())
        .await
        .expect("the worker exits in time")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_batch_finishes_running_tasks_and_exits_zero() {
    let mut cleanup = Cleanup::new();
    let scratch = Scratch::new();
    within(Duration::from_secs(90), async {
        let config = test_config("sigterm");
        cleanup.config(&config);
        let log = scratch.0.join("events.log");
        let script = task_script(&log, "0.3");
        let port = free_port();
        let mut a = spawn_worker(&config.queue, "A", port, &script, &scratch.0);
        wait_healthy(port).await;
        let all = publish_tasks(&config.queue, &scratch.0).await;
        wait_until(Duration::from_secs(30), "8 tasks started", || {
            ids_of(&events(&log), "start", "A").len() >= 8
        })
        .await;
        let (_, metrics) = http_get(port, "/metrics").await.unwrap();
        let label = format!("{{queue=\"{}\"}}", config.queue);
        assert!(metrics.contains(&format!("amqp_worker_in_flight{label} 4")), "{metrics}");
        assert!(metrics.contains(&format!("amqp_worker_connected{label} 1")), "{metrics}");
        signal(&a, "-TERM").await;
        let status = exit_status(&mut a, Duration::from_secs(30)).await;
        let ev = events(&log);
        let (started, done) = (ids_of(&ev, "start", "A"), ids_of(&ev, "done", "A"));
        let unfinished: Vec<_> = started.difference(&done).collect();
        let conn = connect().await;
        let left = ready(&conn, &config.queue).await as usize;
        println!(
            "sigterm: exit {status}, started {}, finished {}, unfinished {unfinished:?}, left in queue {left}",
            started.len(),
            done.len()
        );
        assert!(status.success(), "exit 0 after SIGTERM, got {status}");
        assert!(unfinished.is_empty(), "running tasks were allowed to finish");
        assert!(done.len() < TASKS, "the signal came mid-batch");
        assert_eq!(left + done.len(), TASKS, "finished tasks acked, the rest still queued");

        // A restarted worker finishes the rest.
        let mut b = spawn_worker(&config.queue, "B", port, &script, &scratch.0);
        wait_until(Duration::from_secs(40), "all tasks done", || all_done(&events(&log)).len() == TASKS).await;
        signal(&b, "-TERM").await;
        let status_b = exit_status(&mut b, Duration::from_secs(30)).await;
        let lost = all.difference(&all_done(&events(&log))).count();
        let ev = events(&log);
        let runs: usize = ev.iter().filter(|((e, _), _)| e == "done").map(|(_, s)| s.len()).sum();
        println!("sigterm: restart finished {}, duplicates {}, lost {lost}", ids_of(&ev, "done", "B").len(), runs - TASKS);
        assert!(status_b.success());
        assert_eq!(lost, 0);
        assert_eq!(ready(&conn, &config.queue).await, 0);
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_task_loses_nothing() {
    let mut cleanup = Cleanup::new();
    let scratch = Scratch::new();
    within(Duration::from_secs(90), async {
        let config = test_config("kill9");
        cleanup.config(&config);
        let log = scratch.0.join("events.log");
        let script = task_script(&log, "0.5");
        let port = free_port();
        let mut a = spawn_worker(&config.queue, "A", port, &script, &scratch.0);
        wait_healthy(port).await;
        let all = publish_tasks(&config.queue, &scratch.0).await;
        wait_until(Duration::from_secs(30), "6 tasks started", || {
            ids_of(&events(&log), "start", "A").len() >= 6
        })
        .await;
        signal(&a, "-KILL").await;
        let status = exit_status(&mut a, Duration::from_secs(10)).await;
        let ev = events(&log);
        let in_flight: BTreeSet<String> =
            ids_of(&ev, "start", "A").difference(&ids_of(&ev, "done", "A")).cloned().collect();
        assert!(!status.success(), "killed");
        assert!(!in_flight.is_empty(), "the kill came mid-task");

        let port_b = free_port();
        let mut b = spawn_worker(&config.queue, "B", port_b, &script, &scratch.0);
        wait_until(Duration::from_secs(40), "all tasks done", || all_done(&events(&log)).len() == TASKS).await;
        let ev = events(&log);
        let redone = ids_of(&ev, "done", "B");
        // The tasks running in A when it died were never acked: B must have run them again.
        wait_until(Duration::from_secs(20), "in-flight tasks redelivered to B", || {
            in_flight.is_subset(&ids_of(&events(&log), "done", "B"))
        })
        .await;
        signal(&b, "-TERM").await;
        let status_b = exit_status(&mut b, Duration::from_secs(30)).await;
        let ev = events(&log);
        let lost = all.difference(&all_done(&ev)).count();
        let runs: usize = ev.iter().filter(|((e, _), _)| e == "done").map(|(_, s)| s.len()).sum();
        let conn = connect().await;
        println!(
            "kill -9: in flight at the kill {in_flight:?}, finished by A {}, by B {}, duplicates {}, lost {lost}",
            ids_of(&ev, "done", "A").len(),
            redone.len(),
            runs - TASKS
        );
        assert!(status_b.success());
        assert_eq!(lost, 0);
        assert_eq!(ready(&conn, &config.queue).await, 0);
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_while_there_is_no_broker_connection() {
    within(Duration::from_secs(30), async {
        let port = free_port();
        let mut cmd = tokio::process::Command::from(bin());
        cmd.args([
            "run",
            "--queue",
            "q",
            "--url",
            "amqp://guest:guest@127.0.0.1:1/%2f",
        ])
        .args(["--give-up-after", "3s", "--log-format", "json"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}"), "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        let child = cmd.spawn().unwrap();
        let mut health = None;
        for _ in 0..100 {
            health = http_get(port, "/healthz").await;
            if health.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (status_line, body) = health.expect("the endpoint answers");
        let (_, metrics) = http_get(port, "/metrics").await.unwrap();
        let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        println!(
            "healthz without broker: {status_line} {}; exit {}",
            body.trim(),
            out.status
        );
        assert!(status_line.contains("503"), "{status_line}");
        assert!(
            metrics.contains("amqp_worker_connected{queue=\"q\"} 0"),
            "{metrics}"
        );
        assert!(!out.status.success());
        // JSON log lines, the final error too.
        let lines = stderr.lines().collect::<Vec<_>>();
        assert!(
            lines.len() > 1 && lines.iter().all(|l| l.starts_with('{')),
            "{stderr}"
        );
        assert!(
            lines.last().unwrap().contains("amqp-worker: gave up after"),
            "{stderr}"
        );
    })
    .await;
}
