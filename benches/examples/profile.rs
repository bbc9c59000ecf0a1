//! Runs one benchmark loop of `benches/codec.rs` a given number of times, for callgrind.
//!
//! ```sh
//! cargo build --profile bench -p amqp-benches --example profile
//! valgrind --tool=callgrind --toggle-collect='amqp_benches::loops::decode_ours' \
//!     target/release/examples/profile rich-64B-whole ours 20
//! ```
//!
//! Workloads: `{minimal,rich}-{64B,4KiB}-{whole,stream}` (deliveries of either shape and body
//! size, on either path; see `amqp_benches::Shape` and `Path`), `rich-128KiB-whole`, `publish`
//! and `table`. Sides: `ours`, `theirs` (amq-protocol) and, for deliveries, `frames` (ours frame
//! by frame: `FrameDecoder::decode` and `ContentAssembler`), `owned` (ours, each delivery kept as
//! an owned `Delivery`; whole buffer only) and `envelope` (the lower bound: frame envelopes only,
//! over the same bytes).
//!
//! `benches/callgrind` does this for every workload and side and prints instructions per frame
//! and atomic operations per delivery. With `PROFILE_TIME=1` it also times each iteration and
//! prints the fastest and the median time per element: a quick check between criterion runs,
//! the minimum being steadier on a busy machine. The measured functions are the library's, the
//! same ones criterion times; the fresh copy of the input a whole-buffer iteration gets is made
//! outside them, as in the bench.

// The counts on stdout are this tool's output, read by `benches/callgrind`.
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use amqp_benches::*;
use amqp_codec::{ContentAssembler, FrameDecoder, Outbound};
use bytes::BytesMut;

/// Which implementation runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Ours,
    Theirs,
    Frames,
    Owned,
    Envelope,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [workload, side, iterations] = &args[..] else {
        eprintln!("usage: profile WORKLOAD ours|theirs|frames|owned|envelope ITERATIONS");
        eprintln!("  WORKLOAD: {{minimal,rich}}-{{64B,4KiB}}-{{whole,stream}}, rich-128KiB-whole,");
        eprintln!("            publish, table");
        return ExitCode::from(2);
    };
    let Ok(iterations) = iterations.parse::<usize>() else {
        eprintln!("ITERATIONS must be a number");
        return ExitCode::from(2);
    };
    let side = match side.as_str() {
        "ours" => Side::Ours,
        "theirs" => Side::Theirs,
        "frames" => Side::Frames,
        "owned" => Side::Owned,
        "envelope" => Side::Envelope,
        _ => {
            eprintln!("the side is `ours`, `theirs`, `frames`, `owned` or `envelope`");
            return ExitCode::from(2);
        }
    };
    let mut timer = Timer::new(std::env::var_os("PROFILE_TIME").is_some(), iterations);
    // Elements (frames, or tables) and messages one iteration handles, printed for the
    // per-element and per-message divisions.
    let (elements, messages) = match workload.as_str() {
        "publish" if matches!(side, Side::Ours | Side::Theirs) => {
            publish(side, iterations, &mut timer)
        }
        "table" if matches!(side, Side::Ours | Side::Theirs) => table(side, iterations, &mut timer),
        deliveries => match parse_delivery(deliveries) {
            Some((load, path)) if side != Side::Owned || path == Path::Whole => {
                deliver(&load, path, side, iterations, &mut timer)
            }
            _ => {
                eprintln!("unknown workload {workload} (or no {workload} for that side)");
                return ExitCode::from(2);
            }
        },
    };
    println!("elements {elements}");
    println!("messages {messages}");
    timer.report(elements / iterations.max(1));
    ExitCode::SUCCESS
}

/// `{shape}-{size}-{path}`.
fn parse_delivery(name: &str) -> Option<(Workload, Path)> {
    let mut parts = name.split('-');
    let (shape, size, path) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let shape = Shape::from_name(shape)?;
    let path = Path::ALL.into_iter().find(|p| p.name() == path)?;
    let (large, large_len, large_count) = LARGE_BODY;
    if size == large && shape == Shape::Rich && path == Path::Whole {
        return Some((Workload::with_messages(shape, large_len, large_count), path));
    }
    let &(_, len) = BODY_SIZES.iter().find(|(name, _)| *name == size)?;
    Some((Workload::new(shape, len), path))
}

fn deliver(
    load: &Workload,
    path: Path,
    side: Side,
    iterations: usize,
    timer: &mut Timer,
) -> (usize, usize) {
    let mut decoder = FrameDecoder::with_frame_max(FRAME_MAX);
    let mut asm = ContentAssembler::new(u64::MAX);
    let mut ours_buf = BytesMut::new();
    let mut their_buf = Vec::new();
    let mut frames = 0;
    for _ in 0..iterations {
        let mut whole = BytesMut::from(&load.wire[..]);
        let started = Instant::now();
        frames += match (path, side) {
            (Path::Whole, Side::Ours) => decode_ours(&mut whole, &mut decoder, &mut asm),
            (Path::Whole, Side::Theirs) => decode_theirs(&whole),
            (Path::Whole, Side::Frames) => decode_frames(&mut whole, &mut decoder, &mut asm),
            (Path::Whole, Side::Owned) => decode_owned(&mut whole, &mut decoder),
            (Path::Whole, Side::Envelope) => envelopes(&whole),
            (Path::Stream, Side::Ours) => {
                stream_ours(&load.wire, &mut ours_buf, &mut decoder, &mut asm)
            }
            (Path::Stream, Side::Theirs) => stream_theirs(&load.wire, &mut their_buf),
            (Path::Stream, Side::Frames) => {
                stream_frames(&load.wire, &mut ours_buf, &mut decoder, &mut asm)
            }
            (Path::Stream, Side::Owned) => unreachable!("refused in main"),
            (Path::Stream, Side::Envelope) => stream_envelopes(&load.wire, &mut ours_buf),
        };
        timer.record(started);
    }
    assert_eq!(frames, iterations * load.frames(), "every frame decoded");
    (frames, iterations * load.messages)
}

fn publish(side: Side, iterations: usize, timer: &mut Timer) -> (usize, usize) {
    let (method, props, body) = (amqp_benches::publish(), properties(42), body(64));
    let their = their_frames(&method, &props, &body);
    let mut out = Outbound::with_capacity(4096);
    let mut buf = Vec::with_capacity(4096);
    for _ in 0..iterations {
        let started = Instant::now();
        if side == Side::Ours {
            encode_publish_ours(&mut out, &method, &props, &body);
        } else {
            encode_publish_theirs(&mut buf, &their);
        }
        timer.record(started);
    }
    (iterations * their.len(), iterations)
}

fn table(side: Side, iterations: usize, timer: &mut Timer) -> (usize, usize) {
    let wire = table_20();
    let raw = wire.slice(4..);
    for _ in 0..iterations {
        let started = Instant::now();
        black_box(if side == Side::Ours {
            table_ours(&raw)
        } else {
            table_theirs(&wire)
        });
        timer.record(started);
    }
    (iterations, iterations)
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
