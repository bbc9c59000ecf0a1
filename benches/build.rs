//! Detects client features the benches use before the client has them, so that a bench
//! written ahead of its knob compiles today and uses the knob as soon as it lands:
//!
//! * `cfg(has_coalesce_acks)`: `amqp-client` has `ConnectionConfigBuilder::coalesce_acks`
//!   (the `ours-nocoalesce` row of `examples/clients`).

// A build script talks to cargo on stdout.
#![allow(clippy::print_stdout)]

use std::path::Path;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(has_coalesce_acks)");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../amqp-client/src/config.rs");
    println!("cargo::rerun-if-changed={}", config.display());
    let source = std::fs::read_to_string(&config).unwrap_or_default();
    if source.contains("fn coalesce_acks(") {
        println!("cargo::rustc-cfg=has_coalesce_acks");
    }
}
