//! Helpers shared by the worker's broker tests: time bounds, unique configurations cleaned up
//! even when a test fails, publishing with ids, a recording handler, `rabbitmqctl`, and
//! running the binary.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::future::Future;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqp_client::{Connection, QueueDeclareOptions, QueueDeleteOptions};
use amqp_test_support::{broker_url, unique_name};
use amqp_worker::{
    Handler, Metrics, Publisher, Shutdown, Worker, WorkerConfig, WorkerError, task_properties,
    topology,
};
use tokio::task::JoinHandle;

/// Runs a test body, failing the test if it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, body: F) -> F::Output {
    match tokio::time::timeout(limit, body).await {
        Ok(out) => out,
        Err(_) => panic!("test did not finish within {limit:?}"),
    }
}

/// A connection to the broker under test.
pub async fn connect() -> Connection {
    Connection::connect(&broker_url())
        .await
        .expect("connect to the broker at AMQP_URL")
}

/// A worker on `config` running `handler`, started and connected (within 60 s): its
/// metrics, its stop switch, and the task running it (which ends after `shutdown.trigger()`).
pub async fn start_worker<H: Handler>(
    config: &WorkerConfig,
    handler: H,
) -> (Arc<Metrics>, Shutdown, JoinHandle<Result<(), WorkerError>>) {
    let worker = Worker::new(config.clone(), handler).expect("a valid test configuration");
    let (metrics, shutdown) = (worker.metrics(), worker.shutdown());
    let running = tokio::spawn(worker.run());
    wait_until(Duration::from_secs(60), "connected", || {
        metrics.is_connected()
    })
    .await;
    (metrics, shutdown, running)
}

/// A worker configuration on a unique queue with short retry delays (100 ms, 200 ms), three
/// attempts, a unique connection name and a short give-up deadline.
pub fn test_config(prefix: &str) -> WorkerConfig {
    let mut c = WorkerConfig::new(unique_name(&format!("amqp-worker-test-{prefix}")));
    c.url = broker_url();
    c.connection_name = Some(format!("{}-conn", c.queue));
    c.retry_delays = vec![Duration::from_millis(100), Duration::from_millis(200)];
    c.max_attempts = 3;
    c.handler_timeout = Duration::from_secs(5);
    c.give_up_after = Duration::from_secs(30);
    c.shutdown_timeout = Duration::from_secs(10);
    c
}

/// Deletes a worker's topology and extra queues and exchanges when dropped, on its own thread
/// and connection, so it works from a panicking async test.
#[derive(Default)]
pub struct Cleanup {
    configs: Vec<WorkerConfig>,
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl Cleanup {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn config(&mut self, c: &WorkerConfig) {
        self.configs.push(c.clone());
    }

    pub fn queue(&mut self, name: &str) {
        self.queues.push(name.to_owned());
    }

    pub fn exchange(&mut self, name: &str) {
        self.exchanges.push(name.to_owned());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let configs = std::mem::take(&mut self.configs);
        let queues = std::mem::take(&mut self.queues);
        let exchanges = std::mem::take(&mut self.exchanges);
        let worker = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let _ = tokio::time::timeout(Duration::from_secs(15), async move {
                    let Ok(conn) = Connection::connect(&broker_url()).await else {
                        return;
                    };
                    for c in &configs {
                        let _ = topology::delete(&conn, c).await;
                    }
                    for q in &queues {
                        if let Ok(ch) = conn.open_channel().await {
                            let _ = ch.queue_delete(q, QueueDeleteOptions::default()).await;
                            let _ = ch.close().await;
                        }
                    }
                    for x in &exchanges {
                        if let Ok(ch) = conn.open_channel().await {
                            let _ = ch.exchange_delete(x, Default::default()).await;
                            let _ = ch.close().await;
                        }
                    }
                    let _ = conn.close().await;
                })
                .await;
            });
        });
        let _ = worker.join();
    }
}

/// Publishes one task per id (body = id) to `exchange`/`key`, pipelined, all confirmed.
pub async fn publish_ids(conn: &Connection, exchange: &str, key: &str, ids: &[String]) {
    let publisher = Publisher::open(conn).await.expect("publisher");
    let mut pending = Vec::with_capacity(ids.len());
    for id in ids {
        pending.push(
            publisher
                .send(exchange, key, &task_properties(id), id.clone())
                .await
                .expect("send"),
        );
        if pending.len() >= 1000 {
            for p in pending.drain(..) {
                p.wait().await.expect("confirmed");
            }
        }
    }
    for p in pending {
        p.wait().await.expect("confirmed");
    }
    publisher.close().await.expect("close publisher");
}

/// `n` task ids with a prefix.
pub fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Counts per task id, shared between a handler and the test.
#[derive(Clone, Default)]
pub struct Tally(Arc<Mutex<HashMap<String, u32>>>);

impl Tally {
    pub fn add(&self, id: &str) {
        *self.0.lock().unwrap().entry(id.to_owned()).or_default() += 1;
    }

    pub fn count(&self, id: &str) -> u32 {
        self.0.lock().unwrap().get(id).copied().unwrap_or(0)
    }

    /// Ids of `all` never recorded.
    pub fn missing(&self, all: &[String]) -> Vec<String> {
        let map = self.0.lock().unwrap();
        all.iter()
            .filter(|id| !map.contains_key(*id))
            .cloned()
            .collect()
    }

    /// Recordings beyond the first, summed.
    pub fn duplicates(&self) -> u32 {
        self.0.lock().unwrap().values().map(|c| c - 1).sum()
    }

    pub fn distinct(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Waits (polling) until `done` holds, or panics after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ready messages in `queue`.
pub async fn ready(conn: &Connection, queue: &str) -> u32 {
    let ch = conn.open_channel().await.unwrap();
    let passive = QueueDeclareOptions::default().with_passive();
    let n = ch
        .queue_declare(queue, passive)
        .await
        .unwrap()
        .message_count;
    let _ = ch.close().await;
    n
}

/// Runs `rabbitmqctl` with `args` (off the async runtime) and returns its stdout.
pub async fn rabbitmqctl(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new("rabbitmqctl")
            .args(&args)
            .output()
            .expect("rabbitmqctl is on the PATH");
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .expect("rabbitmqctl task")
}

/// The broker-side pid of the connection whose `connection_name` client property is `name`,
/// if it is listed (RabbitMQ 3.10 has no `user_provided_name` column).
pub async fn connection_pid(name: &str) -> Option<String> {
    let listing = rabbitmqctl(&[
        "list_connections",
        "--quiet",
        "--no-table-headers",
        "pid",
        "client_properties",
    ])
    .await;
    let needle = format!("\"{name}\"");
    let line = listing.lines().find(|l| l.contains(&needle))?;
    let pid = line.split('\t').next().unwrap_or_default().trim();
    pid.starts_with('<').then(|| pid.to_owned())
}

/// The `amqp-worker` binary (built with the `cli` feature, so only the tests that require it
/// may call this).
#[cfg(feature = "cli")]
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_amqp-worker"));
    cmd.env("AMQP_URL", broker_url());
    cmd.env_remove("RUST_LOG");
    cmd
}

/// Runs the binary to completion (bounded by `limit`) and returns status, stdout, stderr.
#[cfg(feature = "cli")]
pub async fn run_bin(args: &[&str], limit: Duration) -> (std::process::ExitStatus, String, String) {
    let mut cmd = tokio::process::Command::from(bin());
    cmd.args(args).kill_on_drop(true);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("amqp-worker {args:?} did not finish within {limit:?}"))
        .expect("run amqp-worker");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A peer on 127.0.0.1 that accepts every connection, reads the client's protocol header
/// (so the close is a clean EOF) and closes at once, as a load balancer or port forward does
/// while the broker behind it is down. Stops when dropped.
pub struct ClosingPeer {
    pub port: u16,
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ClosingPeer {
    pub async fn start() -> Self {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut header = [0u8; 8];
                let _ = tokio::time::timeout(Duration::from_secs(1), sock.read_exact(&mut header))
                    .await;
                drop(sock);
            }
        });
        Self {
            port,
            accepted,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for ClosingPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
