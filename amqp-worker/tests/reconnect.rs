//! Reconnection against the real broker: the worker's own connection (found by its connection
//! name) is closed by `rabbitmqctl close_connection` again and again while it works through
//! 20 000 tasks; it reconnects, re-declares, and every task succeeds at least once.

// Tests unwrap (a failure is the test failing) and print their figures.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::time::{Duration, Instant};

use amqp_worker::{Task, Worker, handler_fn, topology};
use support::{
    Cleanup, Tally, connect, connection_pid, ids, publish_ids, rabbitmqctl, test_config,
    wait_until, within,
};

const TASKS: usize = 20_000;
const KILLS: u32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_connection_repeatedly_loses_nothing() {
    let mut cleanup = Cleanup::new();
    within(Duration::from_secs(110), async {
        let mut config = test_config("reconnect");
        config.concurrency = 8;
        config.prefetch = 64;
        config.reconnect_min_delay = Duration::from_millis(100);
        config.reconnect_max_delay = Duration::from_millis(500);
        cleanup.config(&config);
        let name = config.connection_name.clone().unwrap();
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        topology::declare(&ch, &config).await.unwrap();
        let all = ids("k", TASKS);
        let started = Instant::now();
        publish_ids(&conn, "", &config.queue, &all).await;
        let published_in = started.elapsed();

        let done = Tally::default();
        let d = done.clone();
        let handler = handler_fn(move |task: Task| {
            let d = d.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(3)).await;
                d.add(&task.message_id().unwrap());
                Ok(())
            }
        });
        let worker = Worker::new(config.clone(), handler).unwrap();
        let (metrics, shutdown) = (worker.metrics(), worker.shutdown());
        let running = tokio::spawn(worker.run());
        let started = Instant::now();
        let mut kills = 0;
        let mut last_kill_at = 0;
        while kills < KILLS && done.distinct() < TASKS * 9 / 10 {
            // Let the new session make progress before killing it again.
            let progressed = metrics.snapshot().consumed;
            if !metrics.is_connected() || progressed < last_kill_at + 1500 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            if let Some(pid) = connection_pid(&name).await {
                rabbitmqctl(&["close_connection", &pid, "amqp-worker reconnect test"]).await;
                kills += 1;
                last_kill_at = metrics.snapshot().consumed;
                println!(
                    "reconnect: killed {pid} after {:?}, {} done",
                    started.elapsed(),
                    done.distinct()
                );
            }
        }
        wait_until(Duration::from_secs(60), "every task done", || done.distinct() == TASKS).await;
        let need = u64::from(kills);
        wait_until(Duration::from_secs(20), "a reconnect after every kill", || {
            metrics.snapshot().reconnects >= need
        })
        .await;
        let elapsed = started.elapsed();
        shutdown.trigger();
        running.await.unwrap().unwrap();
        let m = metrics.snapshot();
        let lost = done.missing(&all).len();
        println!(
            "reconnect: {TASKS} tasks (published in {published_in:?}), kills {kills}, reconnects {}, \
             handler runs {}, duplicates {}, stale acks {}, lost {lost}, in {elapsed:?} ({:.0} tasks/s)",
            m.reconnects,
            m.consumed,
            done.duplicates(),
            m.stale_settles,
            TASKS as f64 / elapsed.as_secs_f64()
        );
        assert!(kills >= 3, "the connection was killed {kills} times");
        assert!(m.reconnects >= u64::from(kills), "{} reconnects", m.reconnects);
        assert_eq!(lost, 0);
        assert_eq!(support::ready(&conn, &config.queue).await, 0);
        assert_eq!(support::ready(&conn, &config.parking_queue()).await, 0);
        conn.close().await.unwrap();
    })
    .await;
}
