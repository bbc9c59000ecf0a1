//! Tests of the `tls` module.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{BasicConstraints, Certificate, CertificateParams, CertifiedIssuer, DnType, IsCa};
use rcgen::{ExtendedKeyUsagePurpose as Eku, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::*;

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "amqp-client-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA: its certificate and what signs with its key.
type Ca = CertifiedIssuer<'static, KeyPair>;

/// A leaf certificate and its key.
struct Issued(Certificate, KeyPair);

/// A self-signed CA named `name`.
fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf certificate for `names` issued by `ca`; `expired` puts its validity in 2000.
fn leaf(ca: &Ca, names: &[&str], usage: Eku, expired: bool) -> Issued {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.extended_key_usages = vec![usage];
    if expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2000, 12, 31);
    }
    let key = KeyPair::generate().unwrap();
    Issued(params.signed_by(&key, ca).unwrap(), key)
}

/// One test's PKI: the trusted CA, a client certificate from it, and their files, plus the
/// file of a CA that issued nothing here.
struct Pki {
    dir: TempDir,
    ca: Ca,
    client: Issued,
    ca_file: PathBuf,
    other_ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
}

/// A fresh [`Pki`] in its own temp dir.
fn pki() -> Pki {
    let dir = TempDir::new();
    let ca = ca("amqp-client test CA");
    let client = leaf(&ca, &["client"], Eku::ClientAuth, false);
    Pki {
        ca_file: dir.write("ca.pem", &ca.pem()),
        other_ca_file: dir.write("other-ca.pem", &self::ca("other CA").pem()),
        cert_file: dir.write("client.pem", &client.0.pem()),
        key_file: dir.write("client-key.pem", &client.1.serialize_pem()),
        dir,
        ca,
        client,
    }
}

impl Pki {
    /// Options trusting the test CA and presenting the client certificate, changed by `f`.
    fn opts(&self, f: impl FnOnce(&mut TlsOptions)) -> TlsOptions {
        let mut opts = TlsOptions {
            ca_file: Some(self.ca_file.clone()),
            cert_file: Some(self.cert_file.clone()),
            key_file: Some(self.key_file.clone()),
            ..TlsOptions::default()
        };
        f(&mut opts);
        opts
    }
}

type Served = JoinHandle<io::Result<Vec<u8>>>;

/// Serves one connection on 127.0.0.1 with a certificate for localhost and 127.0.0.1 from
/// `issuer`, requiring a client certificate from `pki.ca`. The task answers `ping` with
/// `pong` and returns the client certificate it saw.
async fn serve(pki: &Pki, issuer: &Ca, expired: bool) -> (SocketAddr, Served) {
    let cert = leaf(
        issuer,
        &["localhost", "127.0.0.1"],
        Eku::ServerAuth,
        expired,
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone());
    let key = PrivateKeyDer::try_from(cert.1.serialize_der()).unwrap();
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier.build().unwrap())
        .with_single_cert(vec![cert.0.der().clone()], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut tls = acceptor.accept(listener.accept().await?.0).await?;
        let seen = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        let mut ping = [0; 4];
        tls.read_exact(&mut ping).await?;
        tls.write_all(b"pong").await?;
        tls.shutdown().await?;
        seen.ok_or_else(|| io::Error::other("no client certificate"))
    });
    (addr, task)
}

/// Dials `addr` and runs [`handshake`] under a 10 s bound.
async fn connect(
    addr: SocketAddr,
    opts: &TlsOptions,
    host: &str,
) -> Result<TlsStream<TcpStream>, TlsError> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let limit = Duration::from_secs(10);
    tokio::time::timeout(limit, handshake(tcp, opts, host))
        .await
        .unwrap()
}

/// Connects, exchanges ping/pong, and returns the client certificate the server saw.
async fn round_trip(addr: SocketAddr, task: Served, opts: &TlsOptions, host: &str) -> Vec<u8> {
    let mut tls = connect(addr, opts, host).await.unwrap();
    tls.write_all(b"ping").await.unwrap();
    let mut pong = [0; 4];
    tls.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"pong");
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn handshake_with_ca_file_and_client_certificate() {
    let pki = pki();
    let (addr, task) = serve(&pki, &pki.ca, false).await;
    let seen = round_trip(addr, task, &pki.opts(|_| {}), "localhost").await;
    assert_eq!(seen, pki.client.0.der().to_vec());
}

#[tokio::test]
async fn handshake_by_ip_address_and_by_server_name() {
    let pki = pki();
    let (addr, task) = serve(&pki, &pki.ca, false).await;
    round_trip(addr, task, &pki.opts(|_| {}), "127.0.0.1").await;
    let (addr, task) = serve(&pki, &pki.ca, false).await;
    let opts = pki.opts(|o| o.server_name = Some("localhost".into()));
    round_trip(addr, task, &opts, "mq.internal.invalid").await;
}

#[tokio::test]
async fn wrong_server_name_is_a_host_name_mismatch() {
    let pki = pki();
    let (addr, _task) = serve(&pki, &pki.ca, false).await;
    let opts = pki.opts(|o| o.server_name = Some("wrong.example".into()));
    let err = connect(addr, &opts, "localhost").await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, TlsError::HostnameMismatch { server_name, .. } if server_name == "wrong.example")
    );
    assert!(
        text.contains("not valid for host name `wrong.example`"),
        "{text}"
    );
    assert!(text.contains("localhost, 127.0.0.1"), "{text}");
}

#[tokio::test]
async fn server_from_another_ca_is_unknown_ca() {
    let pki = pki();
    let (addr, _task) = serve(&pki, &pki.ca, false).await;
    let opts = pki.opts(|o| o.ca_file = Some(pki.other_ca_file.clone()));
    let err = connect(addr, &opts, "localhost").await.unwrap_err();
    assert!(matches!(err, TlsError::UnknownCa { .. }), "{err:?}");
    assert!(err.to_string().contains("unknown or untrusted CA"), "{err}");
}

#[tokio::test]
async fn expired_server_certificate() {
    let pki = pki();
    let (addr, _task) = serve(&pki, &pki.ca, true).await;
    let err = connect(addr, &pki.opts(|_| {}), "localhost")
        .await
        .unwrap_err();
    assert!(
        matches!(err, TlsError::CertificateExpired { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("has expired"), "{err}");
}

#[tokio::test]
async fn verify_false_accepts_an_untrusted_server() {
    let pki = pki();
    let (addr, task) = serve(&pki, &ca("untrusted CA"), false).await;
    let opts = pki.opts(|o| {
        o.ca_file = Some(pki.dir.0.join("never-read.pem"));
        o.server_name = Some("any.name.example".into());
        o.verify = false;
    });
    round_trip(addr, task, &opts, "localhost").await;
}

#[tokio::test]
async fn system_roots_do_not_trust_the_test_ca() {
    let pki = pki();
    let opts = pki.opts(|o| o.ca_file = None);
    match client_config(&opts) {
        // A machine without a CA bundle: the error says so and names the way out.
        Err(TlsError::NoTrustRoots(why)) => assert!(why.contains("cacertfile"), "{why}"),
        Err(e) => panic!("{e:?}"),
        Ok(_) => {
            let (addr, _task) = serve(&pki, &pki.ca, false).await;
            let err = connect(addr, &opts, "localhost").await.unwrap_err();
            assert!(matches!(err, TlsError::UnknownCa { .. }), "{err:?}");
        }
    }
}

#[tokio::test]
async fn missing_files_name_the_path() {
    let pki = pki();
    let missing = pki.dir.0.join("missing.pem");
    let set: [fn(&mut TlsOptions, PathBuf); 3] = [
        |o, p| o.ca_file = Some(p),
        |o, p| o.cert_file = Some(p),
        |o, p| o.key_file = Some(p),
    ];
    for set in set {
        let err = client_config(&pki.opts(|o| set(o, missing.clone()))).unwrap_err();
        assert!(
            matches!(&err, TlsError::ReadFile { path, .. } if *path == missing),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read {}: ", missing.display()))
        );
    }
    // The same error from handshake(), before anything is sent.
    let (addr, _task) = serve(&pki, &pki.ca, false).await;
    let opts = pki.opts(|o| o.ca_file = Some(missing.clone()));
    let err = connect(addr, &opts, "localhost").await.unwrap_err();
    assert!(matches!(err, TlsError::ReadFile { .. }), "{err:?}");
}

#[test]
fn bad_files_and_settings() {
    let pki = pki();
    let empty = pki.dir.write("empty.pem", "");
    let broken = pki
        .dir
        .write("broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
    let (cert, key, ca) = (&pki.cert_file, &pki.key_file, &pki.ca_file);
    let cases = [
        (
            pki.opts(|o| o.key_file = None),
            r#"IncompleteClientIdentity { missing: "key_file" }"#,
        ),
        (
            pki.opts(|o| o.cert_file = None),
            r#"IncompleteClientIdentity { missing: "cert_file" }"#,
        ),
        (pki.opts(|o| o.ca_file = Some(key.clone())), "NoCertificate"),
        (
            pki.opts(|o| o.ca_file = Some(empty.clone())),
            "NoCertificate",
        ),
        (
            pki.opts(|o| o.cert_file = Some(empty.clone())),
            "NoCertificate",
        ),
        (
            pki.opts(|o| o.key_file = Some(cert.clone())),
            "NoPrivateKey",
        ),
        (pki.opts(|o| o.ca_file = Some(broken.clone())), "InvalidPem"),
        // A certificate whose key is not the key file's.
        (
            pki.opts(|o| o.cert_file = Some(ca.clone())),
            "InvalidClientIdentity",
        ),
    ];
    for (opts, want) in cases {
        let err = client_config(&opts).unwrap_err();
        assert!(format!("{err:?}").starts_with(want), "{want}: {err:?}");
    }
    assert!(client_config(&pki.opts(|_| {})).is_ok());
    let unverified = TlsOptions {
        verify: false,
        ..TlsOptions::default()
    };
    assert!(client_config(&unverified).is_ok());
}

#[test]
fn server_names() {
    let opts = TlsOptions::default();
    for ip in ["127.0.0.1", "::1", "[::1]"] {
        assert!(
            matches!(server_name(&opts, ip), Ok(ServerName::IpAddress(_))),
            "{ip}"
        );
    }
    assert!(matches!(
        server_name(&opts, "mq.example"),
        Ok(ServerName::DnsName(_))
    ));
    let named = TlsOptions {
        server_name: Some("bad name!".into()),
        ..opts
    };
    let err = server_name(&named, "mq.example").unwrap_err();
    assert_eq!(err.to_string(), "invalid TLS server name `bad name!`");
}

#[test]
fn errors_are_cloneable_and_plain_io_errors_pass_through() {
    let err = classify(io::Error::new(io::ErrorKind::ConnectionReset, "reset"), "h");
    assert!(matches!(err.clone(), TlsError::Io(e) if e.kind() == io::ErrorKind::ConnectionReset));
    let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
    let err = classify(io::Error::new(io::ErrorKind::InvalidData, alert), "h");
    let text = err.to_string();
    assert!(
        text.contains("CertificateRequired") && text.contains("cert_file"),
        "{text}"
    );
    let garbage = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
    let err = classify(io::Error::new(io::ErrorKind::InvalidData, garbage), "h");
    assert!(err.to_string().contains("is this a TLS port"), "{err}");
}

/// A rustls configuration built in memory, as an application would: the test CA as the only
/// root, and the client certificate.
fn rustls_config(pki: &Pki) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let key = PrivateKeyDer::try_from(pki.client.1.serialize_der()).unwrap();
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![pki.client.0.der().clone()], key)
        .unwrap();
    Arc::new(config)
}

#[tokio::test]
async fn handshake_with_a_prebuilt_rustls_config() {
    let pki = pki();
    let config = rustls_config(&pki);
    let opts = TlsOptions::from_rustls(Arc::clone(&config));
    // Used as it is: no files read, nothing rebuilt.
    assert!(Arc::ptr_eq(&client_config(&opts).unwrap(), &config));
    let (addr, task) = serve(&pki, &pki.ca, false).await;
    let seen = round_trip(addr, task, &opts, "localhost").await;
    assert_eq!(seen, pki.client.0.der().to_vec());
    // `server_name` still names what the configuration's verifier checks.
    let (addr, task) = serve(&pki, &pki.ca, false).await;
    let named = TlsOptions {
        server_name: Some("localhost".into()),
        ..opts.clone()
    };
    round_trip(addr, task, &named, "mq.internal.invalid").await;
    // Its roots are the only ones: a server from another CA is refused.
    let (addr, _task) = serve(&pki, &ca("other CA"), false).await;
    let err = connect(addr, &opts, "localhost").await.unwrap_err();
    assert!(matches!(err, TlsError::UnknownCa { .. }), "{err:?}");
}

#[test]
fn a_rustls_config_with_files_or_verify_off_is_a_conflict() {
    let pki = pki();
    let config = crate::RustlsConfig::from(rustls_config(&pki));
    let with = |f: fn(&mut TlsOptions)| {
        let mut opts = TlsOptions {
            rustls_config: Some(config.clone()),
            ..TlsOptions::default()
        };
        f(&mut opts);
        client_config(&opts).unwrap_err()
    };
    type Case = (fn(&mut TlsOptions), &'static str);
    let cases: [Case; 4] = [
        (|o| o.ca_file = Some("ca.pem".into()), "ca_file"),
        (|o| o.cert_file = Some("c.pem".into()), "cert_file"),
        (|o| o.key_file = Some("k.pem".into()), "key_file"),
        (|o| o.verify = false, "verify: false"),
    ];
    for (f, what) in cases {
        let err = with(f);
        assert!(
            matches!(err, TlsError::RustlsConfigConflict(w) if w == what),
            "{err:?}"
        );
        assert!(err.to_string().contains(what), "{err}");
    }
    // Equal by identity, and never printed in full.
    assert_eq!(config.clone(), config);
    assert_ne!(config, crate::RustlsConfig::from(rustls_config(&pki)));
    assert_eq!(format!("{config:?}"), "RustlsConfig(..)");
}
