//! What the tasks of a run look like: the cheapest input alone would flatter the worker,
//! which reads each task's headers (its attempt, from the worker's header and RabbitMQ's
//! `x-death`) before the handler runs.

use amqp_client::amqp_codec::{BasicProperties, FieldArray, FieldTable, FieldValue};
use amqp_worker::retry::{self, FailureRecord};
use amqp_worker::{WorkerConfig, task_properties};
use bytes::Bytes;
use clap::ValueEnum;

use crate::measure::BoxError;

/// The shape of every task of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Shape {
    /// A 7-byte body with what `task_properties` gives: persistent, a message id, a
    /// timestamp; no headers.
    Minimal,
    /// A task on its second attempt, as the worker's own retry brings it back: a 1 KiB JSON
    /// body, a content type and correlation id, two application headers (a tenant and a
    /// `traceparent`), the worker's retry headers (attempt, last error, first and last
    /// failure, original route) and RabbitMQ's `x-death` for one pass through a delay queue.
    Rich,
}

impl Shape {
    /// How the table's caption names it.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Shape::Minimal => "7 B, minimal properties",
            Shape::Rich => {
                "1 KiB, on their second attempt (application, retry and x-death headers)"
            }
        }
    }

    /// The name in the JSON report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Shape::Minimal => "minimal",
            Shape::Rich => "rich",
        }
    }

    /// The body of every task.
    pub(crate) fn body(self) -> Bytes {
        match self {
            Shape::Minimal => Bytes::from_static(b"payload"),
            Shape::Rich => {
                let mut json = String::from(r#"{"order":42,"lines":["#);
                while json.len() < 1000 {
                    json.push_str(r#"{"sku":"SKU-000123","qty":2},"#);
                }
                json.pop();
                json.push_str("]}");
                Bytes::from(json)
            }
        }
    }

    /// The properties of task `i` of a run on `config`'s queues.
    pub(crate) fn properties(
        self,
        config: &WorkerConfig,
        i: u64,
    ) -> Result<BasicProperties, BoxError> {
        let id = format!("task-{i}");
        let minimal = task_properties(&id);
        if self == Shape::Minimal {
            return Ok(minimal);
        }
        let delay = config.retry_delays.first().copied().unwrap_or_default();
        let routing_keys: FieldArray = [FieldValue::from(config.delay_queue(delay))]
            .into_iter()
            .collect();
        let death = FieldTable::builder()
            .insert("count", 1i64)
            .insert("exchange", "")
            .insert("queue", config.delay_queue(delay))
            .insert("reason", "expired")
            .insert("routing-keys", routing_keys)
            .insert("time", FieldValue::Timestamp(retry::unix_now()))
            .build()?;
        let first_pass: FieldArray = [FieldValue::from(death)].into_iter().collect();
        let published = minimal
            .to_builder()
            .with_content_type("application/json")
            .with_correlation_id(format!("order-42-{i}"))
            .with_header("tenant", "acme-eu-west-1")
            .with_header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .with_header(retry::X_DEATH_HEADER, first_pass)
            .build()?;
        let record = FailureRecord::new(
            published.headers().as_ref(),
            1,
            "upstream timed out: GET /inventory/SKU-000123 after 5s",
            "orders",
            "orders.created",
        );
        Ok(retry::retry_properties(&published, &record, 2))
    }
}

#[cfg(test)]
mod tests {
    // A test's failure is a panic.
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The worker reads a rich task as its second attempt, its header and `x-death` agreeing
    /// (no warning per task), and keeps its original route for a later retry.
    #[test]
    fn a_rich_task_is_a_second_attempt_the_worker_reads_as_such() {
        let config = WorkerConfig::new("jobs");
        let props = Shape::Rich.properties(&config, 7).unwrap();
        let headers = props.headers();
        let prefix = config.delay_queue_prefix();
        assert_eq!(retry::attempt_of(headers.as_ref(), &prefix), (2, false));
        assert_eq!(retry::x_death_retries(headers.as_ref(), &prefix), 1);
        let original = headers
            .as_ref()
            .and_then(|h| h.get(retry::ORIGINAL_ROUTING_KEY_HEADER));
        assert_eq!(original.unwrap().as_str(), Some("orders.created"));
        assert!(props.encoded_len() > 400, "{} bytes", props.encoded_len());
        assert!((1000..1100).contains(&Shape::Rich.body().len()));
        let minimal = Shape::Minimal.properties(&config, 7).unwrap();
        assert_eq!(
            retry::attempt_of(minimal.headers().as_ref(), &prefix),
            (1, false)
        );
    }
}
