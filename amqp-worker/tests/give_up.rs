//! The reconnect loop's one classification (the client's `Error::is_recoverable`): an address
//! that accepts TCP and closes before connection.start (a load balancer or port forward while
//! the broker is down) is retried until `give_up_after`, by the library and by the binary.

// Tests unwrap (a failure is the test failing) and print their figures.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::time::{Duration, Instant};

use amqp_worker::{Worker, WorkerError, handler_fn};
use support::{ClosingPeer, run_bin, test_config, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_retries_a_peer_that_closes_before_start_until_give_up() {
    within(Duration::from_secs(30), async {
        let peer = ClosingPeer::start().await;
        let mut config = test_config("closing-peer");
        config.url = peer.url();
        config.give_up_after = Duration::from_secs(2);
        config.reconnect_min_delay = Duration::from_millis(50);
        config.reconnect_max_delay = Duration::from_millis(200);
        let worker = Worker::new(config, handler_fn(|_| async { Ok(()) })).unwrap();
        let started = Instant::now();
        let err = worker.run().await.unwrap_err();
        let took = started.elapsed();
        println!(
            "closing peer (library): {err} after {took:?}, {} connections",
            peer.accepted()
        );
        assert!(matches!(err, WorkerError::GaveUp { .. }), "{err:?}");
        assert!(took >= Duration::from_secs(2), "gave up early: {took:?}");
        assert!(err.to_string().contains("before connection.start"), "{err}");
        assert!(peer.accepted() >= 3, "retried {} times", peer.accepted());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_retries_a_peer_that_closes_before_start_until_give_up() {
    within(Duration::from_secs(30), async {
        let peer = ClosingPeer::start().await;
        let url = peer.url();
        let started = Instant::now();
        let (status, _, stderr) = run_bin(
            &[
                "run",
                "--queue",
                "q",
                "--url",
                &url,
                "--give-up-after",
                "2s",
                "--",
                "true",
            ],
            Duration::from_secs(20),
        )
        .await;
        let took = started.elapsed();
        let last = stderr.lines().last().unwrap_or_default();
        println!(
            "closing peer (binary): {status} after {took:?}, {} connections: {last}",
            peer.accepted()
        );
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(took >= Duration::from_secs(2), "exited early: {took:?}");
        assert!(
            last.starts_with("amqp-worker: gave up after")
                && last.contains("before connection.start"),
            "{stderr}"
        );
        assert!(peer.accepted() >= 3, "retried {} times", peer.accepted());
    })
    .await;
}
