//! Feature `trace-context` against the real broker: a task published with a `traceparent`
//! keeps its trace through a retry and into the parking queue, every attempt's handler sees
//! it (`Task::trace_context`), and each attempt's `task` span carries its `trace_id` (seen by
//! a subscriber of this test's own, installed for the whole process).

// Tests unwrap (a failure is the test failing).
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use amqp_client::{GetOptions, TraceContext};
use amqp_worker::{HandlerError, Publisher, Task, handler_fn, task_properties};
use support::{Cleanup, connect, start_worker, test_config, wait_until, within};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

const LIMIT: Duration = Duration::from_secs(60);

/// Fields of every span made, by id - 1.
type Spans = Arc<Mutex<Vec<(&'static str, HashMap<String, String>)>>>;

/// Records spans' names and fields; nothing else.
struct Capture(Spans);

/// Writes visited fields into a map.
struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
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
        let mut spans = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        spans.push((attrs.metadata().name(), fields));
        Id::from_u64(spans.len() as u64)
    }

    fn record(&self, id: &Id, values: &Record<'_>) {
        let mut spans = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let index = usize::try_from(id.into_u64() - 1).unwrap();
        if let Some((_, fields)) = spans.get_mut(index) {
            values.record(&mut Fields(fields));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_runs_through_every_attempt_and_into_the_parking_queue() {
    let spans: Spans = Arc::default();
    tracing::subscriber::set_global_default(Capture(spans.clone())).unwrap();
    let mut cleanup = Cleanup::new();
    within(LIMIT, async {
        let mut config = test_config("trace");
        config.max_attempts = 2;
        cleanup.config(&config);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let handler = handler_fn(move |task: Task| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push((task.attempt, task.trace_context()));
                Err::<(), _>(HandlerError::new("always fails"))
            }
        });
        let (metrics, shutdown, running) = start_worker(&config, handler).await;

        let conn = connect().await;
        let sent = TraceContext::new_root(true).with_tracestate("vendor=1");
        let props = sent.inject_properties(&task_properties("t-1")).unwrap();
        let publisher = Publisher::open(&conn).await.unwrap();
        publisher
            .publish("", &config.queue, &props, "work")
            .await
            .unwrap();
        wait_until(LIMIT, "parked", || metrics.snapshot().dead_lettered == 1).await;
        shutdown.trigger();
        running.await.unwrap().unwrap();

        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2]);
        for (attempt, ctx) in &seen {
            assert_eq!(ctx.as_ref(), Some(&sent), "attempt {attempt}");
        }
        let ch = conn.open_channel().await.unwrap();
        let parked = ch
            .basic_get(&config.parking_queue(), GetOptions::default())
            .await
            .unwrap()
            .expect("the parked copy");
        assert_eq!(parked.delivery.trace_context(), Some(sent.clone()));
        parked.delivery.ack().unwrap();
        let traced = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(name, f)| *name == "task" && f.get("trace_id") == Some(&sent.trace_id_hex()))
            .count();
        assert_eq!(
            traced, 2,
            "one task span per attempt, each with the trace id"
        );
        publisher.close().await.unwrap();
        conn.close().await.unwrap();
    })
    .await;
}
