//! The `amqp-worker` binary's failures and one-shot commands against the real broker: bad
//! configuration (unknown exchange type, a bad config file, a queue that exists with other
//! arguments, an unreachable broker) exits non-zero with one sentence; `publish` fails on an
//! unroutable task and delays with `--delay`; `demo` runs and reports nothing lost.

// Tests unwrap (a failure is the test failing) and print their figures.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::time::{Duration, Instant};

use amqp_client::GetOptions;
use amqp_client::QueueDeclareOptions;
use amqp_client::amqp_codec::FieldTable;
use amqp_test_support::unique_name;
use support::{Cleanup, connect, ready, run_bin, within};

/// The last line of stderr, checked to be the one `amqp-worker: ...` sentence, with no panic.
#[track_caller]
fn sentence(stderr: &str) -> String {
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with("amqp-worker: "), "{stderr}");
    last
}

#[tokio::test]
async fn bad_configuration_exits_non_zero_with_one_sentence() {
    let mut cleanup = Cleanup::new();
    within(Duration::from_secs(60), async {
        // Unknown exchange type: refused before connecting; stderr is the one sentence.
        let (status, _, stderr) = run_bin(
            &[
                "run",
                "--queue",
                "q",
                "--exchange",
                "x",
                "--exchange-type",
                "fanoutt",
                "--",
                "true",
            ],
            Duration::from_secs(10),
        )
        .await;
        println!("unknown type: {status}: {}", stderr.trim());
        assert_eq!(status.code(), Some(2));
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(sentence(&stderr).contains("unknown exchange type 'fanoutt'"));

        // A config file with an unknown key.
        let path = std::env::temp_dir().join(format!("{}.toml", unique_name("amqp-worker-bad")));
        std::fs::write(&path, "queue = \"q\"\nconcurrensy = 4\n").unwrap();
        let (status, _, stderr) = run_bin(
            &["run", "--config", path.to_str().unwrap(), "--", "true"],
            Duration::from_secs(10),
        )
        .await;
        let _ = std::fs::remove_file(&path);
        println!("bad file: {status}: {}", stderr.trim());
        assert_eq!(status.code(), Some(2));
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            sentence(&stderr).contains("line 2: unknown field `concurrensy`"),
            "{stderr}"
        );

        // The queue exists with other arguments: 406, said once, no retry loop.
        let q = unique_name("amqp-worker-test-406");
        cleanup.queue(&q);
        cleanup.queue(&format!("{q}.parked"));
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let args: FieldTable = FieldTable::builder()
            .insert("x-max-length", 10i32)
            .build()
            .unwrap();
        let durable = QueueDeclareOptions::default().with_durable();
        ch.queue_declare(&q, durable.with_arguments(args))
            .await
            .unwrap();
        let (status, _, stderr) = run_bin(
            &["run", "--queue", &q, "--", "true"],
            Duration::from_secs(20),
        )
        .await;
        let line = sentence(&stderr);
        println!("406: {status}: {line}");
        assert_eq!(status.code(), Some(1));
        assert!(
            line.contains(&format!("declaring queue '{q}' failed"))
                && line.contains("406 PRECONDITION_FAILED"),
            "{line}"
        );

        // An unreachable broker: retried with backoff until the give-up deadline, then one
        // sentence and a non-zero exit.
        let started = Instant::now();
        let (status, _, stderr) = run_bin(
            &[
                "run",
                "--queue",
                "q",
                "--url",
                "amqp://guest:guest@127.0.0.1:1/%2f",
                "--give-up-after",
                "2s",
                "--",
                "true",
            ],
            Duration::from_secs(20),
        )
        .await;
        let line = sentence(&stderr);
        println!(
            "unreachable: {status} after {:?}: {line}",
            started.elapsed()
        );
        assert_eq!(status.code(), Some(1));
        assert!(
            line.contains("gave up after") && line.contains("Connection refused"),
            "{line}"
        );
        assert!(started.elapsed() >= Duration::from_secs(2));
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn publish_fails_on_unroutable_tasks_and_delays_with_delay() {
    let mut cleanup = Cleanup::new();
    within(Duration::from_secs(60), async {
        let missing = unique_name("amqp-worker-test-nobody");
        let (status, stdout, stderr) = run_bin(
            &["publish", "--routing-key", &missing, "one", "two"],
            Duration::from_secs(20),
        )
        .await;
        let line = sentence(&stderr);
        println!("publish unroutable: {status}: {line}");
        assert_eq!(status.code(), Some(1));
        assert!(stdout.is_empty());
        assert!(
            line.contains("2 of 2 task(s)") && line.contains("2 returned as unroutable"),
            "{line}"
        );

        let q = unique_name("amqp-worker-test-pub");
        cleanup.queue(&q);
        let delay_queue = amqp_worker::publisher::delay_queue_name("", &q, Duration::from_secs(1));
        cleanup.queue(&delay_queue);
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        let durable = QueueDeclareOptions::default().with_durable();
        ch.queue_declare(&q, durable)
            .await
            .unwrap();
        let (status, stdout, _) = run_bin(
            &["publish", "--routing-key", &q, "a", "b", "c"],
            Duration::from_secs(20),
        )
        .await;
        assert!(status.success());
        assert!(stdout.contains("published 3 task(s)"), "{stdout}");
        assert_eq!(ready(&conn, &q).await, 3);

        let sent = Instant::now();
        let (status, stdout, _) = run_bin(
            &["publish", "--routing-key", &q, "--delay", "1s", "later"],
            Duration::from_secs(20),
        )
        .await;
        assert!(status.success(), "{stdout}");
        assert_eq!(ready(&conn, &q).await, 3, "not there before its delay");
        while ready(&conn, &q).await < 4 {
            assert!(
                sent.elapsed() < Duration::from_secs(10),
                "the delayed task never arrived"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let arrived = sent.elapsed();
        // A delayed task to a queue that does not exist: refused before anything is sent.
        let (status, stdout, stderr) = run_bin(
            &["publish", "--routing-key", &missing, "--delay", "1s", "never"],
            Duration::from_secs(20),
        )
        .await;
        println!("publish delayed to nowhere: {status}: {}", stderr.trim());
        assert_eq!(status.code(), Some(1), "{stdout}");
        assert!(
            sentence(&stderr).contains(&format!("nothing was published: the delayed message's target queue '{missing}' does not exist")),
            "{stderr}"
        );
        println!("publish delayed: {stdout} arrived after {arrived:?}");
        assert!(arrived >= Duration::from_secs(1));
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn demo_runs_and_loses_nothing() {
    within(Duration::from_secs(90), async {
        let (status, stdout, stderr) =
            run_bin(&["demo", "--count", "600"], Duration::from_secs(80)).await;
        println!("demo stdout:\n{stdout}\ndemo stderr:\n{stderr}");
        assert!(status.success(), "{stderr}");
        let figure = |name: &str| -> u64 {
            let line = stdout
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} line"));
            line[name.len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert_eq!(figure("published"), 600);
        assert_eq!(figure("processed"), 600);
        assert_eq!(figure("dead-lettered"), 6);
        assert_eq!(figure("retried"), 60 + 12);
        assert_eq!(figure("lost"), 0);
    })
    .await;
}

#[tokio::test]
async fn publish_headers_are_strings_unless_typed() {
    use amqp_client::amqp_codec::FieldValue;
    let mut cleanup = Cleanup::new();
    within(Duration::from_secs(30), async {
        let q = unique_name("amqp-worker-test-headers");
        cleanup.queue(&q);
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&q, QueueDeclareOptions::default())
            .await
            .unwrap();
        let (status, _, stderr) = run_bin(
            &[
                "publish",
                "--routing-key",
                &q,
                "--header",
                "zip=02134",
                "--header",
                "count:int=5",
                "--header",
                "urgent:bool=true",
                "--header",
                "flag=true",
                "x",
            ],
            Duration::from_secs(20),
        )
        .await;
        assert!(status.success(), "{stderr}");
        let got = ch
            .basic_get(&q, GetOptions::no_ack())
            .await
            .unwrap()
            .unwrap();
        let h = got.delivery.properties.headers().unwrap();
        println!("typed headers: {h:?}");
        assert_eq!(h.get("zip").unwrap().as_str(), Some("02134"));
        assert_eq!(h.get("flag").unwrap().as_str(), Some("true"));
        assert_eq!(h.get("count"), Some(FieldValue::I64(5)));
        assert_eq!(h.get("urgent"), Some(FieldValue::Bool(true)));
        // A value that does not read as its type is refused before anything is sent.
        let (status, _, stderr) = run_bin(
            &[
                "publish",
                "--routing-key",
                &q,
                "--header",
                "count:int=five",
                "x",
            ],
            Duration::from_secs(20),
        )
        .await;
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(
            sentence(&stderr).contains("'five' is not a 64-bit integer"),
            "{stderr}"
        );
        assert_eq!(ready(&conn, &q).await, 0);
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn publish_takes_its_queue_from_config_or_the_environment() {
    let mut cleanup = Cleanup::new();
    within(Duration::from_secs(30), async {
        let q = unique_name("amqp-worker-test-pubcfg");
        cleanup.queue(&q);
        let conn = connect().await;
        let ch = conn.open_channel().await.unwrap();
        ch.queue_declare(&q, QueueDeclareOptions::default())
            .await
            .unwrap();
        let path = std::env::temp_dir().join(format!("{q}.toml"));
        let url = amqp_test_support::broker_url();
        std::fs::write(&path, format!("url = \"{url}\"\nqueue = \"{q}\"\n")).unwrap();
        let (status, stdout, stderr) = run_bin(
            &["publish", "--config", path.to_str().unwrap(), "from-config"],
            Duration::from_secs(20),
        )
        .await;
        let _ = std::fs::remove_file(&path);
        assert!(status.success(), "{stderr}");
        assert!(stdout.contains(&format!("routing key '{q}'")), "{stdout}");
        let mut cmd = tokio::process::Command::from(support::bin());
        cmd.args(["publish", "from-env"])
            .env("AMQP_WORKER_QUEUE", &q);
        let out = cmd.output().await.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(ready(&conn, &q).await, 2);
        // Neither a queue nor a routing key: one sentence, exit 2.
        let (status, _, stderr) = run_bin(&["publish", "x"], Duration::from_secs(10)).await;
        println!("publish without a queue: {}", stderr.trim());
        assert_eq!(status.code(), Some(2));
        assert!(
            sentence(&stderr).contains("publish needs a queue"),
            "{stderr}"
        );
        conn.close().await.unwrap();
    })
    .await;
}
