//! The tracing spans against the real broker at `AMQP_URL`, seen by a subscriber of the
//! test's own (installed for the whole process: this file holds the one test that needs it):
//! `connect`, the `driver` task's span, a `channel_op` span per channel operation with the
//! names it acts on, and `Delivery::span`, made only when asked for.

mod common;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use amqp_client::{
    BasicProperties, BindOptions, Connection, ConnectionConfig, GetOptions, PublishOptions,
    QosOptions,
};
use amqp_test_support::{broker_url, unique_name};
use common::{Cleanup, LIMIT, next, plain, within};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// A span as the subscriber saw it: its name and fields (as text).
#[derive(Debug, Clone)]
struct Seen {
    /// The span's name (`connect`, `driver`, `channel_op`, `delivery`, ...).
    name: &'static str,
    /// Its fields, recorded at creation or later, as text.
    fields: HashMap<String, String>,
}

/// Every span made; a span's id is its index + 1.
type Spans = Arc<Mutex<Vec<Seen>>>;

/// A subscriber that records spans and their fields and ignores everything else.
struct Capture {
    /// What was seen, shared with the test.
    spans: Spans,
}

/// Writes visited fields into a map.
struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        spans.push(Seen {
            name: attrs.metadata().name(),
            fields,
        });
        Id::from_u64(spans.len() as u64)
    }

    fn record(&self, id: &Id, values: &Record<'_>) {
        let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(seen) = usize::try_from(id.into_u64())
            .ok()
            .and_then(|i| spans.get_mut(i - 1))
        {
            values.record(&mut Fields(&mut seen.fields));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// The spans named `name` whose field `key` is `value`.
fn find(spans: &Spans, name: &str, key: &str, value: &str) -> Vec<Seen> {
    let spans = spans.lock().unwrap_or_else(PoisonError::into_inner);
    spans
        .iter()
        .filter(|s| s.name == name && s.fields.get(key).map(String::as_str) == Some(value))
        .cloned()
        .collect()
}

fn field<'a>(seen: &'a Seen, key: &str) -> &'a str {
    seen.fields.get(key).map_or("", String::as_str)
}

#[tokio::test]
async fn connect_driver_channel_operations_and_deliveries_have_spans() {
    let spans: Spans = Arc::default();
    let capture = Capture {
        spans: spans.clone(),
    };
    tracing::subscriber::set_global_default(capture).expect("the only subscriber here");
    let mut names = Cleanup::new();
    within(LIMIT, async {
        let name = unique_name("traced");
        let mut config = ConnectionConfig::from_uri(&broker_url()).unwrap();
        config.connection_name = Some(name.clone());
        let conn = Connection::connect_with(config).await.unwrap();
        let ch = conn.open_channel().await.unwrap();
        let q = names.queue("q-traced");
        ch.queue_declare(&q, plain()).await.unwrap();
        ch.queue_bind(&q, "amq.direct", &q, BindOptions::default())
            .await
            .unwrap();
        ch.basic_qos(5, QosOptions::default()).await.unwrap();
        ch.confirm_select().await.unwrap();
        let props = BasicProperties::default();
        // With `trace-context`, the first message carries a traceparent: its delivery span
        // shows the trace id.
        #[cfg(feature = "trace-context")]
        let ctx = amqp_client::TraceContext::new_root(true);
        #[cfg(feature = "trace-context")]
        let traced_props = ctx.inject_properties(&props).unwrap();
        let publish = |body: &'static str| {
            let ch = ch.clone();
            let q = q.clone();
            #[cfg(feature = "trace-context")]
            let props = if body == "one" {
                traced_props.clone()
            } else {
                props.clone()
            };
            #[cfg(not(feature = "trace-context"))]
            let props = props.clone();
            async move {
                let confirm = ch
                    .basic_publish("amq.direct", &q, PublishOptions::default(), &props, body)
                    .await
                    .unwrap();
                assert!(confirm.await.unwrap().is_acked());
            }
        };
        publish("one").await;
        publish("two").await;
        let mut consumer = ch.basic_consume(&q, Default::default()).await.unwrap();
        let first = next(&mut consumer).await;
        let span = first.span();
        first.ack().unwrap();
        next(&mut consumer).await.ack().unwrap(); // no span asked for
        consumer.cancel().await.unwrap();
        publish("three").await;
        let got = ch.basic_get(&q, GetOptions::default()).await.unwrap();
        got.expect("the third message").delivery.ack().unwrap();
        ch.close().await.unwrap();
        conn.close().await.unwrap();

        assert_eq!(find(&spans, "driver", "connection", &name).len(), 1);
        assert!(spans.lock().unwrap().iter().any(|s| s.name == "connect"));
        let ops = |method: &str| {
            find(&spans, "channel_op", "method", method)
                .into_iter()
                .filter(|s| field(s, "channel") == ch.id().to_string())
                .filter(|s| s.fields.get("queue").is_none_or(|v| *v == q))
                .count()
        };
        for method in [
            "queue.declare",
            "queue.bind",
            "basic.qos",
            "basic.consume",
            "basic.cancel",
            "basic.get",
            "channel.close",
        ] {
            assert_eq!(ops(method), 1, "one {method} span");
        }
        let bind = find(&spans, "channel_op", "method", "queue.bind");
        let bind = bind.iter().find(|s| field(s, "queue") == q).expect("bind");
        assert_eq!(
            (field(bind, "exchange"), field(bind, "routing_key")),
            ("amq.direct", q.as_str())
        );
        assert!(find(&spans, "channel_op", "method", "basic.publish").is_empty());
        // One delivery span: only the delivery that was asked for one.
        let deliveries = find(&spans, "delivery", "routing_key", &q);
        assert_eq!(deliveries.len(), 1, "{deliveries:?}");
        let d = &deliveries[0];
        assert_eq!(field(d, "delivery_tag"), "1");
        assert_eq!(field(d, "exchange"), "amq.direct");
        assert_eq!(field(d, "consumer_tag"), consumer.tag().to_string());
        assert_eq!(field(d, "redelivered"), "false");
        #[cfg(feature = "trace-context")]
        assert_eq!(field(d, "trace_id"), ctx.trace_id_hex());
        drop(span);
    })
    .await;
}
