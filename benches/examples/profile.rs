//! Runs one benchmark loop of `benches/codec.rs` a given number of times, for callgrind.
//!
//! ```sh
//! cargo build --profile bench -p amqp-benches --example profile
//! valgrind --tool=callgrind --toggle-collect='amqp_benches::decode_ours*' \
//!     target/release/examples/profile deliver-64B ours 100
//! ```
//!
//! `benches/callgrind` does this for every workload and both codecs and prints instructions per
//! frame. With `PROFILE_TIME=1` it also times each iteration and prints the fastest and the
//! median time per element: a quick check between criterion runs, the minimum being steadier on
//! a busy machine. The measured functions are the library's (`decode_ours`, `decode_theirs`,
//! `encode_publish_*`, `table_*`), the same ones criterion times, and the fresh copy of the input
//! each decode iteration gets is made outside them, as in the bench.

// The element count on stdout is this tool's output, read by `benches/callgrind`.
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use amqp_benches::*;
use amqp_codec::{ContentAssembler, FrameDecoder, Outbound};
use bytes::BytesMut;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [workload, side, iterations] = &args[..] else {
        eprintln!("usage: profile WORKLOAD ours|theirs ITERATIONS");
        eprintln!("  WORKLOAD: deliver-64B, deliver-4KiB, deliver-128KiB, publish, table");
        return ExitCode::from(2);
    };
    let Ok(iterations) = iterations.parse::<usize>() else {
        eprintln!("ITERATIONS must be a number");
        return ExitCode::from(2);
    };
    let ours = match side.as_str() {
        "ours" => true,
        "theirs" => false,
        _ => {
            eprintln!("the side is `ours` or `theirs`");
            return ExitCode::from(2);
        }
    };
    let mut timer = Timer::new(std::env::var_os("PROFILE_TIME").is_some(), iterations);
    // Elements (frames or tables) one iteration handles, printed for the per-element division.
    let elements = if let Some(size) = workload.strip_prefix("deliver-") {
        let Some(&(_, len, count)) = DELIVER_SIZES.iter().find(|(name, ..)| *name == size) else {
            eprintln!("unknown deliver size {size}");
            return ExitCode::from(2);
        };
        let wire = deliveries(count, &body(len));
        let mut decoder = FrameDecoder::with_frame_max(FRAME_MAX);
        let mut asm = ContentAssembler::new(u64::MAX);
        let mut frames = 0;
        for _ in 0..iterations {
            let mut buf = BytesMut::from(&wire[..]);
            let started = Instant::now();
            frames += if ours {
                decode_ours(&mut buf, &mut decoder, &mut asm)
            } else {
                decode_theirs(&buf)
            };
            timer.record(started);
        }
        frames
    } else if workload == "publish" {
        let (method, props, body) = (publish(), properties(42), body(64));
        let their = their_frames(&method, &props, &body);
        let mut out = Outbound::with_capacity(4096);
        let mut buf = Vec::with_capacity(4096);
        for _ in 0..iterations {
            let started = Instant::now();
            if ours {
                encode_publish_ours(&mut out, &method, &props, &body);
            } else {
                encode_publish_theirs(&mut buf, &their);
            }
            timer.record(started);
        }
        iterations * their.len()
    } else if workload == "table" {
        let wire = table_20();
        let raw = wire.slice(4..);
        for _ in 0..iterations {
            let started = Instant::now();
            black_box(if ours {
                table_ours(&raw)
            } else {
                table_theirs(&wire)
            });
            timer.record(started);
        }
        iterations
    } else {
        eprintln!("unknown workload {workload}");
        return ExitCode::from(2);
    };
    println!("elements {elements}");
    timer.report(elements / iterations.max(1));
    ExitCode::SUCCESS
}

/// Per-iteration times, when asked for.
struct Timer {
    on: bool,
    times: Vec<Duration>,
}

impl Timer {
    fn new(on: bool, iterations: usize) -> Self {
        let times = Vec::with_capacity(if on { iterations } else { 0 });
        Self { on, times }
    }

    fn record(&mut self, started: Instant) {
        if self.on {
            self.times.push(started.elapsed());
        }
    }

    fn report(&mut self, per_iteration: usize) {
        if !self.on || self.times.is_empty() {
            return;
        }
        self.times.sort();
        let per = |d: Duration| d.as_nanos() as f64 / per_iteration.max(1) as f64;
        println!(
            "ns/element min {:.1} median {:.1}",
            per(self.times[0]),
            per(self.times[self.times.len() / 2])
        );
    }
}
