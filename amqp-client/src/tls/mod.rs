//! TLS for `amqps://`: [`TlsError`] always; the rustls handshake (`connect.rs`) with the `tls`
//! feature, and without it a handshake that fails with [`TlsError::NotEnabled`] so that a
//! build without TLS still compiles, and says why an `amqps://` connection cannot be made.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

#[cfg(feature = "tls")]
mod connect;

#[cfg(feature = "tls")]
pub(crate) use connect::handshake;

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
    /// A [`TlsOptions::rustls_config`](crate::TlsOptions::rustls_config) was given together
    /// with a setting it replaces (`ca_file`, `cert_file`, `key_file` or `verify: false`): the
    /// two would disagree on what is trusted, so neither wins silently.
    #[error(
        "TlsOptions::rustls_config replaces {0}; set the files in the rustls ClientConfig or drop it"
    )]
    RustlsConfigConflict(&'static str),
    /// TLS was asked for (`amqps://` or [`ConnectionConfig::tls`](crate::ConnectionConfig::tls))
    /// but this build of `amqp-client` has no TLS: its `tls` feature (on by default) is off.
    #[error(
        "TLS was requested (amqps:// or TlsOptions) but amqp-client was built without its `tls` feature"
    )]
    NotEnabled,
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

/// A prebuilt rustls client configuration for
/// [`TlsOptions::rustls_config`](crate::TlsOptions::rustls_config): the roots, client
/// certificate, verifier, protocol versions and ALPN are all the application's. Made from an
/// `Arc<rustls::ClientConfig>` (with the `tls` feature; without it no value can be made);
/// cloning it clones the `Arc`, and two are equal when they share the same `ClientConfig`.
///
/// ```
/// # #[cfg(feature = "tls")] {
/// use std::sync::Arc;
/// use amqp_client::RustlsConfig;
/// use amqp_client::rustls::{ClientConfig, RootCertStore};
///
/// let provider = Arc::new(amqp_client::rustls::crypto::ring::default_provider());
/// let config = ClientConfig::builder_with_provider(provider)
///     .with_safe_default_protocol_versions()
///     .expect("ring supports TLS 1.2 and 1.3")
///     .with_root_certificates(RootCertStore::empty())
///     .with_no_client_auth();
/// let config = RustlsConfig::new(Arc::new(config));
/// assert_eq!(config.clone(), config);
/// # }
/// ```
#[derive(Clone)]
pub struct RustlsConfig(Inner);

/// What [`RustlsConfig`] holds: the shared `ClientConfig`, or, without the `tls` feature,
/// nothing at all (no value can be made).
#[cfg(feature = "tls")]
type Inner = Arc<rustls::ClientConfig>;
#[cfg(not(feature = "tls"))]
#[derive(Clone)]
enum Inner {}

#[cfg(feature = "tls")]
impl RustlsConfig {
    /// Wraps a rustls client configuration.
    pub fn new(config: Arc<rustls::ClientConfig>) -> Self {
        Self(config)
    }

    /// The rustls client configuration.
    pub fn client_config(&self) -> &Arc<rustls::ClientConfig> {
        &self.0
    }
}

#[cfg(feature = "tls")]
impl From<Arc<rustls::ClientConfig>> for RustlsConfig {
    fn from(config: Arc<rustls::ClientConfig>) -> Self {
        Self(config)
    }
}

#[cfg(feature = "tls")]
impl From<rustls::ClientConfig> for RustlsConfig {
    fn from(config: rustls::ClientConfig) -> Self {
        Self(Arc::new(config))
    }
}

impl PartialEq for RustlsConfig {
    fn eq(&self, other: &Self) -> bool {
        #[cfg(feature = "tls")]
        return Arc::ptr_eq(&self.0, &other.0);
        #[cfg(not(feature = "tls"))]
        {
            let _ = other;
            match self.0 {}
        }
    }
}

impl Eq for RustlsConfig {}

impl fmt::Debug for RustlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // rustls's own `Debug` is long and says nothing useful in a connection's settings.
        f.write_str("RustlsConfig(..)")
    }
}

/// Without the `tls` feature: every TLS connection fails, after TCP connect, with
/// [`TlsError::NotEnabled`]. (Its success type is the plain socket only so that the driver
/// compiles unchanged; it never succeeds.)
#[cfg(not(feature = "tls"))]
pub(crate) async fn handshake(
    tcp: tokio::net::TcpStream,
    _opts: &crate::config::TlsOptions,
    _host: &str,
) -> Result<tokio::net::TcpStream, TlsError> {
    drop(tcp);
    Err(TlsError::NotEnabled)
}

#[cfg(all(test, not(feature = "tls")))]
mod tests {
    use super::TlsError;
    use crate::{Connection, Error};

    #[tokio::test]
    async fn without_the_feature_amqps_is_a_typed_error() {
        // A listener that never answers: the TCP connect succeeds, then TLS is refused.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let err = Connection::connect(&format!("amqps://127.0.0.1:{port}/"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Tls(TlsError::NotEnabled)), "{err:?}");
        assert!(
            err.to_string().contains("without its `tls` feature"),
            "{err}"
        );
    }
}
