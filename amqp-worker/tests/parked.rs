//! `amqp-worker parked list` and `parked peek` against the real broker: they show the parked
//! tasks with their failure record, and leave the parking queue exactly as it was (same
//! messages, same order).

// Tests unwrap (a failure is the test failing) and print their figures.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use amqp_client::GetOptions;
use std::time::Duration;

use amqp_worker::retry::{FailureRecord, parked_properties};
use amqp_worker::{ParkReason, Publisher, task_properties, topology};
use support::{Cleanup, connect, ready, run_bin, test_config, within};

/// The message ids in `queue`, head first, taken without ack and handed back.
async fn ids_in_order(conn: &amqp_client::Connection, queue: &str) -> Vec<String> {
    let ch = conn.open_channel().await.unwrap();
    let mut ids = Vec::new();
    while let Some(got) = ch.basic_get(queue, GetOptions::default()).await.unwrap() {
        ids.push(
            got.delivery
                .properties
                .message_id()
                .and_then(|m| m.as_str().map(str::to_owned))
                .unwrap(),
        );
    }
    ch.close().await.unwrap();
    ids
}

#[tokio::test]
async fn parked_list_and_peek_show_the_tasks_and_move_nothing() {
    let mut cleanup = Cleanup::new();
    within(Duration::from_secs(60), async {
        let config = test_config("parked-list");
        cleanup.config(&config);
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        topology::declare(&ch, &config).await.unwrap();
        let publisher = Publisher::open(&conn).await.unwrap();
        let ids: Vec<String> = (1..=3).map(|i| format!("pk-{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            let record = FailureRecord::new(
                None,
                3,
                &format!("boom {i}\nsecond line"),
                "",
                &config.queue,
            );
            let props =
                parked_properties(&task_properties(id), &record, ParkReason::AttemptsExhausted);
            publisher
                .publish("", &config.parking_queue(), &props, format!("body of {id}"))
                .await
                .unwrap();
        }
        let before = ids_in_order(&conn, &config.parking_queue()).await;
        assert_eq!(before, ids);

        let (status, stdout, stderr) = run_bin(
            &["parked", "list", "--queue", &config.queue],
            Duration::from_secs(20),
        )
        .await;
        println!("parked list:\n{stdout}");
        assert!(status.success(), "{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 4, "{stdout}");
        for (i, id) in ids.iter().enumerate() {
            assert!(
                lines[i].contains(id)
                    && lines[i].contains("attempts 3")
                    && lines[i].contains("attempts-exhausted")
                    && lines[i].contains(&format!("boom {i}"))
                    && !lines[i].contains("second line"),
                "{}",
                lines[i]
            );
        }
        assert!(lines[3].starts_with("3 task(s) in"), "{stdout}");

        let (status, stdout, stderr) = run_bin(
            &["parked", "peek", "--queue", &config.queue, "--json", "pk-2"],
            Duration::from_secs(20),
        )
        .await;
        assert!(status.success(), "{stderr}");
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        println!("parked peek: {v}");
        assert_eq!(v["position"], 2);
        assert_eq!(v["body"], "body of pk-2");
        assert_eq!(v["park_reason"], "attempts-exhausted");
        assert_eq!(v["last_error"], "boom 1\nsecond line");

        let (status, _, stderr) = run_bin(
            &["parked", "peek", "--queue", &config.queue, "no-such-id"],
            Duration::from_secs(20),
        )
        .await;
        assert_eq!(status.code(), Some(1));
        assert!(
            stderr.contains("no task with message id 'no-such-id' among the 3"),
            "{stderr}"
        );

        // Nothing moved, nothing reordered.
        assert_eq!(ready(&conn, &config.parking_queue()).await, 3);
        assert_eq!(ids_in_order(&conn, &config.parking_queue()).await, ids);
        conn.close().await.unwrap();
    })
    .await;
}
