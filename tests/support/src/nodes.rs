//! Private RabbitMQ nodes for fault tests, started and stopped by the project's scripts, never
//! the shared broker on 5672:
//!
//! - [`Nodes::loopback`]: `scripts/rabbit-cluster`, nodes on 127.0.0.1 (restart, alarms, stop);
//! - [`Nodes::netns`]: `scripts/netns-cluster`, each node in a network namespace of the test's
//!   own, `pause_minority`, reached on 127.0.0.1 through socat; links can be taken down and up
//!   (a partition from the other nodes, or from the clients).
//!
//! Both are stopped, namespaces deleted and directories removed when the value drops, whether
//! the test passed or panicked. Where a prerequisite is missing, `start` returns `None` after
//! [`skip_or_fail`](crate::skip_or_fail) said why (a failure in CI).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Which script runs the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `scripts/rabbit-cluster`: on 127.0.0.1.
    Loopback,
    /// `scripts/netns-cluster`: one network namespace per node.
    Netns,
}

/// Private nodes, stopped (and their directory removed) on drop.
#[derive(Debug)]
pub struct Nodes {
    kind: Kind,
    dir: PathBuf,
    /// AMQP ports on 127.0.0.1, node 1 first.
    pub ports: Vec<u16>,
    /// Erlang node names, node 1 first.
    pub names: Vec<String>,
    /// How long starting them took.
    pub start_time: Duration,
}

/// Heavy tests (clusters, fleets, soaks) of one test binary take this lock exclusively, so
/// that tests running in parallel do not start several clusters at once on a 2-core machine;
/// light ones (a single private node) share it ([`light_lock`]) and run beside each other but
/// not beside a heavy one. Hold the guard for the whole test (an async lock: it may be held
/// across awaits, and a test that panics releases it).
pub async fn heavy_lock() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    LOCK.write().await
}

/// See [`heavy_lock`].
pub async fn light_lock() -> tokio::sync::RwLockReadGuard<'static, ()> {
    LOCK.read().await
}

static LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn script(kind: Kind) -> String {
    let name = match kind {
        Kind::Loopback => "rabbit-cluster",
        Kind::Netns => "netns-cluster",
    };
    format!("{}/../../scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

impl Nodes {
    /// `n` clustered nodes on 127.0.0.1.
    pub fn loopback(n: usize) -> Option<Self> {
        Self::start(Kind::Loopback, n)
    }

    /// `n` clustered nodes, each in a network namespace of its own.
    pub fn netns(n: usize) -> Option<Self> {
        Self::start(Kind::Netns, n)
    }

    fn start(kind: Kind, n: usize) -> Option<Self> {
        let dir = std::env::temp_dir().join(crate::unique_name("amqp-nodes"));
        let began = Instant::now();
        let out = match Command::new(script(kind))
            .args(["start", &dir.to_string_lossy(), &n.to_string()])
            .output()
        {
            Ok(out) => out,
            Err(err) => {
                crate::skip_or_fail(&format!("cannot run {}: {err}", script(kind)));
                return None;
            }
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {}
            Some(3) => {
                crate::skip_or_fail(&format!(
                    "private RabbitMQ nodes cannot run here: {} (scripts/ensure-test-deps \
                     installs what is missing)",
                    stderr.trim()
                ));
                return None;
            }
            _ => {
                // The script stopped what it started, but leave nothing behind regardless.
                let _ = Command::new(script(kind)).arg("stop").arg(&dir).output();
                panic!("{} start failed: {stderr}", script(kind));
            }
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let value = |key: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_default()
                .to_owned()
        };
        let ports = value("PORTS")
            .split(' ')
            .filter_map(|p| p.parse().ok())
            .collect::<Vec<u16>>();
        let names = value("NODES")
            .split(' ')
            .map(str::to_owned)
            .collect::<Vec<_>>();
        let nodes = Self {
            kind,
            dir,
            ports,
            names,
            start_time: began.elapsed(),
        };
        assert_eq!(nodes.ports.len(), n, "ports of every node: {stdout}");
        Some(nodes)
    }

    /// Runs the script's `sub` command off the async runtime; its stdout (panics with its
    /// stderr on failure).
    async fn run_async(&self, sub: &'static str, args: Vec<String>) -> String {
        let (kind, dir) = (self.kind, self.dir.clone());
        let out = tokio::task::spawn_blocking(move || run_script(kind, &dir, sub, &args)).await;
        match out {
            Ok(out) => out,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// `rabbitmqctl ARGS` against node `i` (1-based); its stdout.
    pub async fn ctl(&self, i: usize, args: &[&str]) -> String {
        let mut all = vec![i.to_string()];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        self.run_async("ctl", all).await
    }

    /// Stops node `i` and starts it again (loopback nodes only); returns when it accepts AMQP.
    pub async fn restart(&self, i: usize) {
        assert_eq!(self.kind, Kind::Loopback, "restart is for loopback nodes");
        self.run_async("restart", vec![i.to_string()]).await;
    }

    /// Cuts node `i` off from the other nodes (netns only): its cluster link goes down.
    pub async fn partition(&self, i: usize) {
        self.netns_only();
        self.run_async("partition", vec![i.to_string()]).await;
    }

    /// Brings node `i`'s cluster link up again.
    pub async fn heal(&self, i: usize) {
        self.netns_only();
        self.run_async("heal", vec![i.to_string()]).await;
    }

    /// Takes node `i`'s client link down (netns only): TCP between clients and the node
    /// stalls, nothing is closed.
    pub async fn client_link_down(&self, i: usize) {
        self.netns_only();
        self.run_async("client-down", vec![i.to_string()]).await;
    }

    /// Brings node `i`'s client link up again.
    pub async fn client_link_up(&self, i: usize) {
        self.netns_only();
        self.run_async("client-up", vec![i.to_string()]).await;
    }

    fn netns_only(&self) {
        assert_eq!(self.kind, Kind::Netns, "links are for netns nodes");
    }

    /// `127.0.0.1:<port>` of node `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i - 1])
    }

    /// An AMQP URL naming node `first` then every other node (guest, vhost `/`).
    pub fn url(&self, first: usize) -> String {
        let mut hosts = vec![self.addr(first)];
        hosts.extend(
            (1..=self.ports.len())
                .filter(|&i| i != first)
                .map(|i| self.addr(i)),
        );
        format!("amqp://guest:guest@{}/%2f", hosts.join(","))
    }
}

/// Runs `script sub dir args...`; its stdout, or a panic with its stderr.
fn run_script(kind: Kind, dir: &std::path::Path, sub: &str, args: &[String]) -> String {
    let out = Command::new(script(kind))
        .arg(sub)
        .arg(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script(kind)));
    assert!(
        out.status.success(),
        "{} {sub} {args:?}: {}",
        script(kind),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Drop for Nodes {
    fn drop(&mut self) {
        let _ = Command::new(script(self.kind))
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}
