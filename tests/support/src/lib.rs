//! Shared helpers for the integration tests and benchmarks.
//!
//! - [`broker_url`]: the broker under test, from `AMQP_URL`.
//! - [`unique_name`]: queue and exchange names that never collide between parallel tests.
//! - [`alloc_counter`]: a counting global allocator, per thread, for "no allocation" tests.
//! - [`fault_proxy`]: a TCP proxy that cuts, resets or black-holes links on demand, and adds
//!   Toxiproxy-like toxics (latency, bandwidth, slicer, one-way stall, reset after N bytes,
//!   timeout).
//! - [`nodes`]: private RabbitMQ nodes (on loopback, or in network namespaces) for fault tests.
//! - [`scripted_broker`]: a fake broker on 127.0.0.1 that sends whatever a test scripts.
//! - [`skip_or_fail`]: how a test that cannot run here says so (a failure in CI).

pub mod alloc_counter;
pub mod fault_proxy;
pub mod nodes;
pub mod scripted_broker;

pub use amqp_test_skip::skip_or_fail;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The default broker: the local RabbitMQ, user guest, vhost `/`.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The broker URL tests run against: `AMQP_URL`, or [`DEFAULT_AMQP_URL`].
pub fn broker_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned())
}

/// `host:port` of [`broker_url`], for tests that open raw sockets.
pub fn broker_addr() -> String {
    addr_of(&broker_url())
}

/// `host:port` of an AMQP URL (5672 when the URL names no port).
fn addr_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:5672")
    }
}

/// A name no other test (in this process or another) uses: `prefix` + pid + time + counter.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("q"), unique_name("q"));
    }

    #[test]
    fn addr_of_parses_the_authority() {
        assert_eq!(addr_of("amqp://u:p@127.0.0.2:5673/%2f"), "127.0.0.2:5673");
        assert_eq!(addr_of("amqp://localhost"), "localhost:5672");
        assert_eq!(addr_of("amqp://u:p@h?heartbeat=5"), "h:5672");
    }
}
