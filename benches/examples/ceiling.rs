//! The minimal in-memory AMQP 0-9-1 server of `benches/shared/server/`, on its own: for any
//! client by hand, or to profile the server itself. The side-by-side ceiling run is
//! `examples/clients --broker builtin`, which runs this server in its parent process.
//!
//! ```sh
//! cargo run --release -p amqp-benches --example ceiling -- --port 5673 --seconds 60
//! AMQP_URL=amqp://guest:guest@127.0.0.1:5673/%2f target/release/examples/clients --child ours publish --queue q --messages 100000
//! ```
//!
//! Prints what it counted (publishes, confirms, deliveries, ack frames) every `--every`
//! seconds, and stops by itself after `--seconds`.

// Printing the counts is this tool's job.
#![allow(clippy::print_stdout)]

#[path = "../shared/server/mod.rs"]
mod server;

use std::time::Duration;

use clap::Parser;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "A minimal in-memory AMQP 0-9-1 server on amqp-codec")]
struct Args {
    /// Port on 127.0.0.1 (0: any free port, printed).
    #[arg(long, default_value_t = 5673)]
    port: u16,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Stop after this many seconds (bounded, as every load tool here).
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Print the counters every this many seconds (0: only at the end).
    #[arg(long, default_value_t = 5)]
    every: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (broker, port, rt) = server::spawn_on_own_runtime(args.threads, args.port)?;
    println!("listening on 127.0.0.1:{port} (amqp://guest:guest@127.0.0.1:{port}/%2f)");
    let end = std::time::Instant::now() + Duration::from_secs(args.seconds);
    let step = Duration::from_secs(args.every.max(1));
    while std::time::Instant::now() < end {
        std::thread::sleep(step.min(end.saturating_duration_since(std::time::Instant::now())));
        if args.every > 0 {
            println!("{:?}", broker.stats());
        }
    }
    println!("{:?}", broker.stats());
    rt.shutdown_background();
    Ok(())
}
