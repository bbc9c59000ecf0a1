//! TLS against a real broker: a private RabbitMQ node with a TLS listener, started by
//! `scripts/tls-node` with certificates made for this run (the shared broker at `AMQP_URL` is
//! not touched). One test runs every case in sequence against that one node, and a guard stops
//! the node and removes its directory however the test ends.
//!
//! The cases: a verified connection by name and by IP address that publishes and gets a
//! message; a certificate that does not name the server (`HostnameMismatch`); a server whose CA
//! is not trusted (`UnknownCa`), and the same with `verify_none` (connects); `amqps` to the
//! plain port (a handshake error that says so); EXTERNAL with the client certificate, the
//! identity checked by the broker itself; EXTERNAL without one (a typed refusal, not a hang);
//! EXTERNAL again through a `rustls::ClientConfig` the test built itself
//! (`TlsOptions::from_rustls`).
//!
//! Without `rabbitmq-server`, `erl` or `openssl` the test fails in CI (`CI=true`) and elsewhere
//! skips, saying so (`amqp_test_support::skip_or_fail`).
//! Nodes of earlier runs that were killed before their guard ran are stopped at the start.

// Test scaffolding: a failed step is a failed test, and the helpers print the figures (ports,
// timings, the errors seen) that `--nocapture` shows.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqp_client::GetOptions;
use amqp_client::amqp_codec::{BasicProperties, ReplyCode, ShortStr};
use amqp_client::rustls::pki_types::pem::PemObject;
use amqp_client::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use amqp_client::rustls::{ClientConfig, RootCertStore};
use amqp_client::{
    AuthMechanism, Connection, ConnectionConfig, Error, PublishOptions, QueueDeclareOptions,
    TlsError, TlsOptions,
};

/// Bound on one connection attempt (the client's own `connection_timeout` is set below it).
const CASE_LIMIT: Duration = Duration::from_secs(20);
/// Bound on the script's `start` (it waits at most 90 s for the node itself).
const START_LIMIT: &str = "150";
/// Bound on the script's `stop` and `ctl`.
const STOP_LIMIT: &str = "90";
/// The script's exit status when a prerequisite is missing.
const MISSING_PREREQUISITE: i32 = 3;

/// `scripts/tls-node` of this workspace.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/tls-node")
}

/// Runs the script under `timeout` (coreutils), so that no step can hang the test.
fn run_script(limit: &str, args: &[&str]) -> std::io::Result<Output> {
    Command::new("timeout")
        .args(["--kill-after=10", limit])
        .arg(script())
        .args(args)
        .output()
}

/// The private node; dropping it stops the node and removes its directory.
struct TlsNode {
    dir: PathBuf,
    vars: HashMap<String, String>,
}

impl TlsNode {
    fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("tls-node printed no {key}"))
    }

    fn tls_port(&self) -> u16 {
        self.var("TLS_PORT").parse().unwrap()
    }

    fn plain_port(&self) -> u16 {
        self.var("PLAIN_PORT").parse().unwrap()
    }

    /// `rabbitmqctl` against the private node, off the runtime.
    async fn ctl(&self, args: &[&str]) -> String {
        let dir = self.dir.to_str().unwrap().to_owned();
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let mut all = vec!["ctl", dir.as_str()];
            all.extend(args.iter().map(String::as_str));
            let out = run_script(STOP_LIMIT, &all).unwrap();
            assert!(
                out.status.success(),
                "tls-node ctl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .await
        .unwrap()
    }
}

/// Stops the node (or only removes the directory if no node got as far as starting).
struct Guard(PathBuf);

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.0.join("node.env").exists() {
            let _ = std::fs::remove_dir_all(&self.0);
            return;
        }
        let began = Instant::now();
        match run_script(STOP_LIMIT, &["stop", self.0.to_str().unwrap_or_default()]) {
            Ok(out) if out.status.success() => {
                println!("tls-node stopped in {:.1?}", began.elapsed());
            }
            Ok(out) => eprintln!(
                "tls-node stop failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("tls-node stop could not run: {e}"),
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Directories of this test's nodes are `amqp-tls-node-<test pid>-<nanos>` in the temp dir.
const DIR_PREFIX: &str = "amqp-tls-node-";

/// Stops the nodes of earlier runs of this test that were killed before their guard ran (their
/// test process is gone), so that an interrupted run leaves no node behind for long.
fn reap_stale_nodes() {
    if !Path::new("/proc/self").exists() {
        return; // No way to tell a live test process from a dead one.
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        println!("reaping the node of a test run that was killed: {name}");
        drop(Guard(entry.path()));
    }
}

/// Starts the node in a fresh directory, or says why it cannot (`Err`: skip the test).
async fn start_node() -> Result<(TlsNode, Guard), String> {
    tokio::task::spawn_blocking(reap_stale_nodes).await.unwrap();
    let dir = std::env::temp_dir().join(format!(
        "{DIR_PREFIX}{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let guard = Guard(dir.clone());
    let arg = dir.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || run_script(START_LIMIT, &["start", &arg]))
        .await
        .unwrap();
    let out = match out {
        Ok(out) => out,
        // No bash or no coreutils `timeout`: nothing here could start a node.
        Err(e) => return Err(format!("cannot run {}: {e}", script().display())),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(MISSING_PREREQUISITE) {
        return Err(stderr.trim().to_owned());
    }
    assert!(
        out.status.success(),
        "tls-node start failed ({}): {stderr}",
        out.status
    );
    let vars = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Ok((TlsNode { dir, vars }, guard))
}

/// Awaits `f`, failing the test if it takes longer than [`CASE_LIMIT`].
async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    let began = Instant::now();
    let out = tokio::time::timeout(CASE_LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {CASE_LIMIT:?}"));
    println!("  {what}: {:.0?}", began.elapsed());
    out
}

/// Connects to `uri` (with a 10 s handshake bound).
async fn connect(what: &str, uri: &str) -> Result<Connection, Error> {
    let sep = if uri.contains('?') { '&' } else { '?' };
    bounded(
        what,
        Connection::connect(&format!("{uri}{sep}connection_timeout=10000")),
    )
    .await
}

/// Publishes `body` with `props` to a fresh server-named queue on `conn` (confirmed) and gets
/// it back; returns the message's `user_id`.
async fn round_trip(conn: &Connection, props: &BasicProperties, body: &'static str) -> String {
    let ch = conn.open_channel().await.unwrap();
    let q = ch
        .queue_declare("", QueueDeclareOptions::default().with_exclusive())
        .await
        .unwrap();
    ch.confirm_select().await.unwrap();
    let confirm = ch
        .basic_publish("", q.name.as_str(), PublishOptions::default(), props, body)
        .await
        .unwrap();
    assert!(confirm.await.unwrap().is_acked());
    let got = ch
        .basic_get(&q.name, GetOptions::no_ack())
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(got.delivery.body, body.as_bytes());
    let user = got
        .delivery
        .properties
        .user_id()
        .map(|u| String::from_utf8_lossy(&u).into_owned())
        .unwrap_or_default();
    ch.close().await.unwrap();
    user
}

/// A self-signed CA that issued nothing the node uses, as a PEM file in `dir`.
fn other_ca(dir: &Path) -> PathBuf {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "amqp-rs untrusted CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let path = dir.join("other-ca.pem");
    std::fs::write(&path, cert.pem()).unwrap();
    path
}

#[tokio::test]
async fn tls_against_a_private_rabbitmq_node() {
    let began = Instant::now();
    let (node, _guard) = match start_node().await {
        Ok(started) => started,
        Err(why) => {
            amqp_test_support::skip_or_fail(&format!("no private TLS node: {why}"));
            return;
        }
    };
    let started = began.elapsed();
    println!(
        "tls-node {} up in {started:.1?} (script: {} s): TLS port {}, plain port {}, dist port {}",
        node.var("NODE"),
        node.var("START_SECS"),
        node.tls_port(),
        node.plain_port(),
        node.var("DIST_PORT"),
    );
    let tls = node.tls_port();
    let ca = node.var("CA_FILE").to_owned();
    let (cert, key) = (node.var("CLIENT_CERT"), node.var("CLIENT_KEY"));
    let user = node.var("CLIENT_CN").to_owned();

    // (a) Verified against the node's CA, by name: channel, queue, publish, get.
    let conn = connect(
        "(a) guest by name",
        &format!("amqps://guest:guest@localhost:{tls}/%2f?cacertfile={ca}"),
    )
    .await
    .unwrap();
    let plain = BasicProperties::builder().build().unwrap();
    assert_eq!(round_trip(&conn, &plain, "over tls").await, "");
    conn.close().await.unwrap();

    // (a') By IP address: the certificate's IP SAN 127.0.0.1 is checked.
    let conn = connect(
        "(a') guest by IP",
        &format!("amqps://guest:guest@127.0.0.1:{tls}/%2f?cacertfile={ca}"),
    )
    .await
    .unwrap();
    conn.close().await.unwrap();

    // (b) A name the certificate does not hold.
    let err = connect(
        "(b) wrong name",
        &format!(
            "amqps://guest:guest@127.0.0.1:{tls}/%2f?cacertfile={ca}&server_name_indication=wrong.example"
        ),
    )
    .await
    .unwrap_err();
    println!("      {err}");
    match &err {
        Error::Tls(TlsError::HostnameMismatch {
            server_name,
            presented,
        }) => {
            assert_eq!(server_name, "wrong.example");
            if !presented.is_empty() {
                assert!(presented.iter().any(|n| n == "localhost"), "{presented:?}");
                assert!(presented.iter().any(|n| n == "127.0.0.1"), "{presented:?}");
            }
        }
        other => panic!("expected Tls(HostnameMismatch), got {other:?}"),
    }

    // (c) Trusting a CA that did not sign the server's certificate.
    let other = other_ca(&node.dir);
    let err = connect(
        "(c) untrusted CA",
        &format!(
            "amqps://guest:guest@localhost:{tls}/%2f?cacertfile={}",
            other.display()
        ),
    )
    .await
    .unwrap_err();
    println!("      {err}");
    assert!(
        matches!(&err, Error::Tls(TlsError::UnknownCa { server_name }) if server_name == "localhost"),
        "expected Tls(UnknownCa), got {err:?}"
    );

    // (c') The same server with verification off (`verify_none`, for tests only) connects:
    // the handshake signature is still checked against the certificate shown.
    let conn = connect(
        "(c') verify_none, no CA given",
        &format!("amqps://guest:guest@localhost:{tls}/%2f?verify=verify_none"),
    )
    .await
    .unwrap();
    conn.close().await.unwrap();

    // (c'') amqps to the plain AMQP port: the broker answers TLS with its protocol header.
    let err = connect(
        "(c'') amqps to the plain port",
        &format!(
            "amqps://guest:guest@localhost:{}/%2f?cacertfile={ca}",
            node.plain_port()
        ),
    )
    .await
    .unwrap_err();
    println!("      {err}");
    match &err {
        Error::Tls(TlsError::Handshake { reason, .. }) => {
            assert!(reason.contains("is this a TLS port"), "{reason}");
        }
        other => panic!("expected Tls(Handshake), got {other:?}"),
    }

    // (d) EXTERNAL: the client certificate's CN is the user; RabbitMQ checks `user_id`
    // against the authenticated user, so an accepted publish with user_id = CN proves it.
    let external = format!(
        "amqps://localhost:{tls}/%2f?auth_mechanism=external&certfile={cert}&keyfile={key}&cacertfile={ca}"
    );
    let conn = connect("(d) EXTERNAL with a client certificate", &external)
        .await
        .unwrap();
    let as_user = BasicProperties::builder()
        .with_user_id(ShortStr::try_from(user.as_str()).unwrap())
        .build()
        .unwrap();
    assert_eq!(round_trip(&conn, &as_user, "as the cert's CN").await, user);
    // The same publish claiming to be guest is refused: the identity is not guest.
    let ch = conn.open_channel().await.unwrap();
    ch.confirm_select().await.unwrap();
    let as_guest = BasicProperties::builder()
        .with_user_id("guest")
        .build()
        .unwrap();
    let confirm = ch
        .basic_publish("", "nowhere", PublishOptions::default(), &as_guest, "x")
        .await
        .unwrap();
    let err = bounded("(d) user_id=guest refused", confirm)
        .await
        .unwrap_err();
    println!("      {err}");
    match &err {
        Error::ChannelClosed(reason) => assert_eq!(reason.code, ReplyCode::PRECONDITION_FAILED),
        other => panic!("expected ChannelClosed(406), got {other:?}"),
    }
    // And the broker lists the connection as that user, authenticated by EXTERNAL over TLS.
    let listing = node
        .ctl(&[
            "list_connections",
            "--quiet",
            "--no-table-headers",
            "user",
            "auth_mechanism",
            "ssl",
            "peer_cert_subject",
            "ssl_protocol",
        ])
        .await;
    println!("      list_connections: {}", listing.trim());
    let line = listing
        .lines()
        .find(|l| l.starts_with(&format!("{user}\t")))
        .unwrap_or_else(|| panic!("no connection of {user} in {listing:?}"));
    assert!(line.contains("EXTERNAL") && line.contains("true"), "{line}");
    assert!(line.contains(&format!("CN={user}")), "{line}");
    conn.close().await.unwrap();

    // (e) EXTERNAL without a client certificate: the broker still offers EXTERNAL (so that
    // the refusal can say why) and then refuses it.
    let err = connect(
        "(e) EXTERNAL without a client certificate",
        &format!("amqps://localhost:{tls}/%2f?auth_mechanism=external&cacertfile={ca}"),
    )
    .await
    .unwrap_err();
    println!("      {err}");
    match &err {
        Error::AuthenticationFailed { mechanism, .. } => assert_eq!(*mechanism, "EXTERNAL"),
        other => panic!("expected AuthenticationFailed, got {other:?}"),
    }
    assert_eq!(err.reply_code(), Some(ReplyCode::ACCESS_REFUSED));

    // (f) The application's own rustls configuration (`TlsOptions::from_rustls`), built in
    // memory from the same PEM files: the broker authenticates its client certificate.
    let provider = Arc::new(amqp_client::rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let rustls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap())
        .unwrap();
    let config = ConnectionConfig::builder()
        .host("localhost")
        .tls(TlsOptions::from_rustls(Arc::new(rustls)))
        .port(tls)
        .auth_mechanism(AuthMechanism::External)
        .connection_timeout(Duration::from_secs(10))
        .build();
    let conn = bounded(
        "(f) EXTERNAL through a prebuilt rustls ClientConfig",
        Connection::connect_with(config),
    )
    .await
    .unwrap();
    assert_eq!(round_trip(&conn, &as_user, "own rustls config").await, user);
    conn.close().await.unwrap();

    println!("all cases in {:.1?} (node start included)", began.elapsed());
}
