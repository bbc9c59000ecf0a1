//! RabbitMQ tutorial 2, "Work Queues" (<https://www.rabbitmq.com/tutorials/tutorial-two-python>):
//! a durable task queue, persistent messages, and two workers sharing the tasks fairly with
//! prefetch 1 and manual acknowledgements. A task's dots are seconds of work in the tutorial;
//! here each dot is 50 ms so the program finishes quickly.
//!
//! Producer and workers run in this one program against the broker at `AMQP_URL`; the queue
//! has a unique name and is deleted at the end.
//!
//! `cargo run -p amqp091-client --example work_queues`

// An example's output is its point.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use amqp_client::prelude::*;
use tokio::sync::mpsc;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const TASKS: usize = 10;
const WORKERS: usize = 2;

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions::default().with_durable()
}

/// One worker: takes a task, "works" 50 ms per dot, acks, reports. Ends when its consumer is
/// cancelled; returns how many tasks it did.
async fn worker(
    id: usize,
    channel: Channel,
    queue: String,
    done: mpsc::Sender<(usize, String)>,
    ready: mpsc::Sender<(Channel, String)>,
) -> Result<usize> {
    // Fair dispatch: no new task until the previous one is acknowledged.
    channel.basic_qos(1, QosOptions::default()).await?;
    let mut consumer = channel.basic_consume(&queue, Default::default()).await?;
    ready
        .send((channel.clone(), consumer.tag().to_owned()))
        .await?;
    let mut count = 0;
    while let Some(delivery) = consumer.recv().await {
        let delivery = delivery?;
        let task = String::from_utf8_lossy(&delivery.body).into_owned();
        let dots = task.chars().filter(|&c| c == '.').count() as u64;
        tokio::time::sleep(Duration::from_millis(50 * dots)).await;
        delivery.ack()?;
        count += 1;
        done.send((id, task)).await?;
    }
    Ok(count)
}

#[tokio::main]
async fn main() -> Result<()> {
    let conn = Connection::connect(&amqp_url()).await?;
    let queue = format!("task_queue-{}", std::process::id());
    let producer = conn.open_channel().await?;
    producer.queue_declare(&queue, durable()).await?;

    let (done_tx, mut done_rx) = mpsc::channel(TASKS);
    let (ready_tx, mut ready_rx) = mpsc::channel(WORKERS);
    let mut workers = Vec::new();
    for id in 1..=WORKERS {
        let channel = conn.open_channel().await?;
        channel.queue_declare(&queue, durable()).await?;
        workers.push(tokio::spawn(worker(
            id,
            channel,
            queue.clone(),
            done_tx.clone(),
            ready_tx.clone(),
        )));
    }
    let mut consumers = Vec::new();
    for _ in 0..WORKERS {
        consumers.push(ready_rx.recv().await.ok_or("a worker failed to start")?);
    }

    let persistent = BasicProperties::persistent();
    for i in 1..=TASKS {
        let task = format!("Task {i}{}", ".".repeat(1 + i % 3));
        producer
            .basic_publish(
                "",
                &queue,
                PublishOptions::default(),
                &persistent,
                task.clone(),
            )
            .await?
            // Outside confirm mode the outcome is known at once: NotRequested.
            .await?;
        println!(" [x] Sent '{task}'");
    }

    for _ in 0..TASKS {
        let (id, task) = tokio::time::timeout(Duration::from_secs(10), done_rx.recv())
            .await
            .map_err(|_| "tasks not done within 10 s")?
            .ok_or("workers ended early")?;
        println!(" [x] Worker {id} done '{task}'");
    }
    for (channel, tag) in consumers {
        channel.basic_cancel(&tag).await?;
    }
    let mut per_worker = Vec::new();
    for w in workers {
        per_worker.push(w.await??);
    }
    producer.queue_delete(&queue, Default::default()).await?;
    conn.close().await?;
    let total: usize = per_worker.iter().sum();
    println!("work_queues: {total} tasks done by {WORKERS} workers {per_worker:?}");
    if total != TASKS {
        return Err(format!("expected {TASKS} tasks done, counted {total}").into());
    }
    Ok(())
}
