//! TLS for `amqps://`: rustls through tokio-rustls, configured from [`TlsOptions`].
//!
//! Each handshake builds its own `ClientConfig` with the *ring* provider passed explicitly,
//! so nothing depends on (or installs) a process-wide default provider, and a changed CA file
//! is picked up on the next reconnect. Reading the PEM files and the system roots per
//! connection costs a few milliseconds, against a handshake that already costs round trips.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::TlsOptions;

/// Why TLS could not be set up: a problem with the local files and settings, or the handshake
/// with the server failed. Cloneable (I/O errors are shared behind an `Arc`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: Arc<io::Error>,
    },
    /// A file is not well-formed PEM.
    #[error("{} is not valid PEM: {reason}", path.display())]
    InvalidPem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate file (`ca_file`, `cert_file`) holds no certificate.
    #[error("no certificate found in {}", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key.
    #[error("no private key (PKCS#8, PKCS#1 or SEC1 PEM block) found in {}", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// Only one of `cert_file` and `key_file` was set.
    #[error(
        "a client certificate needs both cert_file (`certfile`) and key_file (`keyfile`); {missing} is missing"
    )]
    IncompleteClientIdentity {
        /// The option that is missing.
        missing: &'static str,
    },
    /// The client certificate and key were read but cannot be used together.
    #[error("the client certificate and key cannot be used: {0}")]
    InvalidClientIdentity(String),
    /// The name to verify the server against is neither a DNS name nor an IP address.
    #[error("invalid TLS server name `{0}`")]
    InvalidServerName(String),
    /// Verification is on but there is no CA certificate to trust.
    #[error("no trusted CA certificates: {0}")]
    NoTrustRoots(String),
    /// rustls refused the configuration.
    #[error("TLS configuration failed: {0}")]
    Config(String),
    /// The server's certificate does not name the host that was dialled.
    #[error(
        "the server's certificate is not valid for host name `{server_name}`{}; connect by a \
         name it holds or set server_name_indication",
        held_names(presented)
    )]
    HostnameMismatch {
        /// The name checked.
        server_name: String,
        /// The names in the certificate, when rustls reports them.
        presented: Vec<String>,
    },
    /// The server's certificate chain does not lead to a trusted CA.
    #[error(
        "the certificate of `{server_name}` is signed by an unknown or untrusted CA; set ca_file (`cacertfile`) to the CA that issued it"
    )]
    UnknownCa {
        /// The name checked.
        server_name: String,
    },
    /// The server's certificate has expired.
    #[error("the certificate of `{server_name}` has expired (or this machine's clock is wrong)")]
    CertificateExpired {
        /// The name checked.
        server_name: String,
    },
    /// Any other handshake failure, with rustls's description.
    #[error("TLS handshake with `{server_name}` failed: {reason}")]
    Handshake {
        /// The name checked.
        server_name: String,
        /// What went wrong.
        reason: String,
    },
    /// The connection failed underneath the handshake.
    #[error("I/O error during the TLS handshake: {0}")]
    Io(Arc<io::Error>),
}

/// ` (it is for a, b)` for a mismatch message, or nothing when the names are unknown.
fn held_names(presented: &[String]) -> String {
    match presented {
        [] => String::new(),
        names => format!(" (it is for {})", names.join(", ")),
    }
}

/// Runs the client handshake on a connected socket: trust roots from `opts.ca_file` or the
/// system, the client certificate if configured, and the server checked against
/// `opts.server_name` or else `host` (an IP address is checked against the certificate's IP
/// names). With `verify: false` any certificate is accepted, and a warning is logged.
pub(crate) async fn handshake(
    tcp: TcpStream,
    opts: &TlsOptions,
    host: &str,
) -> Result<TlsStream<TcpStream>, TlsError> {
    let name = server_name(opts, host)?;
    let config = client_config(opts)?;
    let shown = name.to_str().into_owned();
    if !opts.verify {
        tracing::warn!(
            server = %shown,
            "TLS certificate verification is disabled (verify_none): the connection is encrypted \
             but the server is not authenticated"
        );
    }
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| classify(e, &shown))
}

/// The name the certificate must hold: `opts.server_name`, else `host` (a bracketed IPv6
/// literal, as URIs write it, is unbracketed).
pub(crate) fn server_name(opts: &TlsOptions, host: &str) -> Result<ServerName<'static>, TlsError> {
    let name = opts.server_name.as_deref().unwrap_or(host);
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::InvalidServerName(name.to_owned()))
}

/// The rustls client configuration for `opts`.
pub(crate) fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Read the client identity first: its errors concern the caller's own files and are the
    // same whether or not the server is verified.
    let identity = client_identity(opts)?;
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if opts.verify {
        builder.with_root_certificates(root_store(opts.ca_file.as_deref())?)
    } else {
        // `ca_file` is not read: nothing would be checked against it.
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
    };
    let config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsError::InvalidClientIdentity(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The client certificate chain and key, when both files are set.
fn client_identity(
    opts: &TlsOptions,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsError> {
    match (&opts.cert_file, &opts.key_file) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(TlsError::IncompleteClientIdentity {
            missing: "key_file",
        }),
        (None, Some(_)) => Err(TlsError::IncompleteClientIdentity {
            missing: "cert_file",
        }),
        (Some(cert), Some(key)) => Ok(Some((read_certificates(cert)?, read_private_key(key)?))),
    }
}

/// Trust roots: every certificate of `ca_file`, or the system's store.
fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    if let Some(path) = ca_file {
        let (added, _) = roots.add_parsable_certificates(read_certificates(path)?);
        if added == 0 {
            return Err(TlsError::NoTrustRoots(format!(
                "{} holds no usable CA certificate",
                path.display()
            )));
        }
        return Ok(roots);
    }
    // rustls-native-certs returns what it could load plus per-source errors; a partly
    // unreadable store is still usable, so errors only matter when nothing loaded.
    let native = rustls_native_certs::load_native_certs();
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(
        added,
        ignored,
        errors = native.errors.len(),
        "loaded system CA certificates"
    );
    if added == 0 {
        let why = match native.errors.first() {
            Some(e) => format!("the system store is empty or unreadable ({e})"),
            None => "the system store is empty".to_owned(),
        };
        return Err(TlsError::NoTrustRoots(format!(
            "{why}; set ca_file (`cacertfile`)"
        )));
    }
    Ok(roots)
}

/// Every certificate in a PEM file; other blocks (keys) are skipped.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| pem_error(path, e, true))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_owned(),
        },
        e => pem_error(path, e, false),
    })
}

/// Maps a PEM error. Format details of a key file are withheld: they could quote key bytes.
fn pem_error(path: &Path, e: pem::Error, show_details: bool) -> TlsError {
    let path = path.to_owned();
    match e {
        pem::Error::Io(source) => TlsError::ReadFile {
            path,
            source: Arc::new(source),
        },
        pem::Error::NoItemsFound => TlsError::NoCertificate { path },
        e if show_details => TlsError::InvalidPem {
            path,
            reason: e.to_string(),
        },
        _ => TlsError::InvalidPem {
            path,
            reason: "malformed PEM in a key file".to_owned(),
        },
    }
}

/// Turns a handshake error into a [`TlsError`], naming the common certificate failures.
fn classify(err: io::Error, server_name: &str) -> TlsError {
    // tokio-rustls wraps rustls errors in `io::Error`s of kind `InvalidData`.
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return TlsError::Io(Arc::new(err));
    };
    use CertificateError::{Expired, ExpiredContext, NotValidForName, NotValidForNameContext};
    use rustls::Error::{AlertReceived, InvalidCertificate, InvalidMessage};
    let server_name = server_name.to_owned();
    let reason = match tls {
        InvalidCertificate(NotValidForName) => {
            let presented = Vec::new();
            return TlsError::HostnameMismatch {
                server_name,
                presented,
            };
        }
        InvalidCertificate(NotValidForNameContext { presented, .. }) => {
            let presented = presented.iter().map(|n| plain_name(n)).collect();
            return TlsError::HostnameMismatch {
                server_name,
                presented,
            };
        }
        InvalidCertificate(CertificateError::UnknownIssuer) => {
            return TlsError::UnknownCa { server_name };
        }
        InvalidCertificate(Expired | ExpiredContext { .. }) => {
            return TlsError::CertificateExpired { server_name };
        }
        // What a plain AMQP listener sends back (its protocol header) is not a TLS record.
        InvalidMessage(_) => {
            format!("{tls}; is this a TLS port (amqps is usually 5671, not 5672)?")
        }
        AlertReceived(alert) => format!(
            "the server sent the alert {alert:?}; if it requires a client certificate, check \
             cert_file and key_file and that the server trusts their CA"
        ),
        other => other.to_string(),
    };
    TlsError::Handshake {
        server_name,
        reason,
    }
}

/// `localhost` for rustls's `DnsName("localhost")`, `10.0.0.1` for `IpAddress(10.0.0.1)`: it
/// reports presented names in their `Debug` form, which reads badly in an error message.
fn plain_name(name: &str) -> String {
    let dns = name
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"));
    let ip = || {
        name.strip_prefix("IpAddress(")
            .and_then(|n| n.strip_suffix(')'))
    };
    dns.or_else(ip).unwrap_or(name).to_owned()
}

/// The verifier behind `verify: false`: every certificate and name is accepted. Handshake
/// signatures are still checked, so the server at least holds the key of the certificate it
/// showed, but nothing ties that certificate to anyone.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
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
        assert!(
            matches!(err.clone(), TlsError::Io(e) if e.kind() == io::ErrorKind::ConnectionReset)
        );
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
}
