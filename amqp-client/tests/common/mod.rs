//! Helpers shared by the broker test files: connecting, a per-test time bound, unique names
//! that are cleaned up even when a test fails, and `rabbitmqctl`.

#![allow(dead_code)]

pub(crate) mod recovery;

use std::future::Future;
use std::process::Command;
use std::time::Duration;

use amqp_client::GetOptions;
use amqp_client::amqp_codec::{BasicProperties, ReplyCode};
use amqp_client::{
    Channel, Confirmation, Connection, ConnectionConfig, ConsumeOptions, Consumer, Delivery, Error,
    ExchangeDeleteOptions, PublishOptions, QosOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use amqp_test_support::{broker_url, unique_name};

/// Default bound on one test.
pub(crate) const LIMIT: Duration = Duration::from_secs(30);

/// Runs a test body, failing the test if it takes longer than `limit`.
pub(crate) async fn within<F: Future>(limit: Duration, body: F) -> F::Output {
    match tokio::time::timeout(limit, body).await {
        Ok(out) => out,
        Err(_) => panic!("test did not finish within {limit:?}"),
    }
}

/// A connection to the broker under test.
pub(crate) async fn connect() -> Connection {
    Connection::connect(&broker_url())
        .await
        .expect("connect to the broker at AMQP_URL")
}

/// The broker URL with extra query parameters (`key=value&...`).
pub(crate) fn url_with(params: &str) -> String {
    let url = broker_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// The configuration of the broker under test.
pub(crate) fn config() -> ConnectionConfig {
    ConnectionConfig::from_uri(&broker_url()).expect("AMQP_URL parses")
}

/// Plain queue-declare options.
pub(crate) fn plain() -> QueueDeclareOptions {
    QueueDeclareOptions::default()
}

/// Options of an exclusive queue (server-named when declared with the name "").
pub(crate) fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions::default().with_exclusive()
}

/// Asserts that `err` is a channel close by the broker with `code`.
#[track_caller]
pub(crate) fn assert_channel_closed(err: &Error, code: ReplyCode) {
    match err {
        Error::ChannelClosed(reason) => assert_eq!(reason.code, code, "{err}"),
        other => panic!("expected a channel close with {code:?}, got {other:?}"),
    }
    assert_eq!(err.reply_code(), Some(code));
    assert!(err.is_channel_error(), "{err:?} is a channel error");
    assert!(
        !err.is_connection_error(),
        "{err:?} is not a connection error"
    );
}

/// Asserts that `err` is a connection close by the broker with `code`.
#[track_caller]
pub(crate) fn assert_connection_closed(err: &Error, code: ReplyCode) {
    match err {
        Error::ConnectionClosed(reason) => assert_eq!(reason.code, code, "{err}"),
        other => panic!("expected a connection close with {code:?}, got {other:?}"),
    }
    assert_eq!(err.reply_code(), Some(code));
    assert!(err.is_connection_error(), "{err:?} is a connection error");
    assert!(!err.is_channel_error(), "{err:?} is not a channel error");
}

/// Publishes `body` to the default exchange with routing key `queue`.
pub(crate) async fn publish(ch: &Channel, queue: &str, body: &str) {
    let confirm = ch
        .basic_publish(
            "",
            queue,
            PublishOptions::default(),
            &BasicProperties::default(),
            body.to_owned(),
        )
        .await
        .expect("publish");
    confirm.await.expect("publish outcome");
}

/// Queues and exchanges a test declares, deleted when the guard drops, whether the test
/// passed, failed or timed out. Deletion uses its own connection on its own thread, so it
/// works from inside a (possibly panicking) async test.
#[derive(Default)]
pub(crate) struct Cleanup {
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl Cleanup {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A unique queue name, deleted at the end.
    pub(crate) fn queue(&mut self, prefix: &str) -> String {
        let name = unique_name(prefix);
        self.queues.push(name.clone());
        name
    }

    /// Deletes this (e.g. server-named) queue at the end too.
    pub(crate) fn track_queue(&mut self, name: &str) {
        self.queues.push(name.to_owned());
    }

    /// A unique exchange name, deleted at the end.
    pub(crate) fn exchange(&mut self, prefix: &str) -> String {
        let name = unique_name(prefix);
        self.exchanges.push(name.clone());
        name
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let queues = std::mem::take(&mut self.queues);
        let exchanges = std::mem::take(&mut self.exchanges);
        if queues.is_empty() && exchanges.is_empty() {
            return;
        }
        let worker = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let _ = tokio::time::timeout(Duration::from_secs(10), async move {
                    let Ok(conn) = Connection::connect(&broker_url()).await else {
                        return;
                    };
                    // A delete can close its channel (e.g. on an old broker that 404s a
                    // missing exchange); use a fresh channel for each.
                    for q in &queues {
                        if let Ok(ch) = conn.open_channel().await {
                            let _ = ch.queue_delete(q, QueueDeleteOptions::default()).await;
                            let _ = ch.close().await;
                        }
                    }
                    for x in &exchanges {
                        if let Ok(ch) = conn.open_channel().await {
                            let _ = ch
                                .exchange_delete(x, ExchangeDeleteOptions::default())
                                .await;
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

/// Runs `rabbitmqctl` with `args` (off the async runtime) and returns its stdout.
pub(crate) async fn rabbitmqctl(args: &[&str]) -> String {
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

/// `queue`'s count of delivered and unacknowledged messages, as its queue process tells
/// `rabbitmqctl list_queues`: asked every 200 ms until it is 0, for at most 10 s (acks a
/// client has not written yet still count), and the last answer returned ("not listed" if
/// the queue is not there).
pub(crate) async fn unacked_settled(queue: &str) -> String {
    let row = format!("{queue}\t");
    let answer = poll_until(
        Duration::from_secs(10),
        Duration::from_millis(200),
        async || {
            let listing = rabbitmqctl(&[
                "list_queues",
                "--quiet",
                "--no-table-headers",
                "name",
                "messages_unacknowledged",
            ])
            .await;
            let unacked = listing
                .lines()
                .find_map(|l| l.strip_prefix(&row))
                .unwrap_or("not listed")
                .trim()
                .to_owned();
            if unacked == "0" {
                Ok(unacked)
            } else {
                Err(unacked)
            }
        },
    )
    .await;
    answer.unwrap_or_else(|last| last)
}

/// The broker-side pid of the connection whose `connection_name` client property is `name`
/// (RabbitMQ 3.10 has no `user_provided_name` column, so the name is found in
/// `client_properties`). Retries briefly: a connection is listed once it is fully open.
pub(crate) async fn connection_pid(name: &str) -> String {
    for _ in 0..20 {
        if let Some(pid) = connection_pids(name).await.into_iter().next() {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("no connection named {name} in rabbitmqctl list_connections");
}

/// The broker-side pids of every connection named `name` now (none if it is not listed yet).
pub(crate) async fn connection_pids(name: &str) -> Vec<String> {
    let listing = rabbitmqctl(&[
        "list_connections",
        "--quiet",
        "--no-table-headers",
        "pid",
        "client_properties",
    ])
    .await;
    let needle = format!("\"{name}\"");
    listing
        .lines()
        .filter(|l| l.contains(&needle))
        .map(|line| {
            let pid = line.split('\t').next().unwrap_or_default().trim();
            assert!(pid.starts_with('<'), "unexpected listing line: {line}");
            pid.to_owned()
        })
        .collect()
}

/// Publishes in confirm mode and returns the broker's answer (the channel must be in confirm
/// mode). Once acked, a routed message is in its queue: a basic.get after this sees it.
pub(crate) async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &str,
) -> Confirmation {
    ch.basic_publish(
        exchange,
        key,
        PublishOptions::default(),
        &BasicProperties::default(),
        body.to_owned(),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm")
}

/// Bodies of every ready message of `queue`, acknowledged.
pub(crate) async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(msg) = ch
        .basic_get(queue, GetOptions::default())
        .await
        .expect("basic.get")
    {
        out.push(String::from_utf8_lossy(&msg.delivery.body).into_owned());
        msg.delivery.ack().expect("ack");
    }
    out
}

/// Gets the message that a closed channel left unacked, once the broker has requeued it.
///
/// RabbitMQ requeues a closed channel's unacked messages when the queue learns the channel
/// is gone, which can come after `channel.close-ok`: a `basic.get` sent at once may find the
/// queue still empty. So this asks again every 10 ms, and fails after 5 s.
pub(crate) async fn get_requeued(ch: &Channel, queue: &str) -> amqp_client::GetMessage {
    let got = poll_until(
        Duration::from_secs(5),
        Duration::from_millis(10),
        async || {
            let got = ch.basic_get(queue, GetOptions::default()).await;
            got.expect("basic.get").ok_or(())
        },
    );
    got.await
        .expect("the broker did not requeue the message within 5 s")
}

/// Asks `probe` every `every` until it answers `Ok`, for at most `limit`, and returns its
/// last answer: the bounded wait behind the helpers that wait for what the broker does in
/// its own time.
pub(crate) async fn poll_until<T, E>(
    limit: Duration,
    every: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let answer = probe().await;
        if answer.is_ok() || tokio::time::Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(every).await;
    }
}

/// Publishes `bodies` to `queue` and waits until the broker confirmed them all (so they are
/// in the queue). Uses its own confirm-mode channel.
pub(crate) async fn fill(conn: &amqp_client::Connection, queue: &str, bodies: &[String]) {
    let ch = conn.open_channel().await.expect("fill");
    ch.confirm_select().await.expect("fill");
    for body in bodies {
        // The outcome is collected by wait_for_confirms below.
        drop(
            ch.basic_publish(
                "",
                queue,
                PublishOptions::default(),
                &BasicProperties::default(),
                body.clone(),
            )
            .await
            .expect("fill"),
        );
    }
    assert!(ch.wait_for_confirms().await.expect("fill"));
    ch.close().await.expect("fill");
}

pub(crate) fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// The next delivery, failing the test on an error or the end of the stream.
pub(crate) async fn next(consumer: &mut Consumer) -> Delivery {
    match tokio::time::timeout(Duration::from_secs(10), consumer.recv()).await {
        Ok(Some(Ok(d))) => d,
        Ok(Some(Err(e))) => panic!("consumer failed: {e}"),
        Ok(None) => panic!("consumer ended"),
        Err(_) => panic!("no delivery within 10 s"),
    }
}

/// A channel of its own with basic.qos `prefetch`, consuming `queue` with manual acks.
pub(crate) async fn consume_with_prefetch(
    conn: &Connection,
    queue: &str,
    prefetch: u16,
) -> (Channel, Consumer) {
    let ch = conn.open_channel().await.expect("consumer channel");
    ch.basic_qos(prefetch, QosOptions::default())
        .await
        .expect("basic.qos");
    let consumer = ch
        .basic_consume(queue, ConsumeOptions::default())
        .await
        .expect("basic.consume");
    (ch, consumer)
}

/// True if nothing arrives on `consumer` within `wait`.
pub(crate) async fn quiet(consumer: &mut Consumer, wait: Duration) -> bool {
    tokio::time::timeout(wait, consumer.recv()).await.is_err()
}

/// The number of messages ready in `queue` (a passive declare).
pub(crate) async fn ready_count(ch: &Channel, queue: &str) -> u32 {
    ch.queue_declare(queue, QueueDeclareOptions::default().with_passive())
        .await
        .expect("ready_count")
        .message_count
}

/// Waits until `queue` holds `expected` ready messages, asking every 20 ms; fails after 5 s
/// with the last count. For messages the broker requeues on its own time, such as a closed
/// channel's or a cancelled consumer's unacked ones.
pub(crate) async fn await_ready(ch: &Channel, queue: &str, expected: u32) {
    let ready = poll_until(
        Duration::from_secs(5),
        Duration::from_millis(20),
        async || {
            let ready = ready_count(ch, queue).await;
            if ready == expected {
                Ok(())
            } else {
                Err(ready)
            }
        },
    );
    if let Err(ready) = ready.await {
        panic!("{queue} holds {ready} ready messages after 5 s, not {expected}");
    }
}
