//! The tracing span of one channel operation (declare, delete, bind, unbind, purge, qos,
//! consume, cancel, get, recover, confirm and tx, close): debug level, named `channel_op`,
//! with the channel id, the method (`queue.declare`, ...) and the names it acts on.
//!
//! Publishes and acks have none: they are the per-message path, where a span would cost on
//! every message. A span no subscriber wants is `Span::none()`, and then no field is read.

use amqp_codec::Method;
use tracing::Span;
use tracing::field::{Empty, display};

/// The span of `method` on channel `id`; disabled (and cheap) unless a subscriber wants
/// debug spans of this crate.
pub(super) fn op_span(id: u16, method: &Method) -> Span {
    let span = tracing::debug_span!(
        "channel_op",
        channel = id,
        method = method.name(),
        queue = Empty,
        exchange = Empty,
        source = Empty,
        routing_key = Empty,
        consumer_tag = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    match method {
        Method::QueueDeclare(m) => {
            span.record("queue", display(&m.queue));
        }
        Method::QueueDelete(m) => {
            span.record("queue", display(&m.queue));
        }
        Method::QueuePurge(m) => {
            span.record("queue", display(&m.queue));
        }
        Method::QueueBind(m) => {
            span.record("queue", display(&m.queue));
            span.record("exchange", display(&m.exchange));
            span.record("routing_key", display(&m.routing_key));
        }
        Method::QueueUnbind(m) => {
            span.record("queue", display(&m.queue));
            span.record("exchange", display(&m.exchange));
            span.record("routing_key", display(&m.routing_key));
        }
        Method::ExchangeDeclare(m) => {
            span.record("exchange", display(&m.exchange));
        }
        Method::ExchangeDelete(m) => {
            span.record("exchange", display(&m.exchange));
        }
        Method::ExchangeBind(m) => {
            span.record("exchange", display(&m.destination));
            span.record("source", display(&m.source));
            span.record("routing_key", display(&m.routing_key));
        }
        Method::ExchangeUnbind(m) => {
            span.record("exchange", display(&m.destination));
            span.record("source", display(&m.source));
            span.record("routing_key", display(&m.routing_key));
        }
        Method::BasicConsume(m) => {
            span.record("queue", display(&m.queue));
            span.record("consumer_tag", display(&m.consumer_tag));
        }
        Method::BasicCancel(m) => {
            span.record("consumer_tag", display(&m.consumer_tag));
        }
        Method::BasicGet(m) => {
            span.record("queue", display(&m.queue));
        }
        _ => {}
    }
    span
}

/// The span of closing channel `id` (channel.close is not sent through `call`).
pub(super) fn close_span(id: u16) -> Span {
    tracing::debug_span!("channel_op", channel = id, method = "channel.close")
}
