//! Retry bookkeeping: which attempt a delivery is, where a failed one goes next, and the
//! headers that travel with it.
//!
//! The attempt number travels in [`ATTEMPT_HEADER`]. RabbitMQ independently counts, in the
//! `x-death` header, how often the message expired out of each delay queue; the attempt is
//! cross-checked against that count and the larger one wins, so a producer or a tool that drops
//! the worker's header cannot make a task retry forever.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amqp_client::amqp_codec::{BasicProperties, FieldTable, FieldValue, ShortStr};

use crate::config::WorkerConfig;

/// The attempt number of the next delivery (1 for the first).
pub const ATTEMPT_HEADER: &str = "x-attempt";
/// The last handler error, on retried and parked tasks.
pub const LAST_ERROR_HEADER: &str = "x-last-error";
/// Attempts made, on parked tasks.
pub const ATTEMPTS_HEADER: &str = "x-attempts";
/// When the first attempt failed (Unix seconds, AMQP timestamp).
pub const FIRST_FAILURE_HEADER: &str = "x-first-failure-at";
/// When the last attempt failed (Unix seconds, AMQP timestamp).
pub const LAST_FAILURE_HEADER: &str = "x-last-failure-at";
/// The exchange the task was first published to.
pub const ORIGINAL_EXCHANGE_HEADER: &str = "x-original-exchange";
/// The routing key the task was first published with.
pub const ORIGINAL_ROUTING_KEY_HEADER: &str = "x-original-routing-key";
/// How many times the task was moved back from the parking queue.
pub const REQUEUED_HEADER: &str = "x-requeued-from-parking";
/// Why a task was parked: `attempts-exhausted` or `rejected` (see [`ParkReason`](crate::ParkReason)).
pub const PARK_REASON_HEADER: &str = "x-park-reason";
/// RabbitMQ's dead-letter history.
pub const X_DEATH_HEADER: &str = "x-death";

/// Headers the worker owns; rewritten on every retry and stripped on requeue from parking.
const WORKER_HEADERS: [&str; 8] = [
    ATTEMPT_HEADER,
    PARK_REASON_HEADER,
    LAST_ERROR_HEADER,
    ATTEMPTS_HEADER,
    FIRST_FAILURE_HEADER,
    LAST_FAILURE_HEADER,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
];

/// Where a failed attempt goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Into the delay queue `queue`, to come back after `delay` as attempt `next_attempt`.
    Retry {
        /// The delay.
        delay: Duration,
        /// The delay queue.
        queue: String,
        /// The attempt number of the redelivery.
        next_attempt: u32,
    },
    /// Into the parking queue: no attempts left.
    Park,
}

/// What to do after attempt `attempt` (1-based) failed, without jitter.
pub fn decide(config: &WorkerConfig, attempt: u32) -> Decision {
    decide_jittered(config, attempt, 0.0)
}

/// What to do after attempt `attempt` (1-based) failed; with `retry_jitter_percent` set,
/// `r` in `[0, 1)` picks one of the tier's jitter steps
/// ([`WorkerConfig::jitter_steps`]), each a delay queue of its own.
pub fn decide_jittered(config: &WorkerConfig, attempt: u32, r: f64) -> Decision {
    if attempt >= config.max_attempts || config.retry_delays.is_empty() {
        return Decision::Park;
    }
    let index = (attempt as usize - 1).min(config.retry_delays.len() - 1);
    let steps = config.jitter_steps(config.retry_delays[index]);
    let pick = ((r.clamp(0.0, 1.0) * steps.len() as f64) as usize).min(steps.len() - 1);
    let delay = steps[pick];
    Decision::Retry {
        delay,
        queue: config.delay_queue(delay),
        next_attempt: attempt + 1,
    }
}

/// The attempt number in [`ATTEMPT_HEADER`], if present and positive.
pub fn attempt_header(headers: Option<&FieldTable>) -> Option<u32> {
    let v = headers?.get(ATTEMPT_HEADER)?.as_i64()?;
    u32::try_from(v).ok().filter(|n| *n > 0)
}

/// How many times RabbitMQ recorded the message expiring out of a queue whose name starts
/// with `delay_prefix` (the sum of the matching `x-death` counts).
pub fn x_death_retries(headers: Option<&FieldTable>, delay_prefix: &str) -> u64 {
    let Some(FieldValue::Array(deaths)) = headers.and_then(|h| h.get(X_DEATH_HEADER)) else {
        return 0;
    };
    deaths
        .iter()
        .filter_map(|entry| match entry {
            FieldValue::Table(t) => Some(t),
            _ => None,
        })
        // Compared as bytes: names are not read as UTF-8 for this (callgrind: ~180
        // instructions per task with one entry).
        .filter(|t| {
            let reason = t.get("reason");
            reason.as_ref().and_then(FieldValue::as_bytes) == Some(b"expired".as_slice())
                && t.get("queue")
                    .as_ref()
                    .and_then(FieldValue::as_bytes)
                    .is_some_and(|q| q.starts_with(delay_prefix.as_bytes()))
        })
        .filter_map(|t| t.get("count").and_then(|c| c.as_i64()))
        .map(|c| u64::try_from(c).unwrap_or(0))
        .sum()
}

/// The attempt a delivery is: the larger of [`ATTEMPT_HEADER`] and one plus the `x-death`
/// retry count. Returns the attempt and whether the two sources disagreed.
pub fn attempt_of(headers: Option<&FieldTable>, delay_prefix: &str) -> (u32, bool) {
    let header = attempt_header(headers);
    let retries = x_death_retries(headers, delay_prefix);
    let from_death = u32::try_from(retries)
        .unwrap_or(u32::MAX - 1)
        .saturating_add(1);
    match header {
        Some(h) => (h.max(from_death), retries > 0 && h != from_death),
        None => (from_death, false),
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the worker knows about a task's failures, to write into its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRecord {
    /// The last error.
    pub last_error: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// First failure, Unix seconds.
    pub first_failure_at: u64,
    /// This failure, Unix seconds.
    pub last_failure_at: u64,
    /// The exchange of the first publish.
    pub original_exchange: String,
    /// The routing key of the first publish.
    pub original_routing_key: String,
}

impl FailureRecord {
    /// The record for a failure of attempt `attempt`, carrying over what the headers of the
    /// failed delivery already said (first failure time, original route).
    pub fn new(
        headers: Option<&FieldTable>,
        attempt: u32,
        error: &str,
        delivery_exchange: &str,
        delivery_routing_key: &str,
    ) -> Self {
        let now = unix_now();
        let text = |name: &str| {
            headers
                .and_then(|h| h.get(name))
                .and_then(|v| v.as_str().map(str::to_owned))
        };
        let first = headers
            .and_then(|h| h.get(FIRST_FAILURE_HEADER))
            .and_then(|v| match v {
                FieldValue::Timestamp(t) => Some(t),
                other => other.as_i64().and_then(|i| u64::try_from(i).ok()),
            })
            .unwrap_or(now);
        Self {
            // Headers are long strings, but keep them readable in the management UI: room for
            // a message and the 1 KiB tail of a command's stderr.
            last_error: truncate(error, LAST_ERROR_MAX),
            attempts: attempt,
            first_failure_at: first,
            last_failure_at: now,
            original_exchange: text(ORIGINAL_EXCHANGE_HEADER)
                .unwrap_or_else(|| delivery_exchange.to_owned()),
            original_routing_key: text(ORIGINAL_ROUTING_KEY_HEADER)
                .unwrap_or_else(|| delivery_routing_key.to_owned()),
        }
    }
}

/// The most of a handler's error kept in [`LAST_ERROR_HEADER`], in bytes.
pub const LAST_ERROR_MAX: usize = 2048;

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The original headers without the worker's own (and without `x-death` if `strip_death`).
fn carried_headers(
    original: Option<&FieldTable>,
    strip_death: bool,
) -> Vec<(ShortStr, FieldValue)> {
    original
        .map(|h| {
            h.iter()
                .filter(|(k, _)| {
                    let k = k.as_str().unwrap_or_default();
                    !(WORKER_HEADERS.contains(&k) || (strip_death && k == X_DEATH_HEADER))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn with_headers(
    properties: &BasicProperties,
    headers: Vec<(ShortStr, FieldValue)>,
) -> BasicProperties {
    let mut b = properties.to_builder();
    b.headers = Some(headers.into_iter().collect());
    // Per-message TTLs belong to the first publish; a retry copy must not expire on the way.
    b.expiration = None;
    if b.delivery_mode.is_none() {
        b.delivery_mode = Some(BasicProperties::PERSISTENT);
    }
    b.build()
        .expect("valid properties with a new headers table stay valid")
}

fn failure_entries(record: &FailureRecord) -> Vec<(ShortStr, FieldValue)> {
    vec![
        (
            ShortStr::from_static(LAST_ERROR_HEADER),
            record.last_error.as_str().into(),
        ),
        (
            ShortStr::from_static(FIRST_FAILURE_HEADER),
            FieldValue::Timestamp(record.first_failure_at),
        ),
        (
            ShortStr::from_static(LAST_FAILURE_HEADER),
            FieldValue::Timestamp(record.last_failure_at),
        ),
        (
            ShortStr::from_static(ORIGINAL_EXCHANGE_HEADER),
            record.original_exchange.as_str().into(),
        ),
        (
            ShortStr::from_static(ORIGINAL_ROUTING_KEY_HEADER),
            record.original_routing_key.as_str().into(),
        ),
    ]
}

/// Properties of the copy sent to a delay queue: the original ones, the attempt it will be,
/// and the failure record. RabbitMQ's `x-death` is kept, so the broker keeps counting.
pub fn retry_properties(
    original: &BasicProperties,
    record: &FailureRecord,
    next_attempt: u32,
) -> BasicProperties {
    let mut headers = carried_headers(original.headers().as_ref(), false);
    headers.push((
        ShortStr::from_static(ATTEMPT_HEADER),
        FieldValue::I32(to_i32(next_attempt)),
    ));
    headers.extend(failure_entries(record));
    with_headers(original, headers)
}

/// Properties of the copy parked: the failure record, the number of attempts made and why
/// it was parked.
pub fn parked_properties(
    original: &BasicProperties,
    record: &FailureRecord,
    reason: crate::ParkReason,
) -> BasicProperties {
    let mut headers = carried_headers(original.headers().as_ref(), false);
    headers.push((
        ShortStr::from_static(ATTEMPTS_HEADER),
        FieldValue::I32(to_i32(record.attempts)),
    ));
    headers.push((
        ShortStr::from_static(PARK_REASON_HEADER),
        reason.as_str().into(),
    ));
    headers.extend(failure_entries(record));
    with_headers(original, headers)
}

/// Properties of a parked task moved back to the work queue: a fresh first attempt (worker
/// headers and `x-death` removed) with [`REQUEUED_HEADER`] counting the moves.
pub fn requeued_properties(parked: &BasicProperties) -> BasicProperties {
    let original = parked.headers();
    let moves = original
        .as_ref()
        .and_then(|h| h.get(REQUEUED_HEADER))
        .and_then(|v| v.as_i64())
        .unwrap_or(0);
    let mut headers: Vec<_> = carried_headers(original.as_ref(), true)
        .into_iter()
        .filter(|(k, _)| k.as_str() != Some(REQUEUED_HEADER))
        .collect();
    headers.push((
        ShortStr::from_static(REQUEUED_HEADER),
        FieldValue::I64(moves + 1),
    ));
    with_headers(parked, headers)
}

fn to_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqp_client::amqp_codec::FieldArray;

    fn death(queue: &str, reason: &str, count: i64) -> FieldValue {
        let t: FieldTable = FieldTable::builder()
            .insert("queue", queue)
            .insert("reason", reason)
            .insert("count", count)
            .build()
            .unwrap();
        FieldValue::Table(t)
    }

    #[test]
    fn retry_and_parked_copies_keep_the_trace_context_headers() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tracestate = "rojo=00f067aa0ba902b7";
        let original = BasicProperties::builder()
            .with_header("traceparent", traceparent)
            .with_header("tracestate", tracestate)
            .build()
            .unwrap();
        let record = FailureRecord::new(original.headers().as_ref(), 1, "boom", "", "q");
        let text = |p: &BasicProperties, k: &str| {
            p.headers()
                .and_then(|h| h.get(k))
                .and_then(|v| v.as_str().map(str::to_owned))
        };
        let retry = retry_properties(&original, &record, 2);
        let parked = parked_properties(&original, &record, crate::ParkReason::AttemptsExhausted);
        for copy in [&retry, &parked] {
            assert_eq!(text(copy, "traceparent").as_deref(), Some(traceparent));
            assert_eq!(text(copy, "tracestate").as_deref(), Some(tracestate));
        }
    }

    #[test]
    fn tiers_repeat_the_last_delay_then_park() {
        let mut c = WorkerConfig::new("q");
        c.retry_delays = vec![Duration::from_secs(1), Duration::from_secs(10)];
        c.max_attempts = 4;
        let delays: Vec<_> = (1..=4)
            .map(|a| match decide(&c, a) {
                Decision::Retry { delay, .. } => Some(delay.as_secs()),
                Decision::Park => None,
            })
            .collect();
        assert_eq!(delays, vec![Some(1), Some(10), Some(10), None]);
    }

    #[test]
    fn jitter_picks_a_step_queue_of_the_tier() {
        let mut c = WorkerConfig::new("q");
        c.retry_delays = vec![Duration::from_secs(10)];
        c.retry_jitter_percent = 20;
        let picked: Vec<String> = [0.0, 0.3, 0.5, 0.7, 0.99]
            .into_iter()
            .map(|r| match decide_jittered(&c, 1, r) {
                Decision::Retry { queue, .. } => queue,
                Decision::Park => panic!("parked"),
            })
            .collect();
        assert_eq!(
            picked,
            [
                "q.retry.10s",
                "q.retry.9500ms",
                "q.retry.9s",
                "q.retry.8500ms",
                "q.retry.8s"
            ]
        );
        c.retry_jitter_percent = 0;
        assert_eq!(decide_jittered(&c, 1, 0.99), decide(&c, 1));
    }

    #[test]
    fn attempt_is_cross_checked_with_x_death() {
        let deaths: FieldArray = [
            death("q.retry.1s", "expired", 2),
            death("other", "expired", 5),
        ]
        .into_iter()
        .collect();
        let h = FieldTable::builder()
            .insert(ATTEMPT_HEADER, 2i32)
            .insert(X_DEATH_HEADER, deaths)
            .build()
            .unwrap();
        assert_eq!(x_death_retries(Some(&h), "q.retry."), 2);
        assert_eq!(attempt_of(Some(&h), "q.retry."), (3, true));
        let plain = FieldTable::builder()
            .insert(ATTEMPT_HEADER, 3i32)
            .build()
            .unwrap();
        assert_eq!(attempt_of(Some(&plain), "q.retry."), (3, false));
        assert_eq!(attempt_of(None, "q.retry."), (1, false));
    }

    #[test]
    fn requeue_resets_the_attempts() {
        let rec = FailureRecord::new(None, 3, "boom", "ex", "rk");
        let parked = parked_properties(
            &BasicProperties::default(),
            &rec,
            crate::ParkReason::Rejected,
        );
        let h = parked.headers().unwrap();
        assert_eq!(h.get(ATTEMPTS_HEADER), Some(FieldValue::I32(3)));
        assert_eq!(
            h.get(PARK_REASON_HEADER).unwrap().as_str(),
            Some("rejected")
        );
        assert_eq!(
            h.get(ORIGINAL_EXCHANGE_HEADER).unwrap().as_str(),
            Some("ex")
        );
        let back = requeued_properties(&parked);
        let h = back.headers().unwrap();
        assert_eq!(h.get(ATTEMPTS_HEADER), None);
        assert_eq!(h.get(PARK_REASON_HEADER), None);
        assert_eq!(h.get(REQUEUED_HEADER), Some(FieldValue::I64(1)));
        assert!(back.is_persistent());
    }
}
