//! The fault tests' harness: steady publishing with confirms (what a failed confirm or a
//! failed publish loses is published again) and consuming with manual acks, both while a test
//! injects a fault; a record of the connection's recovery events with their times; and a
//! report that counts lost (confirmed but never consumed) and duplicated messages and ends
//! with one line: `<scenario>: ... PASS|FAIL`.

#![allow(dead_code, clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqp_client::amqp_codec::BasicProperties;
use amqp_client::{
    Channel, Connection, ConnectionConfig, Consumer, Error, PublishOptions, RecoveryEvent,
    RecoveryPolicy,
};
use tokio::task::JoinHandle;

/// Persistent messages.
pub(crate) fn persistent() -> BasicProperties {
    BasicProperties::builder()
        .with_delivery_mode(2)
        .build()
        .unwrap()
}

/// Recovery that retries quickly (50 ms doubling to 500 ms) for up to `give_up`.
pub(crate) fn quick(give_up: Duration) -> RecoveryPolicy {
    RecoveryPolicy {
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
        give_up_after: Some(give_up),
        wait_while_recovering: give_up,
        ..RecoveryPolicy::default()
    }
}

/// A recovering configuration for `127.0.0.1:port` (then `fallbacks`), with `heartbeat`.
pub(crate) fn config_for(
    port: u16,
    fallbacks: &[u16],
    heartbeat: u16,
    policy: RecoveryPolicy,
) -> ConnectionConfig {
    let mut cfg = ConnectionConfig::default().with_recovery(policy);
    cfg.host = "127.0.0.1".into();
    cfg.port = port;
    cfg.fallback_addresses = fallbacks
        .iter()
        .map(|&p| ("127.0.0.1".to_owned(), p))
        .collect();
    cfg.heartbeat = heartbeat;
    cfg
}

/// Recovery events of one connection with the instant each came.
#[derive(Clone, Default)]
pub(crate) struct EventLog(Arc<Mutex<Vec<(Instant, RecoveryEvent)>>>);

impl EventLog {
    /// Records `conn`'s events from now on (until the connection's event stream ends).
    pub(crate) fn record(conn: &Connection) -> Self {
        let log = Self::default();
        let mut rx = conn.recovery_events();
        let inner = log.0.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => inner.lock().unwrap().push((Instant::now(), ev)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
        });
        log
    }

    /// Every (lost, recovered) pair after `since`: when the loss was seen (relative to
    /// `since`), its error, and the downtime and address of the recovery that followed.
    pub(crate) fn outages(&self, since: Instant) -> Vec<Outage> {
        let events = self.0.lock().unwrap();
        let mut out = Vec::new();
        let mut open: Option<(Instant, String)> = None;
        for (at, ev) in events.iter().filter(|(at, _)| *at >= since) {
            match ev {
                RecoveryEvent::Lost(err) => open = Some((*at, err.to_string())),
                RecoveryEvent::Recovered {
                    downtime,
                    address,
                    attempts,
                } => {
                    if let Some((lost_at, error)) = open.take() {
                        out.push(Outage {
                            seen_after: lost_at.duration_since(since),
                            error,
                            downtime: Some(*downtime),
                            attempts: *attempts,
                            address: address.clone(),
                        });
                    }
                }
                RecoveryEvent::Failed(err) => {
                    out.push(Outage {
                        seen_after: open
                            .as_ref()
                            .map_or(Duration::ZERO, |(t, _)| t.duration_since(since)),
                        error: format!("recovery failed: {err}"),
                        downtime: None,
                        attempts: 0,
                        address: String::new(),
                    });
                    open = None;
                }
                _ => {}
            }
        }
        if let Some((lost_at, error)) = open {
            out.push(Outage {
                seen_after: lost_at.duration_since(since),
                error,
                downtime: None,
                attempts: 0,
                address: String::new(),
            });
        }
        out
    }

    /// Waits until a `Lost` event after `since` is recorded; how long after `since` it came.
    pub(crate) async fn lost_after(&self, since: Instant, limit: Duration) -> Option<Duration> {
        self.wait_for(since, limit, |ev| matches!(ev, RecoveryEvent::Lost(_)))
            .await
    }

    /// Waits until a `Recovered` event after `since`; how long after `since` it came.
    pub(crate) async fn recovered_after(
        &self,
        since: Instant,
        limit: Duration,
    ) -> Option<Duration> {
        self.wait_for(since, limit, |ev| {
            matches!(ev, RecoveryEvent::Recovered { .. })
        })
        .await
    }

    async fn wait_for(
        &self,
        since: Instant,
        limit: Duration,
        what: impl Fn(&RecoveryEvent) -> bool,
    ) -> Option<Duration> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((at, _)) = self
                .0
                .lock()
                .unwrap()
                .iter()
                .find(|(at, ev)| *at >= since && what(ev))
            {
                return Some(at.duration_since(since));
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One loss of the connection and its recovery.
#[derive(Debug, Clone)]
pub(crate) struct Outage {
    /// When the client saw the loss, after the fault was injected.
    pub(crate) seen_after: Duration,
    /// The error it saw.
    pub(crate) error: String,
    /// Downtime until recovered (`None`: not recovered).
    pub(crate) downtime: Option<Duration>,
    /// Attempts recovery took.
    pub(crate) attempts: u32,
    /// Where it recovered to.
    pub(crate) address: String,
}

/// What a publisher did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Published {
    /// basic.publish calls that went out.
    pub(crate) sent: usize,
    /// Acked confirms: one per id.
    pub(crate) confirmed: usize,
    /// Confirms that failed (connection lost while pending) or were nacked: published again.
    pub(crate) failed_confirms: usize,
    /// basic.publish calls that failed (recovering too long, closed): published again.
    pub(crate) failed_publishes: usize,
}

/// Publishes `ids` (body = the id) to `queue` in windows of `window`, pausing `pause` between
/// windows, until each one is confirmed; ids whose publish or confirm failed are published
/// again. Gives up after `limit` (what is unconfirmed by then counts as not confirmed).
pub(crate) async fn publish_ids(
    ch: Channel,
    queue: String,
    ids: Vec<u64>,
    window: usize,
    pause: Duration,
    limit: Duration,
) -> Published {
    let deadline = Instant::now() + limit;
    let mut p = Published::default();
    let mut todo = ids;
    let props = persistent();
    while !todo.is_empty() && Instant::now() < deadline {
        let mut retry = Vec::new();
        for chunk in todo.chunks(window.max(1)) {
            if Instant::now() >= deadline {
                retry.extend_from_slice(chunk);
                continue;
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            let mut pending = Vec::with_capacity(chunk.len());
            for &id in chunk {
                match ch
                    .basic_publish(
                        "",
                        queue.as_str(),
                        PublishOptions::default(),
                        &props,
                        id.to_string(),
                    )
                    .await
                {
                    Ok(confirm) => {
                        p.sent += 1;
                        pending.push((id, confirm));
                    }
                    Err(_) => {
                        p.failed_publishes += 1;
                        retry.push(id);
                    }
                }
            }
            for (id, confirm) in pending {
                match confirm.await {
                    Ok(c) if c.is_acked() => p.confirmed += 1,
                    _ => {
                        p.failed_confirms += 1;
                        retry.push(id);
                    }
                }
            }
        }
        todo = retry;
    }
    p
}

/// How long a consumer goes on after it saw every id.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// What a consumer saw.
#[derive(Debug, Default, Clone)]
pub(crate) struct Consumed {
    /// Times each id was delivered.
    pub(crate) seen: BTreeMap<u64, u32>,
    /// Deliveries in all.
    pub(crate) deliveries: usize,
    /// Acks refused as stale (the delivery came from a lost connection; it comes again).
    pub(crate) stale_acks: usize,
    /// The longest wait between two deliveries: how long consumption stopped.
    pub(crate) max_gap: Duration,
    /// Errors the consumer stream yielded (it goes on after them).
    pub(crate) errors: Vec<String>,
}

/// Consumes (manual acks) until every id in `0..n` was seen or `limit` passes, then goes on
/// for [`LINGER`] more, so that late duplicates (redeliveries, copies published again) are
/// counted too.
pub(crate) async fn consume_ids(mut consumer: Consumer, n: u64, limit: Duration) -> Consumed {
    let mut deadline = tokio::time::Instant::now() + limit;
    let mut c = Consumed::default();
    let mut last: Option<Instant> = None;
    let mut lingering = false;
    loop {
        if !lingering && c.seen.len() as u64 >= n {
            lingering = true;
            deadline = deadline.min(tokio::time::Instant::now() + LINGER);
        }
        let d = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Some(Ok(d))) => d,
            Ok(Some(Err(e))) => {
                c.errors.push(format!("{e:?}"));
                continue;
            }
            Ok(None) | Err(_) => break,
        };
        let now = Instant::now();
        if let Some(prev) = last {
            c.max_gap = c.max_gap.max(now - prev);
        }
        last = Some(now);
        c.deliveries += 1;
        // The id is the body, or its first word.
        let id = std::str::from_utf8(&d.body)
            .ok()
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(id) = id {
            *c.seen.entry(id).or_default() += 1;
        }
        if let Err(err) = d.ack() {
            assert!(matches!(err, Error::StaleDelivery { .. }), "{err:?}");
            c.stale_acks += 1;
        }
    }
    c
}

/// Lost ids (in `0..n`, never consumed) and duplicate deliveries.
pub(crate) fn lost_and_duplicates(seen: &BTreeMap<u64, u32>, n: u64) -> (usize, u64) {
    let lost = (0..n).filter(|id| !seen.contains_key(id)).count();
    let dups = seen.values().map(|&k| u64::from(k.saturating_sub(1))).sum();
    (lost, dups)
}

/// Formats durations for the one-line results: `1.23s`, `45ms`.
pub(crate) fn fmt_d(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The outages as `detected X, down Y` items.
pub(crate) fn fmt_outages(outages: &[Outage]) -> String {
    if outages.is_empty() {
        return "no connection loss".to_owned();
    }
    let items: Vec<String> = outages
        .iter()
        .map(|o| {
            let short = o.error.chars().take(40).collect::<String>();
            match o.downtime {
                Some(d) => format!(
                    "seen {} ({short}), recovered in {} after {} attempt(s)",
                    fmt_d(o.seen_after),
                    fmt_d(d),
                    o.attempts
                ),
                None => format!("seen {} ({short}), NOT recovered", fmt_d(o.seen_after)),
            }
        })
        .collect();
    format!("{} loss(es): {}", outages.len(), items.join("; "))
}

/// Steady traffic on one connection: a confirm-mode publisher channel and a consumer.
pub(crate) struct Traffic {
    pub(crate) publishing: JoinHandle<Published>,
    pub(crate) consuming: JoinHandle<Consumed>,
    pub(crate) started: Instant,
    pub(crate) n: u64,
}

impl Traffic {
    /// Starts publishing `n` ids to `queue` on `publisher` (in confirm mode) in windows of
    /// `window` every `pause`, and consuming them on `consumer`, both bounded by `limit`.
    pub(crate) fn start(
        publisher: Channel,
        consumer: Consumer,
        queue: &str,
        n: u64,
        window: usize,
        pause: Duration,
        limit: Duration,
    ) -> Self {
        let publishing = tokio::spawn(publish_ids(
            publisher,
            queue.to_owned(),
            (0..n).collect(),
            window,
            pause,
            limit,
        ));
        let consuming = tokio::spawn(consume_ids(consumer, n, limit));
        Self {
            publishing,
            consuming,
            started: Instant::now(),
            n,
        }
    }

    /// Waits for both; the publisher's and the consumer's counts.
    pub(crate) async fn finish(self) -> (Published, Consumed, Duration) {
        let p = self.publishing.await.unwrap();
        let c = self.consuming.await.unwrap();
        (p, c, self.started.elapsed())
    }
}

/// The one-line result of a scenario: counts, then PASS or FAIL (lost 0 and every confirm in).
pub(crate) fn result_line(
    scenario: &str,
    n: u64,
    p: &Published,
    c: &Consumed,
    took: Duration,
    extra: &str,
) -> (String, bool) {
    let (lost, dups) = lost_and_duplicates(&c.seen, n);
    let pass = lost == 0 && p.confirmed as u64 == n;
    let line = format!(
        "{scenario}: messages {n}, confirmed {}, failed confirms {} + failed publishes {} \
         (republished), consumed {} ({} distinct), lost {lost}, duplicates {dups}, stale acks {}, \
         {extra}, took {}: {}",
        p.confirmed,
        p.failed_confirms,
        p.failed_publishes,
        c.deliveries,
        c.seen.len(),
        c.stale_acks,
        fmt_d(took),
        if pass { "PASS" } else { "FAIL" }
    );
    (line, pass)
}

/// Process figures from /proc/self: resident memory (KiB) and open file descriptors.
pub(crate) fn rss_kib_and_fds() -> (u64, usize) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    (rss, fds)
}
