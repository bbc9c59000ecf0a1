//! RabbitMQ tutorial 7, "Publisher Confirms" (<https://www.rabbitmq.com/tutorials/tutorial-seven-java>):
//! three ways to know the broker took responsibility for published messages:
//!
//! 1. publishing messages individually, waiting for each confirm (simple, slow);
//! 2. publishing in batches, waiting for a whole batch (faster; a nack only says "somewhere
//!    in this batch");
//! 3. handling confirms asynchronously while publishing goes on (fastest; each outcome
//!    known).
//!
//! Runs against the broker at `AMQP_URL` with a server-named queue per strategy, deleted at
//! the end.
//!
//! `cargo run -p amqp091-client --example publisher_confirms -- [MESSAGES]`

// An example's output is its point.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use amqp_client::prelude::*;
use tokio::sync::mpsc;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const BATCH: usize = 100;

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A channel in confirm mode with a fresh server-named queue.
async fn setup(conn: &Connection) -> Result<(Channel, String)> {
    let channel = conn.open_channel().await?;
    let queue = channel
        .queue_declare("", QueueDeclareOptions::default().with_exclusive())
        .await?;
    channel.confirm_select().await?;
    Ok((channel, queue.name))
}

async fn publish(channel: &Channel, queue: &str, i: usize) -> Result<PublishConfirm> {
    Ok(channel
        .basic_publish(
            "",
            queue,
            PublishOptions::default(),
            &BasicProperties::default(),
            i.to_string(),
        )
        .await?)
}

/// Checks the queue holds `n` messages, deletes it and closes the channel.
async fn finish(channel: Channel, queue: &str, n: usize) -> Result<()> {
    let held = channel.queue_delete(queue, Default::default()).await?;
    if held as usize != n {
        return Err(format!("queue held {held} messages, expected {n}").into());
    }
    channel.close().await?;
    Ok(())
}

async fn individually(conn: &Connection, n: usize) -> Result<Duration> {
    let (channel, queue) = setup(conn).await?;
    let start = Instant::now();
    for i in 0..n {
        let outcome = publish(&channel, &queue, i).await?.await?;
        if !outcome.is_acked() {
            return Err(format!("message {i} not confirmed: {outcome:?}").into());
        }
    }
    let took = start.elapsed();
    finish(channel, &queue, n).await?;
    Ok(took)
}

async fn in_batches(conn: &Connection, n: usize) -> Result<Duration> {
    let (channel, queue) = setup(conn).await?;
    let start = Instant::now();
    let mut outstanding = 0;
    for i in 0..n {
        // The outcome is collected for the whole batch by wait_for_confirms.
        drop(publish(&channel, &queue, i).await?);
        outstanding += 1;
        if outstanding == BATCH {
            if !channel.wait_for_confirms().await? {
                return Err("a message of the batch was nacked".into());
            }
            outstanding = 0;
        }
    }
    if outstanding > 0 && !channel.wait_for_confirms().await? {
        return Err("a message of the last batch was nacked".into());
    }
    let took = start.elapsed();
    finish(channel, &queue, n).await?;
    Ok(took)
}

async fn asynchronously(conn: &Connection, n: usize) -> Result<Duration> {
    let (channel, queue) = setup(conn).await?;
    let start = Instant::now();
    // A task settles confirms as they arrive, while this one keeps publishing.
    let (tx, mut rx) = mpsc::channel::<(usize, PublishConfirm)>(1024);
    let handler = tokio::spawn(async move {
        let (mut acked, mut nacked) = (0usize, Vec::new());
        while let Some((i, confirm)) = rx.recv().await {
            if confirm.await?.is_acked() {
                acked += 1;
            } else {
                nacked.push(i); // a real publisher would republish or log these
            }
        }
        Ok::<_, amqp_client::Error>((acked, nacked))
    });
    for i in 0..n {
        let confirm = publish(&channel, &queue, i).await?;
        tx.send((i, confirm))
            .await
            .map_err(|_| "the confirm handler stopped")?;
    }
    drop(tx);
    let (acked, nacked) = handler.await??;
    let took = start.elapsed();
    if acked != n || !nacked.is_empty() {
        return Err(format!("{acked} acked, nacked: {nacked:?}").into());
    }
    finish(channel, &queue, n).await?;
    Ok(took)
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1000);
    let conn = Connection::connect(&amqp_url()).await?;

    let took = individually(&conn, n).await?;
    println!(
        "Published {n} messages individually in {} ms",
        took.as_millis()
    );
    let took = in_batches(&conn, n).await?;
    println!("Published {n} messages in batch in {} ms", took.as_millis());
    let took = asynchronously(&conn, n).await?;
    println!(
        "Published {n} messages and handled confirms asynchronously in {} ms",
        took.as_millis()
    );

    conn.close().await?;
    println!("publisher_confirms: all {} messages confirmed", 3 * n);
    Ok(())
}
