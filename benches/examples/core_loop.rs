//! Runs the client core's consume-and-ack or publish-and-confirm path (sans-IO, no socket, no
//! runtime) for callgrind: instructions per message that do not move from run to run.
//!
//! ```sh
//! cargo build --release -p amqp-benches --example core_loop
//! valgrind --tool=callgrind --toggle-collect='amqp_client::profiling::*::run' \
//!     target/release/examples/core_loop consume 200
//! ```
//!
//! `benches/callgrind-core` does this for both paths and prints instructions per message. Each
//! iteration is one batch of 100 messages: for `consume`, 100 deliveries fed in one read, each
//! taken and acked singly (the acks coalesce into one frame), then written out; for `publish`,
//! 100 persistent publishes written out and one multiple ack from the broker confirming them;
//! for `both-CHANNELS` (e.g. `both-1000`), CHANNELS channels each consuming and publishing
//! with confirms at once, a batch's 100 deliveries going round-robin over them, each answered
//! by an ack and a publish (see `ManyLoop`): the scale benchmark's load, without sockets.
//! The broker's bytes are encoded before the measured function runs.

// The message count on stdout is this tool's output, read by `benches/callgrind-core`.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use amqp_client::profiling::{ConsumeLoop, ManyLoop, PublishLoop};

/// Messages per iteration.
const BATCH: usize = 100;
/// Body size, as in the live benchmark.
const BODY: usize = 64;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, iterations] = &args[..] else {
        eprintln!("usage: core_loop consume|publish|both-CHANNELS ITERATIONS");
        return ExitCode::from(2);
    };
    let Ok(iterations) = iterations.parse::<usize>() else {
        eprintln!("ITERATIONS must be a number");
        return ExitCode::from(2);
    };
    let messages = match path.as_str() {
        "consume" => {
            let mut lp = ConsumeLoop::new(BODY);
            let mut batches: Vec<_> = (0..iterations).map(|_| lp.batch(BATCH)).collect();
            batches.iter_mut().map(|b| lp.run(b)).sum::<usize>()
        }
        "publish" => {
            let mut lp = PublishLoop::new(BODY);
            (0..iterations)
                .map(|_| {
                    let mut confirms = lp.confirms(BATCH);
                    lp.run(BATCH, &mut confirms)
                })
                .sum()
        }
        many if many.starts_with("both-") => {
            let Ok(channels) = many["both-".len()..].parse::<usize>() else {
                eprintln!("both-CHANNELS: CHANNELS must be a number");
                return ExitCode::from(2);
            };
            let mut lp = ManyLoop::new(channels, BODY);
            (0..iterations)
                .map(|_| {
                    let mut batch = lp.batch(BATCH);
                    lp.run(BATCH, &mut batch)
                })
                .sum()
        }
        _ => {
            eprintln!("the path is `consume`, `publish` or `both-CHANNELS`");
            return ExitCode::from(2);
        }
    };
    if messages != iterations * BATCH {
        eprintln!(
            "handled {messages} messages, expected {}",
            iterations * BATCH
        );
        return ExitCode::FAILURE;
    }
    println!("messages {messages}");
    ExitCode::SUCCESS
}
