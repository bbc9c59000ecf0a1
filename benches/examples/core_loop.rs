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
//! 100 persistent publishes written out and one multiple ack from the broker confirming them.
//! The broker's bytes are encoded before the measured function runs.

// The message count on stdout is this tool's output, read by `benches/callgrind-core`.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use amqp_client::profiling::{ConsumeLoop, PublishLoop};

/// Messages per iteration.
const BATCH: usize = 100;
/// Body size, as in the live benchmark.
const BODY: usize = 64;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, iterations] = &args[..] else {
        eprintln!("usage: core_loop consume|publish ITERATIONS");
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
        _ => {
            eprintln!("the path is `consume` or `publish`");
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
