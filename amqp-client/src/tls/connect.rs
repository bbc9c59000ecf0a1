//! The TLS handshake (feature `tls`): rustls through tokio-rustls, configured from
//! [`TlsOptions`].
//!
//! Unless the application passed its own `ClientConfig` ([`TlsOptions::rustls_config`]), each
//! handshake builds one with the *ring* provider passed explicitly, so nothing depends on (or
//! installs) a process-wide default provider, and a changed CA file is picked up on the next
//! reconnect. Reading the PEM files and the system roots per connection costs a few
//! milliseconds, against a handshake that already costs round trips.

use std::io;
use std::path::Path;
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

use super::TlsError;
use crate::config::TlsOptions;

/// Runs the client handshake on a connected socket: with `opts.rustls_config` as given, else
/// trust roots from `opts.ca_file` or the system, the client certificate if configured; the
/// server is checked against `opts.server_name` or else `host` (an IP address is checked
/// against the certificate's IP names). With `verify: false` any certificate is accepted,
/// and a warning is logged.
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

/// The rustls client configuration for `opts`: the application's own, or one built from the
/// files and `verify`.
pub(crate) fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, TlsError> {
    if let Some(config) = &opts.rustls_config {
        let replaced = [
            (opts.ca_file.is_some(), "ca_file"),
            (opts.cert_file.is_some(), "cert_file"),
            (opts.key_file.is_some(), "key_file"),
            (!opts.verify, "verify: false"),
        ];
        if let Some((_, what)) = replaced.into_iter().find(|(set, _)| *set) {
            return Err(TlsError::RustlsConfigConflict(what));
        }
        return Ok(Arc::clone(config.client_config()));
    }
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
    system_roots(roots)
}

/// The system's CA certificates (feature `native-roots`).
#[cfg(feature = "native-roots")]
fn system_roots(mut roots: RootCertStore) -> Result<RootCertStore, TlsError> {
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

/// Without the `native-roots` feature there are no system roots to fall back on.
#[cfg(not(feature = "native-roots"))]
fn system_roots(_roots: RootCertStore) -> Result<RootCertStore, TlsError> {
    Err(TlsError::NoTrustRoots(
        "amqp-client was built without its `native-roots` feature, so the system's CA \
         certificates are not read; set ca_file (`cacertfile`) or TlsOptions::rustls_config"
            .to_owned(),
    ))
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
mod tests;
