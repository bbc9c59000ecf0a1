//! Recovery against brokers this test starts and stops itself (`scripts/rabbit-cluster`): a
//! single node restarted with `stop_app` / `start_app`, and a three-node cluster whose node the
//! client is connected to is stopped mid-stream while a quorum queue is published to and
//! consumed from. The shared broker on 5672 is never touched. Where RabbitMQ's server scripts
//! or Erlang are missing, the tests fail in CI (`CI=true`) and elsewhere skip, saying why
//! (`amqp_test_support::skip_or_fail`).

#![allow(clippy::unwrap_used, clippy::print_stdout)] // tests: panics and printed figures are the point

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use amqp_client::BindOptions;
use amqp_client::amqp_codec::table::FieldTable;
use amqp_client::{
    Connection, ConnectionConfig, ConsumeOptions, ExchangeDeclareOptions, ExchangeKind,
    PublishOptions, QueueDeclareOptions, RecoveryEvent, RecoveryPolicy,
};
use common::recovery::{props, publish_all};
use common::{consume_with_prefetch, within};

/// Bound on each test: node start-up (~25 s for three on two cores) and the traffic.
const LIMIT: Duration = Duration::from_secs(300);

/// Private nodes, stopped (and their directory removed) on drop.
struct Nodes {
    dir: std::path::PathBuf,
    ports: Vec<u16>,
}

fn script() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/rabbit-cluster").to_owned()
}

impl Nodes {
    /// Starts `n` clustered nodes, or returns `None` after [`skip_or_fail`] said why they
    /// cannot run here (in CI, that fails the test).
    ///
    /// [`skip_or_fail`]: amqp_test_support::skip_or_fail
    fn start(n: usize) -> Option<Self> {
        let dir = std::env::temp_dir().join(amqp_test_support::unique_name("amqp-nodes"));
        let out = Command::new(script())
            .args(["start", dir.to_str().unwrap(), &n.to_string()])
            .output()
            .unwrap();
        match out.status.code() {
            Some(0) => {}
            Some(3) => {
                amqp_test_support::skip_or_fail(&format!(
                    "private RabbitMQ nodes cannot run here: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
                return None;
            }
            _ => panic!(
                "rabbit-cluster start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
        let stdout = String::from_utf8(out.stdout).unwrap();
        let value = |key: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap()
                .to_owned()
        };
        let ports = value("PORTS")
            .split(' ')
            .map(|p| p.parse().unwrap())
            .collect();
        println!("{n} private node(s) up in {} s", value("START_SECS"));
        Some(Self { dir, ports })
    }

    /// rabbitmqctl against node `i` (1-based).
    async fn ctl(&self, i: usize, args: &[&str]) {
        let mut cmd = Command::new(script());
        cmd.arg("ctl").arg(&self.dir).arg(i.to_string()).args(args);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .unwrap();
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?} on node {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A recovering configuration for these nodes, node `first` tried first.
    fn config(&self, policy: RecoveryPolicy) -> ConnectionConfig {
        let mut cfg = ConnectionConfig::default().with_recovery(policy);
        cfg.port = self.ports[0];
        cfg.fallback_addresses = self.ports[1..]
            .iter()
            .map(|&p| ("127.0.0.1".to_owned(), p))
            .collect();
        cfg.heartbeat = 5;
        cfg
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(&self.dir).output();
    }
}

fn patient() -> RecoveryPolicy {
    RecoveryPolicy {
        min_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        give_up_after: Some(Duration::from_secs(120)),
        wait_while_recovering: Duration::from_secs(120),
        ..RecoveryPolicy::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_keeps_durable_topology_and_messages_and_renames_server_named_queues() {
    within(LIMIT, async {
        let Some(nodes) = Nodes::start(1) else { return };
        let conn = Connection::connect_with(nodes.config(patient()))
            .await
            .unwrap();
        let mut events = conn.recovery_events();
        let ch = conn.open_channel().await.unwrap();
        let durable = QueueDeclareOptions::default().with_durable();
        ch.queue_declare("restart-durable", durable.clone())
            .await
            .unwrap();
        ch.exchange_declare(
            "restart-fanout",
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default().with_durable(),
        )
        .await
        .unwrap();
        let exclusive = QueueDeclareOptions::default().with_exclusive();
        let old = ch.queue_declare("", exclusive).await.unwrap().name;
        ch.queue_bind(&old, "restart-fanout", "", BindOptions::default())
            .await
            .unwrap();
        let no_ack = ConsumeOptions::default().with_no_ack();
        let mut consumer = ch.basic_consume(&old, no_ack).await.unwrap();
        ch.confirm_select().await.unwrap();
        for i in 0..50 {
            let c = ch
                .basic_publish(
                    "",
                    "restart-durable",
                    PublishOptions::default(),
                    &props(),
                    format!("m{i}"),
                )
                .await
                .unwrap();
            assert!(c.await.unwrap().is_acked());
        }

        let stopped = Instant::now();
        nodes.ctl(1, &["stop_app"]).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        nodes.ctl(1, &["start_app"]).await;
        let (mut renamed, mut failed_attempts) = (None, 0);
        let downtime = loop {
            match events.recv().await.unwrap() {
                RecoveryEvent::QueueRenamed { old, new } => renamed = Some((old, new)),
                RecoveryEvent::AttemptFailed { .. } => failed_attempts += 1,
                RecoveryEvent::Recovered { downtime, .. } => break downtime,
                RecoveryEvent::Failed(err) => panic!("{err}"),
                _ => {}
            }
        };
        let (o, new) = renamed.expect("the server-named queue came back renamed");
        assert_eq!(o, old);
        // Durable queue and persistent messages survived; the same channel handle reads them.
        let info = ch.queue_declare("restart-durable", durable).await.unwrap();
        assert_eq!(info.message_count, 50);
        // The new exclusive queue is bound and consumed as the old one was.
        let c = ch
            .basic_publish(
                "restart-fanout",
                "",
                PublishOptions::default(),
                &props(),
                "fanned",
            )
            .await
            .unwrap();
        assert!(c.await.unwrap().is_acked());
        let got = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(&got.body[..], b"fanned");
        println!(
            "restart: down {downtime:?} ({failed_attempts} refused attempts, {:?} from stop_app), \
             50/50 persistent messages kept, {old} renamed {new}",
            stopped.elapsed()
        );
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_node_stopped_mid_stream_fails_over_without_losing_confirmed_messages() {
    within(LIMIT, async {
        const MESSAGES: u32 = 3000;
        let Some(nodes) = Nodes::start(3) else { return };
        let conn = Connection::connect_with(nodes.config(patient()))
            .await
            .unwrap();
        let mut events = conn.recovery_events();
        let quorum = FieldTable::builder()
            .insert("x-queue-type", "quorum")
            .build()
            .unwrap();
        let durable = QueueDeclareOptions::default().with_durable();
        let publisher = conn.open_channel().await.unwrap();
        publisher
            .queue_declare("failover-quorum", durable.with_arguments(quorum))
            .await
            .unwrap();
        publisher.confirm_select().await.unwrap();
        let (_consumer_ch, mut consumer) =
            consume_with_prefetch(&conn, "failover-quorum", 100).await;

        let started = Instant::now();
        let publishing = tokio::spawn(publish_all(
            publisher.clone(),
            "failover-quorum".into(),
            (0..MESSAGES).collect(),
        ));
        let stopping = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            nodes.ctl(1, &["stop_app"]).await; // the node the client is connected to
            let recovered = loop {
                match events.recv().await.unwrap() {
                    RecoveryEvent::Recovered {
                        address, downtime, ..
                    } => break (address, downtime),
                    RecoveryEvent::Failed(err) => panic!("{err}"),
                    _ => {}
                }
            };
            (nodes, recovered)
        });
        let mut seen: BTreeMap<u32, u32> = BTreeMap::new();
        let mut stale = 0;
        while seen.len() < MESSAGES as usize {
            let d = consumer
                .recv()
                .await
                .expect("the consumer survives")
                .unwrap();
            let id: u32 = std::str::from_utf8(&d.body).unwrap().parse().unwrap();
            *seen.entry(id).or_default() += 1;
            if d.ack().is_err() {
                stale += 1;
            }
        }
        let (published, confirmed) = publishing.await.unwrap();
        let (nodes, (address, downtime)) = stopping.await.unwrap();
        let lost = (0..MESSAGES).filter(|id| !seen.contains_key(id)).count();
        let duplicated: u32 = seen.values().map(|n| n - 1).sum();
        println!(
            "cluster failover to {address} after {downtime:?}: published {published}, confirmed \
             {confirmed}, consumed {}, lost {lost}, duplicated {duplicated}, stale acks {stale}, \
             total {:?}",
            seen.values().sum::<u32>(),
            started.elapsed()
        );
        assert_eq!(lost, 0);
        assert_ne!(
            address,
            format!("127.0.0.1:{}", nodes.ports[0]),
            "failed over to another node"
        );
        drop(consumer);
        conn.close().await.unwrap();
        drop(nodes);
    })
    .await;
}
