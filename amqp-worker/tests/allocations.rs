//! Heap allocations per task of the worker, against the real broker, counted by a per-thread
//! counting allocator on a current-thread runtime (the client's driver, the session, the
//! runners and the test share the thread, so everything the worker does is counted).
//!
//! The claim held here (ARCHITECTURE's invariants, the worker bench's `allocs/task`) is that
//! nothing is allocated per task: the delivery is moved into the pool's queue and into its
//! runner's slot, the task takes its fields by move, the handler's future is pinned where it
//! is made, and the ack is queued without a box. What remains is buffers (the client's read
//! buffer, renewed every few hundred deliveries) and the queue's growth. Measured: about
//! 0.006 allocations per task. The test fails above 0.05 per task.

// Tests unwrap (a failure is the test failing) and print their figures.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use amqp_test_support::alloc_counter::{CountingAllocator, snapshot};
use amqp_worker::{Handler, HandlerError, Task, Worker, topology};
use support::{Cleanup, connect, ids, publish_ids, test_config, within};
use tokio::sync::Notify;

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

/// Tasks counted, after as many for warm-up.
const TASKS: u64 = 10_000;
/// Allocations per task allowed: buffer renewals only.
const PER_TASK: f64 = 0.05;

/// Succeeds at once; notifies after the warm-up's last task and after the counted ones'.
struct Count {
    /// Tasks handled so far.
    done: AtomicU64,
    /// Notified at `TASKS` and at `2 * TASKS`.
    reached: Arc<Notify>,
}

impl Handler for Count {
    async fn handle(&self, _task: &Task) -> Result<(), HandlerError> {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if done == TASKS || done == 2 * TASKS {
            self.reached.notify_one();
        }
        Ok(())
    }
}

#[test]
fn no_allocation_per_task() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut cleanup = Cleanup::new();
    rt.block_on(within(Duration::from_secs(120), async {
        let mut config = test_config("allocs");
        config.prefetch = 64;
        config.concurrency = 32;
        cleanup.config(&config);
        // Every task is queued before the worker starts: publishing is not counted.
        let conn = connect().await;
        let channel = conn.open_channel().await.unwrap();
        topology::declare(&channel, &config).await.unwrap();
        let all = ids("a", usize::try_from(2 * TASKS).unwrap());
        publish_ids(&conn, "", &config.queue, &all).await;
        conn.close().await.unwrap();

        let reached = Arc::new(Notify::new());
        let handler = Count {
            done: AtomicU64::new(0),
            reached: reached.clone(),
        };
        let worker = Worker::new(config.clone(), handler).unwrap();
        let (metrics, shutdown) = (worker.metrics(), worker.shutdown());
        let running = tokio::spawn(worker.run());
        reached.notified().await;
        let before = snapshot();
        reached.notified().await;
        let counts = snapshot().since(before);
        shutdown.trigger();
        running.await.unwrap().unwrap();

        let per_task = counts.allocations as f64 / TASKS as f64;
        println!(
            "worker: {per_task:.4} allocations per task ({} over {TASKS}, {} small), {} \
             succeeded",
            counts.allocations,
            counts.small,
            metrics.snapshot().succeeded
        );
        assert_eq!(metrics.snapshot().succeeded, 2 * TASKS, "every task acked");
        assert!(
            per_task <= PER_TASK,
            "{per_task:.4} allocations per task (at most {PER_TASK}: buffer renewals only): \
             {counts:?}"
        );
    }));
}
