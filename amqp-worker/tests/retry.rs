//! Retries against the real broker: a task that fails twice succeeds on its third attempt
//! through the delay queues (attempt header and x-death agree); a task that always fails is
//! parked with its failure headers and the hook runs, and `requeue_parked` brings it back;
//! panics and hangs count as failed attempts and never stop the worker.

// Tests unwrap (a failure is the test failing) and print their figures.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqp_client::amqp_codec::FieldValue;
use amqp_client::{GetOptions, NackOptions};
use amqp_worker::retry;
use amqp_worker::{DeadLetter, Handler, HandlerError, Task, Worker, handler_fn, topology};
use support::{
    Cleanup, Tally, connect, ids, publish_ids, start_worker, test_config, wait_until, within,
};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_failing_twice_succeeds_on_the_third_attempt() {
    let mut cleanup = Cleanup::new();
    within(LIMIT, async {
        let mut config = test_config("retry");
        config.max_attempts = 4;
        cleanup.config(&config);
        // (id, attempt, x-death retries, time) of every run.
        let runs = Arc::new(Mutex::new(Vec::new()));
        let succeeded = Tally::default();
        let (r, s, prefix) = (runs.clone(), succeeded.clone(), config.delay_queue_prefix());
        let handler = handler_fn(move |task: Task| {
            let (r, s, prefix) = (r.clone(), s.clone(), prefix.clone());
            async move {
                let id = task.message_id().unwrap();
                let deaths = retry::x_death_retries(task.properties.headers().as_ref(), &prefix);
                r.lock().unwrap().push((id.clone(), task.attempt, deaths, Instant::now()));
                if id.ends_with("-0") && task.attempt < 3 {
                    return Err(HandlerError::new(format!("transient failure {}", task.attempt)));
                }
                s.add(&id);
                Ok(())
            }
        });
        let (metrics, shutdown, running) = start_worker(&config, handler).await;
        let conn = connect().await;
        let all = ids("r", 5);
        publish_ids(&conn, "", &config.queue, &all).await;
        wait_until(LIMIT, "all succeeded", || succeeded.distinct() == all.len()).await;
        shutdown.trigger();
        running.await.unwrap().unwrap();
        let runs = runs.lock().unwrap().clone();
        let flaky: Vec<_> = runs.iter().filter(|r| r.0 == "r-0").collect();
        let attempts: Vec<u32> = flaky.iter().map(|r| r.1).collect();
        let deaths: Vec<u64> = flaky.iter().map(|r| r.2).collect();
        let m = metrics.snapshot();
        let lost = succeeded.missing(&all).len();
        println!(
            "retry: attempts {attempts:?}, x-death retries {deaths:?}, gaps {:?}, retried {}, succeeded {}, lost {lost}",
            flaky.windows(2).map(|w| w[1].3 - w[0].3).collect::<Vec<_>>(),
            m.retried,
            m.succeeded
        );
        assert_eq!(attempts, vec![1, 2, 3]);
        assert_eq!(deaths, vec![0, 1, 2], "x-death counts the delay-queue passes");
        // First retry waits 100 ms, the second 200 ms.
        assert!(flaky[1].3 - flaky[0].3 >= Duration::from_millis(100));
        assert!(flaky[2].3 - flaky[1].3 >= Duration::from_millis(200));
        assert_eq!(m.retried, 2);
        // Counted by the attempt that failed: one retry after attempt 1, one after attempt 2.
        let by_attempt: Vec<(u32, u64)> = metrics.retried_by_attempt().into_iter().collect();
        assert_eq!(by_attempt, vec![(1, 1), (2, 1)]);
        assert_eq!(m.dead_lettered, 0);
        assert_eq!(lost, 0);
        assert_eq!(support::ready(&conn, &config.parking_queue()).await, 0);
        // The client's counts of the worker's connection, after it closed: five tasks and two
        // retried copies delivered and acked; the two copies published and confirmed.
        let text = metrics.render_prometheus();
        for (name, value) in [
            ("delivered", 7),
            ("acked", 7),
            ("rejected", 0),
            ("published", 2),
            ("confirmed", 2),
            ("nacked", 0),
            ("recoveries", 0),
        ] {
            let line = format!("amqp_worker_client_{name}_total{{queue=\"{}\"}} {value}", config.queue);
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert_eq!(metrics.client_stats().delivered, 7);
        conn.close().await.unwrap();
    })
    .await;
}

/// Always fails; records what the dead-letter hook saw.
struct AlwaysFails {
    hooked: Arc<Mutex<Vec<(String, DeadLetter)>>>,
    succeed_after_requeue: Tally,
}

impl Handler for AlwaysFails {
    async fn handle(&self, task: &Task) -> Result<(), HandlerError> {
        if task.header_text(retry::REQUEUED_HEADER).is_some() {
            self.succeed_after_requeue.add(&task.message_id().unwrap());
            return Ok(());
        }
        Err(HandlerError::new(format!(
            "bad input on attempt {}",
            task.attempt
        )))
    }

    async fn on_dead_letter(&self, task: &Task, dead: &DeadLetter) {
        self.hooked
            .lock()
            .unwrap()
            .push((task.message_id().unwrap(), dead.clone()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_failure_parks_the_task_with_its_history_and_runs_the_hook() {
    let mut cleanup = Cleanup::new();
    within(LIMIT, async {
        let mut config = test_config("park");
        config.queue_depth_interval = Duration::from_millis(200);
        config.exchanges.push(amqp_worker::config::ExchangeSpec::new(format!("{}-x", config.queue), "direct"));
        config.bindings.push(amqp_worker::config::BindingSpec::to_work_queue(format!("{}-x", config.queue), "jobs.pdf"));
        cleanup.config(&config);
        let hooked = Arc::new(Mutex::new(Vec::new()));
        let after = Tally::default();
        let worker = Worker::new(
            config.clone(),
            AlwaysFails { hooked: hooked.clone(), succeed_after_requeue: after.clone() },
        )
        .unwrap();
        let (metrics, shutdown) = (worker.metrics(), worker.shutdown());
        let running = tokio::spawn(worker.run());
        wait_until(LIMIT, "connected", || metrics.is_connected()).await;
        let conn = connect().await;
        let all = ids("p", 3);
        let before = retry::unix_now();
        publish_ids(&conn, &format!("{}-x", config.queue), "jobs.pdf", &all).await;
        wait_until(LIMIT, "hook ran for all", || hooked.lock().unwrap().len() == all.len()).await;
        assert_eq!(support::ready(&conn, &config.parking_queue()).await, 3);
        // The parking queue's depth reaches the metrics by the periodic passive declare.
        wait_until(Duration::from_secs(5), "parked gauge at 3", || {
            metrics.snapshot().parked_depth == Some(3)
        })
        .await;
        let text = metrics.render_prometheus();
        assert!(
            text.contains(&format!("amqp_worker_parked_messages{{queue=\"{}\"}} 3", config.queue)),
            "{text}"
        );

        // Inspect one parked copy without taking it.
        let ch = conn.open_channel().await.unwrap();
        let parked = ch.basic_get(&config.parking_queue(), GetOptions::default()).await.unwrap().unwrap();
        let h = parked.delivery.properties.headers().unwrap();
        let text = |k: &str| h.get(k).and_then(|v| v.as_str().map(str::to_owned));
        assert_eq!(text(retry::LAST_ERROR_HEADER).as_deref(), Some("bad input on attempt 3"));
        assert_eq!(h.get(retry::ATTEMPTS_HEADER), Some(FieldValue::I32(3)));
        assert_eq!(text(retry::ORIGINAL_EXCHANGE_HEADER), Some(format!("{}-x", config.queue)));
        assert_eq!(text(retry::ORIGINAL_ROUTING_KEY_HEADER).as_deref(), Some("jobs.pdf"));
        let stamp = |k: &str| match h.get(k) {
            Some(FieldValue::Timestamp(t)) => t,
            other => panic!("{k}: {other:?}"),
        };
        let (first, last) = (stamp(retry::FIRST_FAILURE_HEADER), stamp(retry::LAST_FAILURE_HEADER));
        assert!(first >= before && last >= first && last <= retry::unix_now());
        assert!(parked.delivery.properties.is_persistent());
        parked.delivery.nack(NackOptions::requeue()).unwrap();
        ch.close().await.unwrap();

        let hooked_now = hooked.lock().unwrap().clone();
        let (_, dead) = &hooked_now[0];
        assert_eq!(dead.attempts, 3);
        assert_eq!(dead.original_routing_key, "jobs.pdf");
        assert_eq!(dead.parking_queue, config.parking_queue());

        // Move them back: they come as fresh first attempts and now succeed.
        let moved = topology::requeue_parked(&conn, &config, None).await.unwrap();
        wait_until(LIMIT, "requeued tasks succeeded", || after.distinct() == all.len()).await;
        shutdown.trigger();
        running.await.unwrap().unwrap();
        let m = metrics.snapshot();
        let lost = after.missing(&all).len();
        println!(
            "park: runs {}, failed {}, retried {}, dead-lettered {}, hook calls {}, requeued {moved}, succeeded after requeue {}, lost {lost}",
            m.consumed, m.failed, m.retried, m.dead_lettered, hooked_now.len(), after.distinct()
        );
        assert_eq!((m.failed, m.retried, m.dead_lettered), (9, 6, 3));
        assert_eq!(moved, 3);
        assert_eq!(lost, 0);
        assert_eq!(support::ready(&conn, &config.parking_queue()).await, 0);
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_and_hangs_are_failed_attempts_not_a_dead_worker() {
    let mut cleanup = Cleanup::new();
    within(LIMIT, async {
        let mut config = test_config("panic");
        config.handler_timeout = Duration::from_millis(300);
        config.max_attempts = 4;
        cleanup.config(&config);
        let done = Tally::default();
        let d = done.clone();
        let handler = handler_fn(move |task: Task| {
            let d = d.clone();
            async move {
                match task.attempt {
                    1 => panic!("handler bug on attempt 1"),
                    2 => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        Ok(())
                    }
                    3 => Err(HandlerError::new("plain error")),
                    _ => {
                        d.add(&task.message_id().unwrap());
                        Ok(())
                    }
                }
            }
        });
        let (metrics, shutdown, running) = start_worker(&config, handler).await;
        let conn = connect().await;
        let all = ids("x", 4);
        publish_ids(&conn, "", &config.queue, &all).await;
        wait_until(LIMIT, "fourth attempts succeeded", || done.distinct() == all.len()).await;
        shutdown.trigger();
        running.await.unwrap().unwrap();
        let m = metrics.snapshot();
        let lost = done.missing(&all).len();
        println!(
            "panic/hang: runs {}, failed {} (panic, timeout, error per task), retried {}, succeeded {}, lost {lost}",
            m.consumed, m.failed, m.retried, m.succeeded
        );
        assert_eq!(m.failed, 12);
        assert_eq!(m.retried, 12);
        assert_eq!(m.succeeded, 4);
        assert_eq!(lost, 0);
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_can_park_a_task_at_once_with_the_reason_recorded() {
    let mut cleanup = Cleanup::new();
    within(LIMIT, async {
        let config = test_config("park-now");
        cleanup.config(&config);
        struct Rejects(Arc<Mutex<Vec<DeadLetter>>>);
        impl Handler for Rejects {
            async fn handle(&self, task: &Task) -> Result<(), HandlerError> {
                Err(HandlerError::park_now(format!(
                    "unparseable body on attempt {}",
                    task.attempt
                )))
            }
            async fn on_dead_letter(&self, _task: &Task, dead: &DeadLetter) {
                self.0.lock().unwrap().push(dead.clone());
            }
        }
        let hooked = Arc::new(Mutex::new(Vec::new()));
        let (metrics, shutdown, running) = start_worker(&config, Rejects(hooked.clone())).await;
        let conn = connect().await;
        publish_ids(&conn, "", &config.queue, &ids("n", 2)).await;
        wait_until(LIMIT, "hook ran for both", || {
            hooked.lock().unwrap().len() == 2
        })
        .await;
        shutdown.trigger();
        running.await.unwrap().unwrap();
        let ch = conn.open_channel().await.unwrap();
        let parked = ch
            .basic_get(&config.parking_queue(), GetOptions::default())
            .await
            .unwrap()
            .unwrap();
        let h = parked.delivery.properties.headers().unwrap();
        let text = |k: &str| h.get(k).and_then(|v| v.as_str().map(str::to_owned));
        let m = metrics.snapshot();
        println!(
            "park now: runs {}, retried {}, parked {} (rejected {}), reason {:?}",
            m.consumed,
            m.retried,
            m.dead_lettered,
            m.rejected,
            text(retry::PARK_REASON_HEADER)
        );
        assert_eq!(text(retry::PARK_REASON_HEADER).as_deref(), Some("rejected"));
        assert_eq!(
            text(retry::LAST_ERROR_HEADER).as_deref(),
            Some("unparseable body on attempt 1")
        );
        assert_eq!(h.get(retry::ATTEMPTS_HEADER), Some(FieldValue::I32(1)));
        assert_eq!(
            (m.consumed, m.retried, m.dead_lettered, m.rejected),
            (2, 0, 2, 2)
        );
        let hooked = hooked.lock().unwrap().clone();
        assert!(
            hooked
                .iter()
                .all(|d| d.reason == amqp_worker::ParkReason::Rejected && d.attempts == 1)
        );
        parked.delivery.nack(NackOptions::requeue()).unwrap();
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jittered_retries_spread_over_the_step_queues_and_wait_exactly_theirs() {
    let mut cleanup = Cleanup::new();
    within(LIMIT, async {
        let mut config = test_config("jitter");
        config.retry_delays = vec![Duration::from_millis(1000)];
        config.retry_jitter_percent = 50;
        config.max_attempts = 2;
        cleanup.config(&config);
        // id -> (first attempt start, second attempt start, delay queue it came through)
        let seen = Arc::new(Mutex::new(std::collections::HashMap::new()));
        let s = seen.clone();
        let handler = handler_fn(move |task: Task| {
            let s = s.clone();
            async move {
                let id = task.message_id().unwrap();
                let now = Instant::now();
                let mut seen = s.lock().unwrap();
                if task.attempt == 1 {
                    seen.insert(id, (now, None, String::new()));
                    return Err(HandlerError::new("first attempt fails"));
                }
                let h = task.headers();
                let queue = match h.get(retry::X_DEATH_HEADER) {
                    Some(FieldValue::Array(deaths)) => match deaths.iter().next() {
                        Some(FieldValue::Table(t)) => {
                            t.get("queue").and_then(|q| q.as_str().map(str::to_owned))
                        }
                        _ => None,
                    },
                    _ => None,
                };
                let entry = seen.get_mut(&id).unwrap();
                entry.1 = Some(now);
                entry.2 = queue.unwrap_or_default();
                Ok(())
            }
        });
        let (metrics, shutdown, running) = start_worker(&config, handler).await;
        let conn = connect().await;
        let all = ids("j", 40);
        publish_ids(&conn, "", &config.queue, &all).await;
        wait_until(LIMIT, "all retried once", || {
            metrics.snapshot().succeeded == 40
        })
        .await;
        shutdown.trigger();
        running.await.unwrap().unwrap();
        let steps: Vec<(String, Duration)> = config
            .jitter_steps(Duration::from_millis(1000))
            .into_iter()
            .map(|d| (config.delay_queue(d), d))
            .collect();
        let seen = seen.lock().unwrap().clone();
        let mut by_queue = std::collections::BTreeMap::new();
        let mut gaps = Vec::new();
        for (id, (first, second, queue)) in &seen {
            let gap = second.unwrap() - *first;
            let (_, ttl) = steps.iter().find(|(q, _)| q == queue).unwrap_or_else(|| {
                panic!("{id} came through '{queue}', not a step queue of the tier")
            });
            // Exactly its queue's delay, plus the worker's own latency.
            assert!(
                gap >= *ttl && gap < *ttl + Duration::from_millis(600),
                "{id}: {gap:?} in {queue}"
            );
            *by_queue.entry(queue.clone()).or_insert(0) += 1;
            gaps.push(gap);
        }
        gaps.sort();
        println!(
            "jitter 50% of 1s: 40 retries by queue {by_queue:?}; gaps {:?}..{:?}",
            gaps.first().unwrap(),
            gaps.last().unwrap()
        );
        assert_eq!(seen.len(), 40);
        assert!(by_queue.len() >= 3, "spread over the steps: {by_queue:?}");
        assert!(
            *gaps.first().unwrap() < Duration::from_millis(800),
            "{gaps:?}"
        );
        conn.close().await.unwrap();
    })
    .await;
}

/// A delivery the client cannot read (here: over the worker's `max_message_size`, set by URI)
/// never reaches a handler and never blocks the queue: the worker rejects it, the broker
/// dead-letters it byte for byte into the parking queue, and the next task runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_delivery_is_parked_by_the_broker_and_the_queue_flows_on() {
    let mut cleanup = Cleanup::new();
    within(LIMIT, async {
        let mut config = test_config("unreadable");
        let separator = if config.url.contains('?') { '&' } else { '?' };
        config.url = format!("{}{separator}max_message_size=4096", config.url);
        cleanup.config(&config);
        let done = Tally::default();
        let d = done.clone();
        let handler = handler_fn(move |task: Task| {
            let d = d.clone();
            async move {
                d.add(&task.message_id().unwrap());
                Ok(())
            }
        });
        let (metrics, shutdown, running) = start_worker(&config, handler).await;
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        ch.confirm_select().await.unwrap();
        let big = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
        let props = amqp_worker::task_properties("too-big");
        let confirm = ch
            .basic_publish("", &config.queue, Default::default(), &props, big.clone())
            .await
            .unwrap();
        assert!(confirm.await.unwrap().is_acked());
        publish_ids(&conn, "", &config.queue, &["after".to_owned()]).await;
        wait_until(LIMIT, "the next task ran", || done.count("after") == 1).await;
        wait_until(LIMIT, "parked", || metrics.snapshot().unreadable == 1).await;
        let mut parked = None;
        for _ in 0..100 {
            parked = ch
                .basic_get(&config.parking_queue(), GetOptions::no_ack())
                .await
                .unwrap();
            if parked.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let parked = parked
            .expect("dead-lettered into the parking queue")
            .delivery;
        assert_eq!(parked.body, big, "byte for byte");
        assert_eq!(
            parked.properties.message_id().map(|m| m.to_vec()),
            Some(b"too-big".to_vec())
        );
        assert_eq!(done.count("too-big"), 0, "never handed to the handler");
        assert!(
            metrics
                .render_prometheus()
                .contains("amqp_worker_unreadable_total")
        );
        shutdown.trigger();
        running.await.unwrap().unwrap();
        conn.close().await.unwrap();
    })
    .await;
}
