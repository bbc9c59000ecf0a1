//! Topology against the real broker: direct, fanout, topic and headers exchanges and an
//! exchange-to-exchange binding declared from a TOML configuration route exactly what they
//! should; the quorum option makes quorum queues (and retries still work); a queue that exists
//! with other arguments is a clear 406 error, not a retry loop.

// Tests unwrap (a failure is the test failing) and print their figures.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amqp_client::amqp_codec::FieldTable;
use amqp_worker::{
    HandlerError, PublishError, Publisher, QueueType, Task, Worker, WorkerConfig, WorkerError,
    handler_fn, task_properties,
};
use support::{
    Cleanup, Tally, connect, rabbitmqctl, start_worker, test_config, wait_until, within,
};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_types_and_an_exchange_to_exchange_binding_from_toml() {
    let mut cleanup = Cleanup::new();
    within(LIMIT, async {
        let base = test_config("types");
        let p = base.queue.clone();
        let toml = format!(
            r#"
            url = "{url}"
            queue = "{p}"
            connection_name = "{p}-conn"
            retry_delays = ["100ms"]

            [[exchanges]]
            name = "{p}-direct"
            type = "direct"
            [[exchanges]]
            name = "{p}-fanout"
            type = "fanout"
            [[exchanges]]
            name = "{p}-topic"
            type = "topic"
            [[exchanges]]
            name = "{p}-headers"
            type = "headers"
            [[exchanges]]
            name = "{p}-front"
            type = "topic"

            [[bindings]]
            source = "{p}-direct"
            routing_key = "d.key"
            [[bindings]]
            source = "{p}-fanout"
            [[bindings]]
            source = "{p}-topic"
            routing_key = "orders.*.created"
            [[bindings]]
            source = "{p}-headers"
            arguments = {{ "x-match" = "all", kind = "pdf" }}
            [[bindings]]
            source = "{p}-front"
            destination = "{p}-direct"
            destination_type = "exchange"
            routing_key = "d.#"
            "#,
            url = base.url
        );
        let config = WorkerConfig::from_toml(&toml).unwrap();
        cleanup.config(&config);
        // (message id, exchange it came through, routing key)
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let handler = handler_fn(move |task: Task| {
            let g = g.clone();
            async move {
                g.lock().unwrap().push((
                    task.message_id().unwrap(),
                    task.exchange,
                    task.routing_key,
                ));
                Ok(())
            }
        });
        let (_metrics, shutdown, running) = start_worker(&config, handler).await;
        let conn = connect().await;
        let publisher = Publisher::open(&conn).await.unwrap();
        let headers = |kind: &str| {
            let h: FieldTable = FieldTable::builder().insert("kind", kind).build().unwrap();
            task_properties("h").to_builder().with_headers(h)
        };
        let cases: Vec<(
            &str,
            String,
            &str,
            amqp_client::amqp_codec::PropertiesBuilder,
            bool,
        )> = vec![
            (
                "direct-hit",
                format!("{p}-direct"),
                "d.key",
                task_properties("direct-hit").to_builder(),
                true,
            ),
            (
                "direct-miss",
                format!("{p}-direct"),
                "d.other",
                task_properties("direct-miss").to_builder(),
                false,
            ),
            (
                "fanout-any",
                format!("{p}-fanout"),
                "whatever",
                task_properties("fanout-any").to_builder(),
                true,
            ),
            (
                "topic-hit",
                format!("{p}-topic"),
                "orders.eu.created",
                task_properties("topic-hit").to_builder(),
                true,
            ),
            (
                "topic-miss",
                format!("{p}-topic"),
                "orders.created",
                task_properties("topic-miss").to_builder(),
                false,
            ),
            (
                "headers-hit",
                format!("{p}-headers"),
                "",
                headers("pdf"),
                true,
            ),
            (
                "headers-miss",
                format!("{p}-headers"),
                "",
                headers("png"),
                false,
            ),
            (
                "e2e-hit",
                format!("{p}-front"),
                "d.key",
                task_properties("e2e-hit").to_builder(),
                true,
            ),
            (
                "e2e-miss",
                format!("{p}-front"),
                "x.key",
                task_properties("e2e-miss").to_builder(),
                false,
            ),
        ];
        let mut outcome = BTreeMap::new();
        for (id, exchange, key, mut props, routable) in cases {
            props.message_id = Some(id.try_into().unwrap());
            let result = publisher
                .publish(&exchange, key, &props.build().unwrap(), id)
                .await;
            match (&result, routable) {
                (Ok(()), true) => {}
                (Err(PublishError::Unroutable { .. }), false) => {}
                other => panic!("{id}: unexpected {other:?}"),
            }
            outcome.insert(id, result.is_ok());
        }
        wait_until(LIMIT, "five routed tasks", || {
            got.lock().unwrap().len() == 5
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        shutdown.trigger();
        running.await.unwrap().unwrap();
        let mut got = got.lock().unwrap().clone();
        got.sort();
        println!("routing: published {outcome:?}; consumed {got:?}; lost 0");
        let ids: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(
            ids,
            [
                "direct-hit",
                "e2e-hit",
                "fanout-any",
                "headers-hit",
                "topic-hit"
            ]
        );
        // Through the e2e binding the delivery names the exchange it was published to.
        let e2e = got.iter().find(|g| g.0 == "e2e-hit").unwrap();
        assert_eq!(e2e.1, format!("{p}-front"));
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_as_an_option_and_a_mismatch_is_a_406_error() {
    let mut cleanup = Cleanup::new();
    within(LIMIT, async {
        let mut config = test_config("quorum");
        config.queue_type = QueueType::Quorum;
        config.delivery_limit = Some(5);
        cleanup.config(&config);
        let done = Tally::default();
        let d = done.clone();
        let handler = handler_fn(move |task: Task| {
            let d = d.clone();
            async move {
                if task.attempt == 1 {
                    return Err(HandlerError::new("first attempt fails"));
                }
                d.add(&task.message_id().unwrap());
                Ok(())
            }
        });
        let (metrics, shutdown, running) = start_worker(&config, handler).await;
        let conn = connect().await;
        let all = support::ids("q", 20);
        support::publish_ids(&conn, "", &config.queue, &all).await;
        wait_until(LIMIT, "all retried and done", || {
            done.distinct() == all.len()
        })
        .await;
        shutdown.trigger();
        running.await.unwrap().unwrap();
        let listing = rabbitmqctl(&[
            "list_queues",
            "--quiet",
            "--no-table-headers",
            "name",
            "type",
            "arguments",
        ])
        .await;
        let line = |name: &str| {
            listing
                .lines()
                .find(|l| l.split('\t').next() == Some(name))
                .unwrap_or_else(|| panic!("{name} not listed"))
                .to_owned()
        };
        let work = line(&config.queue);
        let parked = line(&config.parking_queue());
        let lost = done.missing(&all).len();
        println!(
            "quorum: {work} | {parked} | retried {}, lost {lost}",
            metrics.snapshot().retried
        );
        assert!(
            work.contains("\tquorum\t") && work.contains("x-delivery-limit"),
            "{work}"
        );
        assert!(parked.contains("\tquorum"), "{parked}");
        assert_eq!(lost, 0);

        // The same queue declared classic: the broker refuses, and the worker says so at once.
        let mut classic = config.clone();
        classic.queue_type = QueueType::Classic;
        classic.delivery_limit = None;
        let worker = Worker::new(classic, handler_fn(|_| async { Ok(()) })).unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), worker.run())
            .await
            .expect("fails fast, no retry loop")
            .unwrap_err();
        println!("mismatch: {err}");
        assert!(matches!(err, WorkerError::Declare { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("406") && text.contains(&config.parking_queue()),
            "{text}"
        );
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_to_a_missing_exchange_declares_nothing() {
    let mut cleanup = Cleanup::new();
    within(LIMIT, async {
        let mut config = test_config("bad-binding");
        let declared = format!("{}-x", config.queue);
        let missing = format!("{}-no-such-exchange", config.queue);
        config
            .exchanges
            .push(amqp_worker::config::ExchangeSpec::new(&declared, "direct"));
        config
            .bindings
            .push(amqp_worker::config::BindingSpec::to_work_queue(
                &declared, "a",
            ));
        config
            .bindings
            .push(amqp_worker::config::BindingSpec::to_work_queue(
                &missing, "b",
            ));
        cleanup.config(&config);
        let worker = Worker::new(config.clone(), handler_fn(|_| async { Ok(()) })).unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), worker.run())
            .await
            .expect("fails fast, no retry loop")
            .unwrap_err();
        println!("bad binding: {err}");
        // Nothing was declared: not the exchange, not a queue.
        let conn = connect().await;
        let mut exists = Vec::new();
        for q in [
            config.queue.clone(),
            config.parking_queue(),
            config.delay_queue(config.retry_delays[0]),
        ] {
            let ch = conn.open_channel().await.unwrap();
            let passive = amqp_client::QueueDeclareOptions::default().with_passive();
            if ch.queue_declare(&q, passive).await.is_ok() {
                exists.push(q);
            }
        }
        let ch = conn.open_channel().await.unwrap();
        let passive = amqp_client::ExchangeDeclareOptions::default().with_passive();
        if ch
            .exchange_declare(&declared, amqp_client::ExchangeKind::Direct, passive)
            .await
            .is_ok()
        {
            exists.push(declared.clone());
        }
        assert!(exists.is_empty(), "declared anyway: {exists:?}");
        assert!(matches!(err, WorkerError::Missing { .. }), "{err:?}");
        assert!(err.to_string().contains(&missing), "{err}");
        conn.close().await.unwrap();
    })
    .await;
}
