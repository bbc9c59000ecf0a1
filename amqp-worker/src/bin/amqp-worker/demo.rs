//! `demo`: publishes a few thousand tasks to a fresh queue on the broker at AMQP_URL, some
//! failing once and some always, runs the worker on them in-process with short retry delays,
//! shows progress, and checks that every task either succeeded or was parked.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use amqp_client::QueueDeclareOptions;
use amqp_worker::{
    DeadLetter, Handler, HandlerError, MetricsSnapshot, Publisher, Task, Worker, WorkerConfig,
    task_properties, topology,
};

use crate::CliError;
use crate::cli::DemoArgs;
use crate::run::report;

/// Tasks `n` with `n % 10 == 3` fail their first attempt.
fn fails_once(n: u32) -> bool {
    n % 10 == 3
}

/// Tasks `n` with `n % 100 == 7` fail every attempt and end in the parking queue.
fn fails_always(n: u32) -> bool {
    n % 100 == 7
}

/// What the demo's handler saw.
#[derive(Default)]
struct Seen {
    /// Task number to how many times it succeeded.
    succeeded: HashMap<u32, u32>,
    /// Tasks the dead-letter hook reported.
    parked: HashSet<u32>,
}

struct DemoHandler {
    seen: Arc<Mutex<Seen>>,
}

fn task_number(task: &Task) -> Option<u32> {
    task.message_id()?.rsplit('-').next()?.parse().ok()
}

impl Handler for DemoHandler {
    async fn handle(&self, task: &Task) -> Result<(), HandlerError> {
        let n = task_number(task).ok_or_else(|| HandlerError::new("no task number"))?;
        // A little work, so that concurrency matters.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..3))).await;
        if fails_always(n) {
            return Err(HandlerError::new(format!("task {n} always fails")));
        }
        if fails_once(n) && task.attempt == 1 {
            return Err(HandlerError::new(format!(
                "task {n} fails its first attempt"
            )));
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        *seen.succeeded.entry(n).or_default() += 1;
        Ok(())
    }

    async fn on_dead_letter(&self, task: &Task, _dead: &DeadLetter) {
        if let Some(n) = task_number(task) {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            seen.parked.insert(n);
        }
    }
}

/// Draws the progress line on stderr: rewritten in place on a terminal, one line a second
/// otherwise.
struct Progress {
    tty: bool,
    last_line: Instant,
}

impl Progress {
    fn show(&mut self, done: usize, total: u32, m: &MetricsSnapshot, started: Instant) {
        let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
        let line = format!(
            "processed {done}/{total}  succeeded {}  retried {}  dead-lettered {}  in flight {}  {rate:.0} tasks/s",
            m.succeeded, m.retried, m.dead_lettered, m.in_flight
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else if self.last_line.elapsed() >= Duration::from_secs(1) {
            let _ = writeln!(err, "{line}");
            self.last_line = Instant::now();
        }
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.tty {
            let _ = writeln!(std::io::stderr());
        }
    }
}

fn demo_config(url: String, concurrency: usize) -> WorkerConfig {
    let secs = amqp_worker::retry::unix_now();
    let mut config = WorkerConfig::new(format!("amqp-worker-demo-{}-{secs}", std::process::id()));
    config.url = url;
    config.connection_name = Some(format!("{} worker", config.queue));
    config.concurrency = concurrency;
    config.prefetch = u16::try_from(concurrency.saturating_mul(4)).unwrap_or(u16::MAX);
    config.retry_delays = vec![Duration::from_millis(200), Duration::from_millis(500)];
    config.max_attempts = 3;
    config.handler_timeout = Duration::from_secs(5);
    config.give_up_after = Duration::from_secs(15);
    config.shutdown_timeout = Duration::from_secs(5);
    config
}

async fn publish_all(publisher: &Publisher, queue: &str, count: u32) -> Result<u32, CliError> {
    let mut pending = VecDeque::new();
    let mut confirmed = 0;
    let failed = |e: amqp_worker::PublishError| CliError::Demo(format!("publishing failed: {e}"));
    for n in 0..count {
        let props = task_properties(&format!("demo-{n}"));
        pending.push_back(
            publisher
                .send("", queue, &props, format!("task {n}"))
                .await
                .map_err(failed)?,
        );
        if pending.len() >= 500
            && let Some(p) = pending.pop_front()
        {
            p.wait().await.map_err(failed)?;
            confirmed += 1;
        }
    }
    while let Some(p) = pending.pop_front() {
        p.wait().await.map_err(failed)?;
        confirmed += 1;
    }
    Ok(confirmed)
}

/// `amqp-worker demo`.
pub(crate) async fn demo(args: DemoArgs) -> Result<(), CliError> {
    let url = args
        .broker
        .url
        .clone()
        .unwrap_or_else(|| amqp_worker::config::DEFAULT_URL.to_owned());
    let config = demo_config(url, args.concurrency);
    let conn = crate::connect(&config.url, &format!("{} publisher", config.queue)).await?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let worker = Worker::new(config.clone(), DemoHandler { seen: seen.clone() })?;
    let metrics = worker.metrics();
    let shutdown = worker.shutdown();
    let running = tokio::spawn(worker.run());
    let result = drive(&args, &config, &conn, &seen, &metrics, &shutdown).await;
    shutdown.trigger();
    let stopped = running.await;
    if let Err(e) = topology::delete(&conn, &config).await {
        tracing::warn!(error = %e, "cleaning up the demo queues failed");
    }
    let _ = conn.close().await;
    match stopped {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(CliError::Demo(format!("the worker task failed: {e}"))),
    }
    result
}

/// The demonstration proper, with the worker running: publish, watch, sum up, check.
async fn drive(
    args: &DemoArgs,
    config: &WorkerConfig,
    conn: &amqp_client::Connection,
    seen: &Arc<Mutex<Seen>>,
    metrics: &Arc<amqp_worker::Metrics>,
    shutdown: &amqp_worker::Shutdown,
) -> Result<(), CliError> {
    announce(args.count, config);
    wait_connected(metrics, shutdown).await?;
    let started = Instant::now();
    let published = publish_tasks(conn, &config.queue, args.count).await?;
    watch(args, seen, metrics, started).await;
    let elapsed = started.elapsed();
    let in_parking = parking_depth(conn, config).await;
    let m = metrics.snapshot();
    let summary = Summary::new(
        args.count,
        &seen.lock().unwrap_or_else(PoisonError::into_inner),
    );
    summary.report(config, published, elapsed, &m, in_parking);
    summary.check(args.timeout)
}

/// Says on stderr what the demo is about to do.
fn announce(count: u32, config: &WorkerConfig) {
    eprintln!(
        "amqp-worker demo: {count} tasks through queue {} ({} handlers, retry delays 200ms and 500ms, 3 attempts)",
        config.queue, config.concurrency
    );
    eprintln!(
        "  every 10th task fails once (then succeeds on retry); every 100th fails always (then is parked)"
    );
}

/// Waits until the worker consumes (so that no task waits for it to start), for at most
/// 15 s, or fails if shut down meanwhile.
async fn wait_connected(
    metrics: &amqp_worker::Metrics,
    shutdown: &amqp_worker::Shutdown,
) -> Result<(), CliError> {
    let waiting = Instant::now();
    while !metrics.is_connected() {
        if shutdown.is_triggered() || waiting.elapsed() > Duration::from_secs(15) {
            return Err(CliError::Demo(
                "the worker did not connect within 15 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Publishes the `count` tasks on a publisher of the demo's own; returns how many were
/// confirmed.
async fn publish_tasks(
    conn: &amqp_client::Connection,
    queue: &str,
    count: u32,
) -> Result<u32, CliError> {
    let publisher = Publisher::open(conn)
        .await
        .map_err(|e| CliError::Demo(format!("opening the publisher failed: {e}")))?;
    let published = publish_all(&publisher, queue, count).await?;
    let _ = publisher.close().await;
    Ok(published)
}

/// Shows progress every 100 ms until every task succeeded or was parked, or `--timeout`
/// passed since `started`.
async fn watch(
    args: &DemoArgs,
    seen: &Mutex<Seen>,
    metrics: &amqp_worker::Metrics,
    started: Instant,
) {
    let count = args.count;
    let mut progress = Progress {
        tty: std::io::stderr().is_terminal(),
        last_line: Instant::now(),
    };
    let done = |seen: &Seen| {
        (0..count)
            .filter(|n| seen.succeeded.contains_key(n) || seen.parked.contains(n))
            .count()
    };
    loop {
        // Counters first: a task counted done is then always in them too.
        let snapshot = metrics.snapshot();
        let finished = done(&seen.lock().unwrap_or_else(PoisonError::into_inner));
        progress.show(finished, count, &snapshot, started);
        if finished == count as usize || started.elapsed() > args.timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress.finish();
}

/// Messages in the parking queue now, read by a passive declare; `None` if that failed.
async fn parking_depth(conn: &amqp_client::Connection, config: &WorkerConfig) -> Option<u32> {
    let passive = QueueDeclareOptions::default().with_passive();
    match conn.open_channel().await {
        Ok(ch) => ch
            .queue_declare(&config.parking_queue(), passive)
            .await
            .map(|q| q.message_count)
            .ok(),
        Err(_) => None,
    }
}

/// What became of the tasks, from what the handler saw.
struct Summary {
    /// Tasks published.
    count: u32,
    /// Tasks that succeeded at least once.
    succeeded: usize,
    /// Tasks the dead-letter hook reported.
    parked: usize,
    /// Tasks neither succeeded nor parked.
    lost: Vec<u32>,
    /// Tasks that should have been parked (they always fail).
    expected_parked: usize,
    /// Successful runs beyond the first of each task.
    duplicates: u32,
}

impl Summary {
    /// The summary of the `count` tasks from what the handler saw.
    fn new(count: u32, seen: &Seen) -> Self {
        Summary {
            count,
            succeeded: seen.succeeded.len(),
            parked: seen.parked.len(),
            lost: (0..count)
                .filter(|n| !seen.succeeded.contains_key(n) && !seen.parked.contains(n))
                .collect(),
            expected_parked: (0..count).filter(|n| fails_always(*n)).count(),
            duplicates: seen.succeeded.values().map(|c| c - 1).sum(),
        }
    }

    /// Prints the summary table on stdout, with the worker's counters `m` and the parking
    /// queue's depth (`in_parking`, if it could be read).
    fn report(
        &self,
        config: &WorkerConfig,
        published: u32,
        elapsed: Duration,
        m: &MetricsSnapshot,
        in_parking: Option<u32>,
    ) {
        let processed = self.count as usize - self.lost.len();
        let rate = processed as f64 / elapsed.as_secs_f64().max(0.001);
        let parking = in_parking.map_or("unknown".to_owned(), |n| n.to_string());
        let expected_parked = self.expected_parked;
        let duplicates = self.duplicates;
        report(&format!(
            "amqp-worker demo summary (queue {})",
            config.queue
        ));
        report(&format!("published      {published:>7}  (all confirmed)"));
        report(&format!(
            "processed      {processed:>7}  ({} succeeded, {} dead-lettered)",
            self.succeeded, self.parked
        ));
        report(&format!(
            "handler runs   {:>7}  ({} failed attempts)",
            m.consumed, m.failed
        ));
        report(&format!("retried        {:>7}", m.retried));
        report(&format!(
            "dead-lettered  {:>7}  (expected {expected_parked}; in the parking queue: {parking})",
            m.dead_lettered
        ));
        report(&format!("duplicates     {duplicates:>7}"));
        report(&format!("lost           {:>7}", self.lost.len()));
        report(&format!(
            "elapsed        {:>7.2}s  ({rate:.0} tasks/s)",
            elapsed.as_secs_f64()
        ));
    }

    /// The demo's verdict: every task succeeded or was parked within `timeout`, and exactly
    /// the tasks that always fail were parked.
    fn check(&self, timeout: Duration) -> Result<(), CliError> {
        if !self.lost.is_empty() {
            let sample: Vec<String> = self.lost.iter().take(10).map(u32::to_string).collect();
            return Err(CliError::Demo(format!(
                "{} task(s) were neither processed nor parked within {:?} (e.g. {})",
                self.lost.len(),
                timeout,
                sample.join(", ")
            )));
        }
        if self.parked != self.expected_parked {
            return Err(CliError::Demo(format!(
                "{} task(s) were parked but {} should have been",
                self.parked, self.expected_parked
            )));
        }
        Ok(())
    }
}
