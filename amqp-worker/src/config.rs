//! [`WorkerConfig`]: what the worker consumes, what it declares, and how it retries.
//!
//! Loaded from TOML (`WorkerConfig::from_toml`, feature `toml`), from any format serde reads,
//! or built in code; every field has a default except the queue name.
//! [`WorkerConfig::validate`] turns every mistake into one
//! [`ConfigError`] sentence before anything touches the broker.
//!
//! ```
//! # #[cfg(feature = "toml")] {
//! use amqp_worker::WorkerConfig;
//! let config = WorkerConfig::from_toml(r#"
//!     queue = "thumbnails"
//!     retry_delays = ["1s", "10s", "60s"]
//!     max_attempts = 4
//!
//!     [[exchanges]]
//!     name = "uploads"
//!     type = "topic"
//!
//!     [[bindings]]
//!     source = "uploads"
//!     routing_key = "image.*"
//! "#).expect("valid configuration");
//! assert_eq!(config.parking_queue(), "thumbnails.parked");
//! assert_eq!(config.delay_queue(std::time::Duration::from_secs(10)), "thumbnails.retry.10s");
//! # }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod spec;

pub use spec::{ArgValue, Arguments, BindingSpec, DestinationType, ExchangeSpec, arguments_table};

/// The broker used when no URL is configured: the local RabbitMQ, user guest, vhost `/`.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A configuration mistake, found before connecting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No work queue was named.
    #[error("no queue configured: set --queue, AMQP_WORKER_QUEUE or `queue` in the config file")]
    NoQueue,
    /// An exchange type RabbitMQ does not ship and that is not a plugin's `x-` type.
    #[error(
        "unknown exchange type '{kind}' for exchange '{exchange}': expected direct, fanout, topic, headers or a plugin type starting with x-"
    )]
    UnknownExchangeType {
        /// The exchange.
        exchange: String,
        /// The type given.
        kind: String,
    },
    /// A duration that does not parse.
    #[error(
        "invalid duration '{0}': expected a whole number followed by ms, s, m or h (e.g. 500ms, 10s)"
    )]
    BadDuration(String),
    /// A numeric setting out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// The TOML file does not parse or has unknown keys.
    #[error("invalid configuration file {path}: {message}")]
    File {
        /// The file (or `<inline>`).
        path: String,
        /// What is wrong, with its line.
        message: String,
    },
}

/// Classic (the default) or quorum queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// A classic queue.
    #[default]
    Classic,
    /// A replicated quorum queue (`x-queue-type: quorum`).
    Quorum,
}

impl std::str::FromStr for QueueType {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "classic" => Ok(Self::Classic),
            "quorum" => Ok(Self::Quorum),
            other => Err(ConfigError::Invalid(format!(
                "unknown queue type '{other}': expected classic or quorum"
            ))),
        }
    }
}

/// With jitter, how many shorter delay queues each retry tier gets besides its own.
pub const JITTER_STEPS: u32 = 4;

/// Everything the worker needs. See the module docs for an example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Broker URI (`amqp://user:pass@host:port/vhost`).
    pub url: String,
    /// Connection name shown by the broker (`connection_name` client property).
    pub connection_name: Option<String>,
    /// The work queue.
    pub queue: String,
    /// Classic (default) or quorum for the work and parking queues.
    pub queue_type: QueueType,
    /// Quorum only: deliveries after which the broker itself parks a message that keeps
    /// getting requeued (`x-delivery-limit`), e.g. one that crashes every worker.
    pub delivery_limit: Option<u32>,
    /// Exchanges to declare.
    pub exchanges: Vec<ExchangeSpec>,
    /// Bindings to declare, after the exchanges and queues.
    pub bindings: Vec<BindingSpec>,
    /// Handlers running at once.
    pub concurrency: usize,
    /// Unacknowledged deliveries the broker sends ahead (basic.qos); at least `concurrency`
    /// is sensible.
    pub prefetch: u16,
    /// Delay before each retry: the n-th retry waits `retry_delays[n-1]`, the last one
    /// repeating. One delay queue per distinct delay.
    #[serde(with = "duration_list")]
    pub retry_delays: Vec<Duration>,
    /// Attempts (first delivery included) before a task is parked.
    pub max_attempts: u32,
    /// Up to this percentage (0 to 90) of each retry delay is taken off at random, so that
    /// tasks that failed together do not all come back at once; 0 (the default) for none.
    /// Each tier gets [`JITTER_STEPS`] more delay queues, evenly spaced down to the shortest
    /// delay ([`jitter_steps`](Self::jitter_steps)), and a retry picks one at random: every
    /// delay queue holds one TTL, so each copy waits exactly its queue's delay. (A
    /// per-message `expiration` in one queue would not spread them: RabbitMQ expires
    /// messages only at the head, so a longer one ahead holds back the shorter ones.)
    pub retry_jitter_percent: u8,
    /// A handler running longer fails its attempt.
    #[serde(with = "duration_str")]
    pub handler_timeout: Duration,
    /// Without a working connection for this long, [`Worker::run`](crate::Worker::run) fails.
    #[serde(with = "duration_str")]
    pub give_up_after: Duration,
    /// On shutdown, how long in-flight handlers may take to finish.
    #[serde(with = "duration_str")]
    pub shutdown_timeout: Duration,
    /// First reconnect delay (doubles up to `reconnect_max_delay`, with jitter).
    #[serde(with = "duration_str")]
    pub reconnect_min_delay: Duration,
    /// Largest reconnect delay.
    #[serde(with = "duration_str")]
    pub reconnect_max_delay: Duration,
    /// How often the parking queue's depth (and the unroutable delayed messages') is read
    /// from the broker for the metrics.
    #[serde(with = "duration_str")]
    pub queue_depth_interval: Duration,
    /// For the `amqp-worker` binary: serve `/metrics` and `/healthz` on this address. The
    /// library itself serves nothing; bind [`crate::http::MetricsServer`] to it.
    pub metrics_addr: Option<SocketAddr>,
    /// For the `amqp-worker` binary: a shell command run when a task is parked. The library
    /// itself ignores it; implement [`crate::Handler::on_dead_letter`].
    pub on_dead_letter: Option<String>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.to_owned(),
            connection_name: None,
            queue: String::new(),
            queue_type: QueueType::Classic,
            delivery_limit: None,
            exchanges: Vec::new(),
            bindings: Vec::new(),
            concurrency: 8,
            prefetch: 16,
            retry_delays: vec![
                Duration::from_secs(1),
                Duration::from_secs(10),
                Duration::from_secs(60),
            ],
            max_attempts: 4,
            retry_jitter_percent: 0,
            handler_timeout: Duration::from_secs(60),
            give_up_after: Duration::from_secs(300),
            shutdown_timeout: Duration::from_secs(30),
            reconnect_min_delay: Duration::from_millis(100),
            reconnect_max_delay: Duration::from_secs(10),
            queue_depth_interval: Duration::from_secs(15),
            metrics_addr: None,
            on_dead_letter: None,
        }
    }
}

impl WorkerConfig {
    /// The defaults with `queue` as the work queue.
    pub fn new(queue: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            ..Self::default()
        }
    }

    /// Parses TOML (unknown keys are errors) and validates it. Feature `toml` (on by default,
    /// through `cli`).
    #[cfg(feature = "toml")]
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_named(text, "<inline>")
    }

    /// Like [`from_toml`](Self::from_toml), naming `path` in errors.
    #[cfg(feature = "toml")]
    pub fn from_toml_named(text: &str, path: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text.get(..s.start).unwrap_or(text).matches('\n').count() + 1);
            let message = e.message().trim().replace('\n', " ");
            ConfigError::File {
                path: path.to_owned(),
                message: match line {
                    Some(l) => format!("line {l}: {message}"),
                    None => message,
                },
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting; the first mistake is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.queue.is_empty() {
            return Err(ConfigError::NoQueue);
        }
        if self.queue.len() > 200 {
            return Err(ConfigError::Invalid(
                "queue names longer than 200 bytes leave no room for the retry queues' suffixes"
                    .into(),
            ));
        }
        for x in &self.exchanges {
            x.exchange_kind()?;
            spec::check_name("exchange", &x.name)?;
        }
        for b in &self.bindings {
            b.validate()?;
        }
        if self.concurrency == 0 {
            return Err(ConfigError::Invalid(
                "concurrency must be at least 1".into(),
            ));
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::Invalid(
                "max attempts must be at least 1".into(),
            ));
        }
        if self.max_attempts > 1 && self.retry_delays.is_empty() {
            return Err(ConfigError::Invalid(
                "retries need at least one retry delay".into(),
            ));
        }
        for d in &self.retry_delays {
            if d.is_zero() || !d.subsec_nanos().is_multiple_of(1_000_000) {
                return Err(ConfigError::Invalid(format!(
                    "retry delay {d:?} must be a positive whole number of milliseconds"
                )));
            }
        }
        if self.retry_jitter_percent > 90 {
            return Err(ConfigError::Invalid(
                "retry jitter must be 0 to 90 percent".into(),
            ));
        }
        if self.delivery_limit.is_some() && self.queue_type != QueueType::Quorum {
            return Err(ConfigError::Invalid(
                "delivery limit needs queue type quorum".into(),
            ));
        }
        if self.queue_depth_interval < Duration::from_millis(100) {
            return Err(ConfigError::Invalid(
                "queue depth interval must be at least 100ms".into(),
            ));
        }
        if self.handler_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "handler timeout must be positive".into(),
            ));
        }
        Ok(())
    }

    /// The parking (dead-letter) queue: `<queue>.parked`.
    pub fn parking_queue(&self) -> String {
        format!("{}.parked", self.queue)
    }

    /// The delay queue for `delay`: `<queue>.retry.<delay>`, e.g. `tasks.retry.10s`.
    pub fn delay_queue(&self, delay: Duration) -> String {
        format!("{}.retry.{}", self.queue, format_duration(delay))
    }

    /// The prefix shared by this worker's delay queues (for reading `x-death`).
    pub fn delay_queue_prefix(&self) -> String {
        format!("{}.retry.", self.queue)
    }

    /// Every distinct delay that has a delay queue, in order: each tier's
    /// [`jitter_steps`](Self::jitter_steps).
    pub fn distinct_delays(&self) -> Vec<Duration> {
        let mut out: Vec<Duration> = Vec::new();
        for d in self.retry_delays.iter().flat_map(|d| self.jitter_steps(*d)) {
            if !out.contains(&d) {
                out.push(d);
            }
        }
        out
    }

    /// The delays a retry of tier `delay` may wait: `delay` itself and, with
    /// `retry_jitter_percent` p, [`JITTER_STEPS`] more evenly spaced down to `delay` less p %
    /// (whole milliseconds, at least 1 ms; equal steps merge).
    pub fn jitter_steps(&self, delay: Duration) -> Vec<Duration> {
        let mut out = vec![delay];
        if self.retry_jitter_percent == 0 {
            return out;
        }
        let ms = delay.as_millis() as f64;
        let off = ms * f64::from(self.retry_jitter_percent.min(90)) / 100.0;
        for k in 1..=JITTER_STEPS {
            let step = ms - off * f64::from(k) / f64::from(JITTER_STEPS);
            let d = Duration::from_millis((step.round() as u64).max(1));
            if !out.contains(&d) {
                out.push(d);
            }
        }
        out
    }
}

/// Parses `500ms`, `10s`, `5m` or `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || ConfigError::BadDuration(s.to_owned());
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }
    .ok_or_else(bad)?;
    Ok(Duration::from_millis(ms))
}

/// Formats a duration the way [`parse_duration`] reads it, in the largest exact unit.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0ms".into()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Serde for one duration as a string such as `"30s"`.
mod duration_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// Serde for a list of durations as strings.
mod duration_list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|d| super::format_duration(*d)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| super::parse_duration(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
    }

    #[test]
    #[cfg(feature = "toml")]
    fn toml_errors_are_one_line_with_the_line_number() {
        let err = WorkerConfig::from_toml("queue = \"q\"\nbogus = 1\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("line 2"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn unknown_exchange_type_is_named() {
        let mut c = WorkerConfig::new("q");
        c.exchanges.push(ExchangeSpec::new("x", "fanoutt"));
        assert_eq!(
            c.validate(),
            Err(ConfigError::UnknownExchangeType {
                exchange: "x".into(),
                kind: "fanoutt".into()
            })
        );
    }

    #[test]
    fn bad_bindings_are_found_before_the_broker() {
        let mut c = WorkerConfig::new("q");
        c.bindings.push(BindingSpec::to_work_queue("", "k"));
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("default exchange")
        );
        let mut c = WorkerConfig::new("q");
        let mut b = BindingSpec::to_work_queue("x", "k");
        b.destination_type = DestinationType::Exchange;
        c.bindings.push(b);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("needs a destination")
        );
        let mut c = WorkerConfig::new("q");
        let mut b = BindingSpec::to_work_queue("x", "");
        b.arguments
            .insert("x-match".into(), ArgValue::Str("most".into()));
        c.bindings.push(b);
        assert!(c.validate().unwrap_err().to_string().contains("x-match"));
    }

    #[test]
    fn names_derive_from_the_queue() {
        let c = WorkerConfig::new("jobs");
        assert_eq!(
            c.delay_queue(Duration::from_millis(250)),
            "jobs.retry.250ms"
        );
        assert_eq!(c.distinct_delays().len(), 3);
    }
}
