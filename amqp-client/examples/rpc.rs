//! RabbitMQ tutorial 6, "RPC" (<https://www.rabbitmq.com/tutorials/tutorial-six-python>): a
//! server consumes requests from `rpc_queue` and answers each to the request's `reply_to`
//! queue with the request's `correlation_id`; the client sends several calls at once over one
//! exclusive callback queue and matches the answers by correlation id.
//!
//! Server and client run in this one program (on two connections) against the broker at
//! `AMQP_URL`; the request queue has a unique name and is deleted at the end.
//!
//! `cargo run -p amqp091-client --example rpc`

// An example's output is its point.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::time::Duration;

use amqp_client::prelude::*;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn fib(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    a
}

/// The server: answers requests until its consumer is cancelled; returns how many it served.
async fn serve(
    channel: Channel,
    queue: String,
    ready: tokio::sync::oneshot::Sender<String>,
) -> Result<usize> {
    channel.basic_qos(1, Default::default()).await?;
    let mut consumer = channel.basic_consume(&queue, Default::default()).await?;
    let _ = ready.send(consumer.tag().to_owned());
    let mut served = 0;
    while let Some(request) = consumer.recv().await {
        let request = request?;
        let n: u64 = String::from_utf8_lossy(&request.body).parse()?;
        println!(" [.] fib({n})");
        let reply_to = request
            .properties
            .reply_to()
            .ok_or("request without reply_to")?;
        let mut props = BasicProperties::builder();
        if let Some(id) = request.properties.correlation_id() {
            props = props.with_correlation_id(id);
        }
        channel
            .basic_publish(
                "",
                reply_to,
                PublishOptions::default(),
                &props.build()?,
                fib(n).to_string(),
            )
            .await?
            // Outside confirm mode the outcome is known at once: NotRequested.
            .await?;
        request.ack()?;
        served += 1;
    }
    Ok(served)
}

#[tokio::main]
async fn main() -> Result<()> {
    let url = amqp_url();
    let rpc_queue = format!("rpc_queue-{}", std::process::id());

    // Server side.
    let server_conn = Connection::connect(&url).await?;
    let server = server_conn.open_channel().await?;
    server
        .queue_declare(&rpc_queue, QueueDeclareOptions::default())
        .await?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let server_task = tokio::spawn(serve(server.clone(), rpc_queue.clone(), ready_tx));
    let server_tag = ready_rx.await?;
    println!(" [x] Awaiting RPC requests on {rpc_queue}");

    // Client side: one exclusive callback queue for all calls.
    let client_conn = Connection::connect(&url).await?;
    let client = client_conn.open_channel().await?;
    let callback = client
        .queue_declare("", QueueDeclareOptions::default().with_exclusive())
        .await?;
    let mut replies = client
        .basic_consume(&callback.name, ConsumeOptions::default().with_no_ack())
        .await?;

    let calls: Vec<u64> = (20..=30).collect();
    let mut pending = HashMap::new();
    for &n in &calls {
        let correlation_id = format!("call-{n}-{}", std::process::id());
        let props = BasicProperties::builder()
            .with_reply_to(&callback.name)
            .with_correlation_id(&correlation_id)
            .build()?;
        client
            .basic_publish(
                "",
                &rpc_queue,
                PublishOptions::default(),
                &props,
                n.to_string(),
            )
            .await?
            // Outside confirm mode the outcome is known at once: NotRequested.
            .await?;
        println!(" [x] Requesting fib({n})");
        pending.insert(correlation_id, n);
    }
    while !pending.is_empty() {
        let reply = tokio::time::timeout(Duration::from_secs(10), replies.recv())
            .await
            .map_err(|_| "an RPC reply did not arrive within 10 s")?
            .ok_or("the reply consumer ended")??;
        let id = reply
            .properties
            .correlation_id()
            .ok_or("reply without correlation_id")?;
        // Not ours (or a duplicate): ignore it, as the tutorial does.
        let Some(n) = pending.remove(id.as_str().unwrap_or_default()) else {
            continue;
        };
        let value: u64 = String::from_utf8_lossy(&reply.body).parse()?;
        if value != fib(n) {
            return Err(format!("fib({n}) answered {value}, expected {}", fib(n)).into());
        }
        println!(" [.] Got fib({n}) = {value}");
    }

    server.basic_cancel(&server_tag).await?;
    let served = server_task.await??;
    server.queue_delete(&rpc_queue, Default::default()).await?;
    client_conn.close().await?;
    server_conn.close().await?;
    println!("rpc: {} calls answered, {served} served", calls.len());
    Ok(())
}
