//! Recovery as a layer with hooks, against the real broker at `AMQP_URL`: a hook re-declares
//! what the client does not record (here a queue declared by another connection and deleted
//! behind the client's back) on a channel of recovery's own before the application's calls go
//! through, and observes the loss and the recovery; the first connection is retried by the
//! same policy when asked (through a proxy that refuses, then accepts), and fails at once when
//! not.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // tests: panics and printed figures are the point

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use amqp_client::{
    Channel, Connection, Error, QueueDeclareOptions, QueueDeleteOptions, RecoveryEvent,
    RecoveryHook, RecoveryPolicy,
};
use amqp_test_support::fault_proxy::FaultProxy;
use amqp_test_support::{broker_addr, unique_name};
use common::recovery::{kill_connection, quick_policy};
use common::{Cleanup, config, connect, within};

/// Bound on each test here.
const LIMIT: Duration = Duration::from_secs(60);

/// Re-declares `queue` on each recovery and counts what it saw.
struct Redeclare {
    queue: String,
    lost: AtomicU32,
    recovered: AtomicU32,
    redeclared: AtomicU32,
}

impl RecoveryHook for Redeclare {
    fn redeclare<'a>(
        &'a self,
        channel: &'a Channel,
    ) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>> {
        Box::pin(async move {
            channel
                .queue_declare(&self.queue, QueueDeclareOptions::default())
                .await?;
            self.redeclared.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }

    fn lost(&self, _error: &Error) {
        self.lost.fetch_add(1, Ordering::SeqCst);
    }

    fn recovered(&self, _attempts: u32, _downtime: Duration) {
        self.recovered.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_hook_redeclares_what_the_client_does_not_record_before_calls_go_through() {
    let mut cleanup = Cleanup::new();
    within(LIMIT, async {
        let queue = cleanup.queue("hook-redeclared");
        let hook = Arc::new(Redeclare {
            queue: queue.clone(),
            lost: AtomicU32::new(0),
            recovered: AtomicU32::new(0),
            redeclared: AtomicU32::new(0),
        });
        let name = unique_name("recovery-hook");
        let mut cfg = config().with_recovery(quick_policy().with_hook(SharedHook(hook.clone())));
        cfg.connection_name = Some(name.clone());
        let conn = Connection::connect_with(cfg).await.unwrap();
        let ch = conn.open_channel().await.unwrap();
        // The queue is not this connection's: another one declares it, and deletes it.
        let other = connect().await;
        let och = other.open_channel().await.unwrap();
        och.queue_declare(&queue, QueueDeclareOptions::default())
            .await
            .unwrap();
        och.queue_delete(&queue, QueueDeleteOptions::default())
            .await
            .unwrap();

        let mut events = conn.recovery_events();
        assert_eq!(kill_connection(&name).await, 1);
        lost(&mut events).await;
        // A call made during recovery goes through only after the hook ran: the queue is
        // there for it.
        let passive = QueueDeclareOptions::default().with_passive();
        let info = ch.queue_declare(&queue, passive.clone()).await.unwrap();
        assert_eq!(info.name, queue);
        assert_eq!(hook.lost.load(Ordering::SeqCst), 1);
        assert_eq!(hook.redeclared.load(Ordering::SeqCst), 1);
        assert_eq!(hook.recovered.load(Ordering::SeqCst), 1);
        // What the hook declared was not recorded: a second loss redeclares it through the
        // hook again, once.
        assert_eq!(kill_connection(&name).await, 1);
        lost(&mut events).await;
        ch.queue_declare(&queue, passive).await.unwrap();
        assert_eq!(hook.redeclared.load(Ordering::SeqCst), 2);
        conn.close().await.unwrap();
        other.close().await.unwrap();
    })
    .await;
}

/// Waits for the client to see the loss.
async fn lost(events: &mut tokio::sync::broadcast::Receiver<RecoveryEvent>) {
    loop {
        if let Ok(RecoveryEvent::Lost(_)) = events.recv().await {
            return;
        }
    }
}

/// A hook shared with the test, which reads its counters.
struct SharedHook(Arc<Redeclare>);

impl RecoveryHook for SharedHook {
    fn redeclare<'a>(
        &'a self,
        channel: &'a Channel,
    ) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>> {
        self.0.redeclare(channel)
    }
    fn lost(&self, error: &Error) {
        self.0.lost(error);
    }
    fn recovered(&self, attempts: u32, downtime: Duration) {
        self.0.recovered(attempts, downtime);
    }
}

#[tokio::test]
async fn the_first_connection_is_retried_by_the_policy_when_asked() {
    within(LIMIT, async {
        let proxy = FaultProxy::start(broker_addr()).await.unwrap();
        proxy.refuse(true);
        let mut cfg = config();
        cfg.host = "127.0.0.1".into();
        cfg.port = proxy.addr().port();

        // Not asked: the refusal is the answer, at once.
        let plain = cfg.clone().with_recovery(quick_policy());
        let started = Instant::now();
        let err = Connection::connect_with(plain).await.unwrap_err();
        assert!(err.is_recoverable(), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));

        // Asked: attempts go on with backoff until the proxy lets them through.
        let policy = RecoveryPolicy {
            retry_initial_connect: true,
            ..quick_policy()
        };
        let retrying = cfg.clone().with_recovery(policy);
        let opening = tokio::spawn(Connection::connect_with(retrying));
        while proxy.accepted() < 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        proxy.refuse(false);
        let conn = opening.await.unwrap().unwrap();
        println!(
            "first connection after {} refused attempts",
            proxy.accepted() - 1
        );
        assert!(conn.is_open());
        conn.close().await.unwrap();

        // Asked, but the deadline passes: RecoveryFailed, with the last error.
        proxy.refuse(true);
        let policy = RecoveryPolicy {
            retry_initial_connect: true,
            give_up_after: Some(Duration::from_millis(500)),
            ..quick_policy()
        };
        let started = Instant::now();
        let err = Connection::connect_with(cfg.with_recovery(policy))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::RecoveryFailed { .. }), "{err:?}");
        assert!(started.elapsed() >= Duration::from_millis(450));
    })
    .await;
}
