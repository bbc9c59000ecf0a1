//! Dispatch against the real broker: at most `concurrency` handlers run at once, two
//! workers of different speeds on one queue share it by speed (prefetch), not round-robin,
//! and a graceful stop starts nothing it has not started already.

// Tests unwrap (a failure is the test failing) and print their figures.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use amqp_worker::{Shutdown, Task, Worker, handler_fn};
use support::{
    Cleanup, Tally, connect, ids, publish_ids, ready, start_worker, test_config, wait_until, within,
};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_never_exceeds_the_limit() {
    let mut cleanup = Cleanup::new();
    within(LIMIT, async {
        let mut config = test_config("conc");
        config.concurrency = 5;
        config.prefetch = 50;
        cleanup.config(&config);
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let done = Tally::default();
        let (n, p, d) = (now.clone(), peak.clone(), done.clone());
        let handler = handler_fn(move |task: Task| {
            let (n, p, d) = (n.clone(), p.clone(), d.clone());
            async move {
                let running = n.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                n.fetch_sub(1, Ordering::SeqCst);
                d.add(&task.message_id().unwrap());
                Ok(())
            }
        });
        let (_metrics, shutdown, running) = start_worker(&config, handler).await;
        let conn = connect().await;
        let all = ids("c", 300);
        publish_ids(&conn, "", &config.queue, &all).await;
        wait_until(LIMIT, "all done", || done.distinct() == all.len()).await;
        shutdown.trigger();
        running.await.unwrap().unwrap();
        let lost = done.missing(&all).len();
        let peak = peak.load(Ordering::SeqCst);
        println!(
            "concurrency: limit 5, prefetch 50, peak {peak}, tasks {}, duplicates {}, lost {lost}",
            all.len(),
            done.duplicates()
        );
        assert_eq!(peak, 5, "the limit is reached and never exceeded");
        assert_eq!(lost, 0);
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_and_a_slow_worker_share_by_speed() {
    let mut cleanup = Cleanup::new();
    within(LIMIT, async {
        let mut config = test_config("fair");
        config.concurrency = 1;
        config.prefetch = 1;
        cleanup.config(&config);
        let done = Tally::default();
        let shutdown = Shutdown::new();
        let counts: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        let mut running = Vec::new();
        let mut all_metrics = Vec::new();
        for (i, pause) in [Duration::from_millis(2), Duration::from_millis(40)]
            .into_iter()
            .enumerate()
        {
            let (count, d) = (counts[i].clone(), done.clone());
            let handler = handler_fn(move |task: Task| {
                let (count, d) = (count.clone(), d.clone());
                async move {
                    tokio::time::sleep(pause).await;
                    count.fetch_add(1, Ordering::SeqCst);
                    d.add(&task.message_id().unwrap());
                    Ok(())
                }
            });
            let mut c = config.clone();
            c.connection_name = Some(format!("{}-{i}", c.queue));
            let worker = Worker::new(c, handler)
                .unwrap()
                .with_shutdown(shutdown.clone());
            all_metrics.push(worker.metrics());
            running.push(tokio::spawn(worker.run()));
        }
        wait_until(LIMIT, "both connected", || {
            all_metrics.iter().all(|m| m.is_connected())
        })
        .await;
        let conn = connect().await;
        let all = ids("f", 200);
        publish_ids(&conn, "", &config.queue, &all).await;
        wait_until(LIMIT, "all done", || done.distinct() == all.len()).await;
        shutdown.trigger();
        for r in running {
            r.await.unwrap().unwrap();
        }
        let fast = counts[0].load(Ordering::SeqCst);
        let slow = counts[1].load(Ordering::SeqCst);
        let lost = done.missing(&all).len();
        println!(
            "fair dispatch: fast worker (2 ms) {fast}, slow worker (40 ms) {slow}, lost {lost}"
        );
        assert!(slow >= 1, "the slow worker took part");
        assert!(
            fast >= 4 * slow,
            "prefetch 1 gives the fast worker most tasks: {fast} vs {slow}"
        );
        assert_eq!(lost, 0);
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_finishes_running_tasks_and_hands_back_the_queued_ones() {
    let mut cleanup = Cleanup::new();
    within(LIMIT, async {
        let mut config = test_config("stopq");
        config.concurrency = 2;
        config.prefetch = 20;
        cleanup.config(&config);
        let started = Tally::default();
        let done = Tally::default();
        let release = Arc::new(tokio::sync::Notify::new());
        let (s, d, r) = (started.clone(), done.clone(), release.clone());
        let handler = handler_fn(move |task: Task| {
            let (s, d, r) = (s.clone(), d.clone(), r.clone());
            async move {
                let id = task.message_id().unwrap();
                s.add(&id);
                r.notified().await;
                d.add(&id);
                Ok(())
            }
        });
        let (metrics, shutdown, running) = start_worker(&config, handler).await;
        let conn = connect().await;
        let all = ids("s", 20);
        publish_ids(&conn, "", &config.queue, &all).await;
        // Both runners hold a task; the other 18 are prefetched, waiting in the worker.
        wait_until(LIMIT, "two started", || started.distinct() == 2).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            started.distinct(),
            2,
            "no third task while both runners are busy"
        );
        shutdown.trigger();
        // The stop waits for the running two: let them finish only once it has begun.
        tokio::time::sleep(Duration::from_millis(300)).await;
        release.notify_waiters();
        running.await.unwrap().unwrap();
        let snapshot = metrics.snapshot();
        println!(
            "graceful stop: started {}, succeeded {}, back in the queue {}",
            started.distinct(),
            snapshot.succeeded,
            ready(&conn, &config.queue).await
        );
        assert_eq!(done.distinct(), 2, "the running tasks finished");
        assert_eq!(snapshot.succeeded, 2, "and were acked");
        assert_eq!(
            started.distinct(),
            2,
            "no queued task was started by the stop"
        );
        assert_eq!(
            ready(&conn, &config.queue).await,
            18,
            "every task not started is back in the queue"
        );
        conn.close().await.unwrap();
    })
    .await;
}
