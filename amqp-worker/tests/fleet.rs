//! A fleet of `amqp-worker run` processes on a private 3-node RabbitMQ cluster
//! (`scripts/rabbit-cluster`; the shared broker is never touched), one worker per node, a
//! quorum work queue, and a rolling restart of all three nodes, one after another, during the
//! run. Counts lost (confirmed, never processed) and duplicated tasks and the throughput
//! before, during and after the restarts; prints one line ending in PASS or FAIL.
//!
//! `FLEET_TASKS` (default 10 000) and `FLEET_RATE` (tasks published per second, default 150)
//! size the run; `scripts/fleet-rolling-restart` runs it with 100 000 tasks.
//!
//! Also: a worker given a cluster URL (several hosts) must fail over to another host when its
//! first one is down (`a_worker_given_several_hosts_connects_to_the_next_when_the_first_is_down`).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use amqp_client::RecoveryPolicy;
use amqp_client::{Connection, ConnectionConfig, PublishOptions, QueueDeclareOptions};
use amqp_test_support::nodes::{Nodes, heavy_lock};
use amqp_test_support::{broker_addr, unique_name};
use amqp_worker::task_properties;
use support::{bin, within};
use tokio::process::Child;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique_name("amqp-fleet"));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `amqp-worker run` as worker `name` against `url`; each task appends its message id to
/// `log`. Killed when dropped.
fn spawn_worker(url: &str, queue: &str, name: &str, log: &Path, dir: &Path) -> Child {
    let stderr = std::fs::File::create(dir.join(format!("{name}.stderr"))).unwrap();
    let mut cmd = tokio::process::Command::from(bin());
    cmd.args([
        "run",
        "--url",
        url,
        "--queue",
        queue,
        "--queue-type",
        "quorum",
    ])
    .args(["--concurrency", "8", "--prefetch", "32"])
    .args(["--retry-delays", "1s", "--max-attempts", "5"])
    .args(["--give-up-after", "300s", "--reconnect-max-delay", "1s"])
    .args(["--connection-name", &format!("{queue}-{name}")])
    .args(["--log-level", "warn"])
    .args([
        "--",
        "sh",
        "-c",
        r#"echo "$AMQP_MESSAGE_ID" >> "$FLEET_LOG""#,
    ])
    .env("FLEET_LOG", log)
    .stdout(Stdio::null())
    .stderr(stderr)
    .kill_on_drop(true);
    cmd.spawn().unwrap()
}

/// Every processed id with how many times it ran, from the workers' logs.
fn processed(logs: &[PathBuf]) -> BTreeMap<u64, u32> {
    let mut out = BTreeMap::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            if let Some(id) = line.strip_prefix("t-").and_then(|s| s.parse().ok()) {
                *out.entry(id).or_default() += 1;
            }
        }
    }
    out
}

/// Processed task runs so far (lines in the logs).
fn runs(logs: &[PathBuf]) -> u64 {
    logs.iter()
        .map(|l| {
            std::fs::read(l)
                .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
                .unwrap_or(0)
        })
        .sum()
}

/// Publishes `n` tasks `t-0..` at `rate` per second on a recovering connection to every node,
/// publishing again whatever was not confirmed. Returns (confirmed, republished).
async fn publish_paced(url: String, queue: String, n: u64, rate: u64) -> (u64, u64) {
    let cfg = ConnectionConfig::from_uri(&url)
        .unwrap()
        .with_recovery(RecoveryPolicy {
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
            give_up_after: Some(Duration::from_secs(120)),
            wait_while_recovering: Duration::from_secs(120),
            ..RecoveryPolicy::default()
        });
    let conn = Connection::connect_with(cfg).await.unwrap();
    let ch = conn.open_channel().await.unwrap();
    ch.confirm_select().await.unwrap();
    let started = Instant::now();
    let (mut confirmed, mut republished) = (0u64, 0u64);
    let batch = (rate / 10).max(1);
    let mut todo: Vec<u64> = (0..n).collect();
    let mut sent = 0u64;
    while !todo.is_empty() {
        let mut retry = Vec::new();
        for chunk in todo.chunks(batch as usize) {
            // Paced: batch k goes out at k / 10 s.
            let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
            sent += chunk.len() as u64;
            let mut pending = Vec::new();
            for &id in chunk {
                let mid = format!("t-{id}");
                match ch
                    .basic_publish(
                        "",
                        queue.as_str(),
                        PublishOptions::default(),
                        &task_properties(&mid),
                        mid.clone(),
                    )
                    .await
                {
                    Ok(c) => pending.push((id, c)),
                    Err(_) => retry.push(id),
                }
            }
            for (id, c) in pending {
                match c.await {
                    Ok(c) if c.is_acked() => confirmed += 1,
                    _ => retry.push(id),
                }
            }
        }
        republished += retry.len() as u64;
        todo = retry;
    }
    let _ = conn.close().await;
    (confirmed, republished)
}

/// Tasks per second between two samples.
fn rate(a: (Instant, u64), b: (Instant, u64)) -> f64 {
    let secs = b.0.duration_since(a.0).as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        (b.1.saturating_sub(a.1)) as f64 / secs
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_three_workers_survives_a_rolling_restart_of_the_cluster() {
    let _heavy = heavy_lock().await;
    let tasks = env_or("FLEET_TASKS", 10_000);
    let rate_per_s = env_or("FLEET_RATE", 150);
    let limit = Duration::from_secs(240 + tasks / 100);
    within(limit, async {
        let Some(nodes) = Nodes::loopback(3) else {
            return;
        };
        let scratch = Scratch::new();
        let queue = "fleet";
        let logs: Vec<PathBuf> = (1..=3)
            .map(|i| scratch.0.join(format!("w{i}.log")))
            .collect();
        let mut workers: Vec<Child> = (1..=3)
            .map(|i| {
                spawn_worker(
                    &nodes.url(i),
                    queue,
                    &format!("w{i}"),
                    &logs[i - 1],
                    &scratch.0,
                )
            })
            .collect();
        // The workers declare the queue: wait for it.
        let probe = Connection::connect(&nodes.url(1)).await.unwrap();
        let mut declared = false;
        for _ in 0..100 {
            let ch = probe.open_channel().await.unwrap();
            let passive = QueueDeclareOptions::default().with_passive();
            if ch.queue_declare(queue, passive).await.is_ok() {
                declared = true;
                let _ = ch.close().await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(declared, "the workers declared {queue}");
        let _ = probe.close().await;

        let started = Instant::now();
        let publishing = tokio::spawn(publish_paced(
            nodes.url(1),
            queue.to_owned(),
            tasks,
            rate_per_s,
        ));
        // Samples of (time, runs) every 500 ms, on their own task.
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sampling = tokio::spawn({
            let logs = logs.clone();
            async move {
                let mut samples = vec![(Instant::now(), 0u64)];
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = &mut stop_rx => break,
                    }
                    samples.push((Instant::now(), runs(&logs)));
                }
                samples
            }
        });
        // Steady state first, then node 1, 2, 3 restarted one after another.
        let warmup = Duration::from_secs((tasks / rate_per_s / 10).clamp(5, 60));
        tokio::time::sleep(warmup).await;
        let restarts_began = Instant::now();
        let mut restart_times = Vec::new();
        for i in 1..=3 {
            let t = Instant::now();
            nodes.restart(i).await;
            restart_times.push(t.elapsed());
            // Let it rejoin and its quorum member catch up before the next one.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let restarts_ended = Instant::now();
        let (confirmed, republished) = publishing.await.unwrap();
        // Wait until every task ran (or the bound).
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut seen = processed(&logs);
        while (seen.len() as u64) < tasks && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            seen = processed(&logs);
        }
        let finished = Instant::now();
        let _ = stop_tx.send(());
        let samples = sampling.await.unwrap();
        let at = |t: Instant| {
            samples
                .iter()
                .rev()
                .find(|s| s.0 <= t)
                .copied()
                .unwrap_or(samples[0])
        };
        let before = rate(at(started), at(restarts_began));
        let during = rate(at(restarts_began), at(restarts_ended));
        let after = rate(at(restarts_ended), at(finished));
        // Longest stretch without progress.
        let stall = samples
            .windows(2)
            .fold((Duration::ZERO, samples[0].0), |(longest, since), w| {
                if w[1].1 > w[0].1 {
                    (longest.max(w[1].0 - since), w[1].0)
                } else {
                    (longest, since)
                }
            })
            .0;
        let lost = (0..tasks).filter(|id| !seen.contains_key(id)).count();
        let duplicates: u64 = seen.values().map(|&k| u64::from(k - 1)).sum();
        let per_worker: Vec<u64> = logs.iter().map(|l| runs(std::slice::from_ref(l))).collect();
        for w in &mut workers {
            let _ = w.start_kill();
        }
        let pass = lost == 0 && confirmed == tasks;
        println!(
            "fleet rolling restart: {tasks} tasks at {rate_per_s}/s, 3 workers (runs per worker \
             {per_worker:?}), nodes restarted in {:?}; confirmed {confirmed} (republished \
             {republished}), processed {} distinct, lost {lost}, duplicates {duplicates}; \
             throughput before {before:.0}/s, during {during:.0}/s, after {after:.0}/s, longest \
             stall {:.1}s; took {:.1}s (cluster start {:.1}s): {}",
            restart_times
                .iter()
                .map(|d| format!("{:.1}s", d.as_secs_f64()))
                .collect::<Vec<_>>(),
            seen.len(),
            stall.as_secs_f64(),
            started.elapsed().as_secs_f64(),
            nodes.start_time.as_secs_f64(),
            if pass { "PASS" } else { "FAIL" }
        );
        assert_eq!(lost, 0);
        assert_eq!(confirmed, tasks);
        for mut w in workers {
            let _ = w.wait().await;
        }
        drop(nodes);
    })
    .await;
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_given_several_hosts_connects_to_the_next_when_the_first_is_down() {
    within(Duration::from_secs(60), async {
        let scratch = Scratch::new();
        let queue = unique_name("amqp-fleet-failover");
        let log = scratch.0.join("w.log");
        // First host: nothing listens there (a node that is down); second: the shared broker.
        let url = format!(
            "amqp://guest:guest@127.0.0.1:{},{}/%2f",
            dead_port(),
            broker_addr()
        );
        let mut worker = spawn_worker(&url, &queue, "w", &log, &scratch.0);
        let conn = Connection::connect(&amqp_test_support::broker_url())
            .await
            .unwrap();
        let ch = conn.open_channel().await.unwrap();
        let passive = QueueDeclareOptions::default().with_passive();
        let mut declared = false;
        for _ in 0..50 {
            let probe = conn.open_channel().await.unwrap();
            if probe.queue_declare(&queue, passive.clone()).await.is_ok() {
                declared = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = worker.start_kill();
        let _ = worker.wait().await;
        // Clean up what a working worker would have declared.
        for q in [
            queue.clone(),
            format!("{queue}.parked"),
            format!("{queue}.retry.1s"),
        ] {
            let _ = ch.queue_delete(&q, Default::default()).await;
        }
        let _ = conn.close().await;
        let stderr = std::fs::read_to_string(scratch.0.join("w.stderr")).unwrap_or_default();
        assert!(
            declared,
            "within 10 s the worker never reached the second host of {url}; its log:\n{}",
            stderr.lines().take(5).collect::<Vec<_>>().join("\n")
        );
    })
    .await;
}
