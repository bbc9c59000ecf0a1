//! Connection settings: what [`Connection::connect_with`](crate::Connection::connect_with)
//! needs, built from a URI ([`ConnectionConfig::from_uri`]) or with the typed
//! [`ConnectionConfigBuilder`].
//!
//! Every limit the client enforces lives here, in [`Limits`], with its default and the reason
//! for it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A password (or any secret) that never prints: `Debug` and `Display` show `***`.
///
/// ```
/// use amqp_client::Secret;
/// let s = Secret::new("hunter2");
/// assert_eq!(format!("{s} {s:?}"), "*** ***");
/// assert_eq!(s.expose(), "hunter2");
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the one place that must send it (connection.start-ok).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The SASL mechanism used in connection.start-ok.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMechanism {
    /// `PLAIN`: user name and password (RFC 4616). RabbitMQ's default.
    #[default]
    Plain,
    /// `AMQPLAIN`: user name and password as a field table (RabbitMQ's legacy mechanism).
    Amqplain,
    /// `EXTERNAL`: identity from the TLS client certificate.
    External,
}

impl AuthMechanism {
    /// The mechanism's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::Amqplain => "AMQPLAIN",
            Self::External => "EXTERNAL",
        }
    }
}

/// TLS settings for `amqps://` connections: PEM files (as the URI's `cacertfile`, `certfile`,
/// `keyfile` give them), or the application's own rustls configuration
/// ([`rustls_config`](Self::rustls_config), or `TlsOptions::from_rustls`). Needs the `tls` feature (on by default); without it
/// a TLS connection fails with [`TlsError::NotEnabled`](crate::TlsError::NotEnabled).
///
/// ```
/// use amqp_client::{ConnectionConfig, TlsOptions};
/// let tls = TlsOptions {
///     ca_file: Some("/etc/rabbitmq/ca.pem".into()),
///     server_name: Some("mq.internal".into()),
///     ..TlsOptions::default()
/// };
/// let config = ConnectionConfig::builder().host("10.0.0.7").tls(tls).build();
/// assert_eq!(config.port, 5671);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of CA certificates to trust instead of the system roots (`cacertfile`).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for mutual TLS and EXTERNAL (`certfile`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate (`keyfile`).
    pub key_file: Option<PathBuf>,
    /// Name checked against the server certificate, when it differs from the host
    /// (`server_name_indication`).
    pub server_name: Option<String>,
    /// Verify the server's chain and name (`verify=verify_peer`, the default). Turning it off
    /// (`verify=verify_none`) is for tests only: anyone on the path can then read everything.
    pub verify: bool,
    /// A prebuilt rustls client configuration, used as it is instead of one built from
    /// `ca_file`, `cert_file`, `key_file` and `verify` (setting any of those as well is
    /// [`TlsError::RustlsConfigConflict`](crate::TlsError::RustlsConfigConflict)).
    /// `server_name` still applies: it is the name the configuration's verifier checks.
    pub rustls_config: Option<crate::RustlsConfig>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self {
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
            verify: true,
            rustls_config: None,
        }
    }
}

impl TlsOptions {
    /// TLS with the application's own rustls configuration (its roots, client certificate,
    /// verifier, ALPN): see [`rustls_config`](Self::rustls_config).
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use amqp_client::{Connection, ConnectionConfig, TlsOptions};
    /// use amqp_client::rustls::{ClientConfig, RootCertStore};
    ///
    /// # async fn demo(roots: RootCertStore) -> Result<(), amqp_client::Error> {
    /// let provider = Arc::new(amqp_client::rustls::crypto::ring::default_provider());
    /// let rustls = ClientConfig::builder_with_provider(provider)
    ///     .with_safe_default_protocol_versions()
    ///     .expect("ring supports TLS 1.2 and 1.3")
    ///     .with_root_certificates(roots)
    ///     .with_no_client_auth();
    /// let config = ConnectionConfig::builder()
    ///     .host("mq.internal")
    ///     .tls(TlsOptions::from_rustls(Arc::new(rustls)))
    ///     .build();
    /// let conn = Connection::connect_with(config).await?;
    /// # conn.close().await
    /// # }
    /// ```
    #[cfg(feature = "tls")]
    pub fn from_rustls(config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        Self {
            rustls_config: Some(crate::RustlsConfig::new(config)),
            ..Self::default()
        }
    }
}

/// Limits on what the peer or the caller can make the client hold. Defaults are safe for a
/// service; raise them deliberately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message body accepted from the broker. A content header declaring more closes
    /// the channel with a clear error before anything is allocated for the body. Default
    /// 128 MiB, RabbitMQ's own default `max_message_size`.
    pub max_message_size: u64,
    /// Deliveries buffered per consumer when the consumer's prefetch does not bound them
    /// (prefetch 0). When a consumer's buffer is full the connection stops reading from the
    /// socket until it drains, so memory stays bounded. Default 8192.
    pub consumer_buffer: usize,
    /// Bytes queued for the socket above which publishers wait for the driver to write
    /// (back-pressure instead of unbounded buffering). Default 4 MiB.
    pub outbound_high_water: usize,
    /// Returned (basic.return) messages held until the publisher's confirm claims them, per
    /// channel. Default 1024.
    pub max_pending_returns: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 128 * 1024 * 1024,
            consumer_buffer: 8192,
            outbound_high_water: 4 * 1024 * 1024,
            max_pending_returns: 1024,
        }
    }
}

/// Read batching for fast input streams (Linux, plain TCP): while the broker streams at least
/// [`min_bytes`](Self::min_bytes)` / 8` bytes per [`max_wait`](Self::max_wait), the socket's
/// receive low-water mark (`SO_RCVLOWAT`) is raised to `min_bytes`, so the kernel wakes the
/// connection once per `min_bytes` instead of once per broker flush, and a timer reads
/// whatever is left after `max_wait`. Fewer wake-ups, reads and ack writes per message, for
/// at most `max_wait` (plus the runtime timer's 1 ms resolution) of added delay while the
/// stream lasts. Slower input (RPC replies, confirms, a few thousand deliveries a second)
/// never engages it; a timer read that brings less than `min_bytes / 16` ends it. Large
/// deliveries that fill the mark in under a quarter of `max_wait` double it, up to four
/// deliveries' worth (at most 512 KiB), and each timer read halves it back toward
/// `min_bytes`: a fast 64 KiB stream is read about once per three deliveries, not once per
/// one or two. The mark never exceeds half of what the consumers' prefetch (basic.qos) lets
/// the broker send before it waits for acks, so a small prefetch is never throttled by the
/// clock; when that half is under `min_bytes / 8`, reads stay eager.
///
/// TLS connections and other systems read as soon as bytes arrive, whatever this says.
///
/// ```
/// use amqp_client::{ConnectionConfig, ReadBatching};
/// use std::time::Duration;
/// // The lowest latency at any rate: no batching.
/// let eager = ConnectionConfig::builder().read_batching(None).build();
/// assert!(eager.read_batching.is_none());
/// // Bigger batches for a bulk consumer.
/// let bulk = ConnectionConfig::builder()
///     .read_batching(Some(ReadBatching { min_bytes: 128 * 1024, max_wait: Duration::from_millis(2) }))
///     .build();
/// assert_eq!(bulk.read_batching.map(|b| b.min_bytes), Some(128 * 1024));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadBatching {
    /// Bytes the kernel collects before waking the connection while batching (more for large
    /// deliveries, see above). Default 32 KiB (about 200 small deliveries).
    pub min_bytes: u32,
    /// Longest the connection leaves received bytes unread while batching. Default 1 ms.
    pub max_wait: Duration,
}

impl Default for ReadBatching {
    fn default() -> Self {
        Self {
            min_bytes: 32 * 1024,
            max_wait: Duration::from_millis(1),
        }
    }
}

/// Everything needed to open a connection.
///
/// ```
/// use amqp_client::ConnectionConfig;
/// let cfg = ConnectionConfig::builder()
///     .host("127.0.0.1")
///     .credentials("billing", "s3cret")
///     .heartbeat(30)
///     .connection_name("billing-worker")
///     .build();
/// assert_eq!(cfg.port, 5672);
/// assert!(!format!("{cfg:?}").contains("s3cret"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Host name or address of the broker.
    pub host: String,
    /// TCP port: 5672, or 5671 for TLS.
    pub port: u16,
    /// Virtual host to open (`/` by default).
    pub vhost: String,
    /// User name for PLAIN and AMQPLAIN.
    pub username: String,
    /// Password; never printed.
    pub password: Secret,
    /// SASL mechanism.
    pub auth_mechanism: AuthMechanism,
    /// Heartbeat interval in seconds the client asks for; the smaller non-zero of this and
    /// the server's value wins, 0 on both sides disables heartbeats. Default 60.
    pub heartbeat: u16,
    /// Largest frame the client asks for (0 means no limit); negotiated down with the server's,
    /// but never below the spec's minimum of 4 096 (a smaller value here or from the server
    /// is raised to it). Default 131 072.
    pub frame_max: u32,
    /// Highest channel number the client asks for (0 means no limit); negotiated down with
    /// the server's. Default 2047.
    pub channel_max: u16,
    /// Bound on TCP connect, TLS and the whole AMQP handshake. Default 30 s.
    pub connection_timeout: Duration,
    /// Shown in the management UI (`connection_name` client property).
    pub connection_name: Option<String>,
    /// TLS settings; `Some` for `amqps://`.
    pub tls: Option<TlsOptions>,
    /// Limits on buffers and sizes.
    pub limits: Limits,
    /// Other brokers (`host`, `port`) of the same cluster, tried in turn after the first
    /// address: by the first connect when that address fails, and by recovery; from a URI
    /// with several hosts (`amqp://h1:5672,h2:5673/`).
    pub fallback_addresses: Vec<(String, u16)>,
    /// Automatic recovery after a lost connection (`None`, the default: a lost connection
    /// ends every handle with the error). See [`RecoveryPolicy`](crate::RecoveryPolicy).
    pub recovery: Option<crate::RecoveryPolicy>,
    /// Read batching for fast input streams (on by default; `None` reads every byte as soon
    /// as it arrives). See [`ReadBatching`].
    pub read_batching: Option<ReadBatching>,
    /// Merge a run of single acks, in delivery order, into one multiple ack per write (a
    /// multiple ack never covers a delivery the application holds, nacked or never saw). On
    /// by default; off, every ack goes out as the application sent it, one frame each (what
    /// other clients do; the benchmark shows both).
    pub coalesce_acks: bool,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 5672,
            vhost: "/".into(),
            username: "guest".into(),
            password: Secret::new("guest"),
            auth_mechanism: AuthMechanism::Plain,
            heartbeat: 60,
            frame_max: 131_072,
            channel_max: 2047,
            connection_timeout: Duration::from_secs(30),
            connection_name: None,
            tls: None,
            limits: Limits::default(),
            fallback_addresses: Vec::new(),
            recovery: None,
            read_batching: Some(ReadBatching::default()),
            coalesce_acks: true,
        }
    }
}

impl ConnectionConfig {
    /// A builder starting from the defaults (guest on 127.0.0.1:5672, vhost `/`).
    pub fn builder() -> ConnectionConfigBuilder {
        ConnectionConfigBuilder(Self::default())
    }

    /// `host:port`, for logs and errors (never the credentials).
    pub fn address(&self) -> String {
        format_address(&self.host, self.port)
    }

    /// Every address a connect or recovery may use: the first one, then the fallbacks.
    pub fn addresses(&self) -> Vec<(String, u16)> {
        let mut all = vec![(self.host.clone(), self.port)];
        all.extend(self.fallback_addresses.iter().cloned());
        all
    }

    /// The same settings with recovery turned on with `policy` (the one line that enables it).
    pub fn with_recovery(mut self, policy: crate::RecoveryPolicy) -> Self {
        self.recovery = Some(policy);
        self
    }
}

/// `host:port`, with brackets around an IPv6 host.
pub(crate) fn format_address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Typed builder for [`ConnectionConfig`]; every setter mirrors a URI parameter.
#[derive(Debug, Clone)]
pub struct ConnectionConfigBuilder(ConnectionConfig);

impl ConnectionConfigBuilder {
    /// Broker host.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.0.host = host.into();
        self
    }

    /// Broker port.
    pub fn port(mut self, port: u16) -> Self {
        self.0.port = port;
        self
    }

    /// Virtual host.
    pub fn vhost(mut self, vhost: impl Into<String>) -> Self {
        self.0.vhost = vhost.into();
        self
    }

    /// User name and password.
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.0.username = username.into();
        self.0.password = Secret::new(password);
        self
    }

    /// SASL mechanism.
    pub fn auth_mechanism(mut self, mechanism: AuthMechanism) -> Self {
        self.0.auth_mechanism = mechanism;
        self
    }

    /// Requested heartbeat interval in seconds (0 asks for none).
    pub fn heartbeat(mut self, seconds: u16) -> Self {
        self.0.heartbeat = seconds;
        self
    }

    /// Requested frame-max (0: no limit; below 4 096, the spec's minimum, it is raised to it).
    pub fn frame_max(mut self, frame_max: u32) -> Self {
        self.0.frame_max = frame_max;
        self
    }

    /// Requested channel-max.
    pub fn channel_max(mut self, channel_max: u16) -> Self {
        self.0.channel_max = channel_max;
        self
    }

    /// Bound on connecting and the handshake.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.0.connection_timeout = timeout;
        self
    }

    /// Connection name shown by the broker.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.0.connection_name = Some(name.into());
        self
    }

    /// Use TLS with these options (and port 5671 if the port is still the plain default).
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        if self.0.port == 5672 {
            self.0.port = 5671;
        }
        self.0.tls = Some(tls);
        self
    }

    /// Limits on buffers and sizes.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.0.limits = limits;
        self
    }

    /// Another broker of the cluster, tried when the ones before it fail (on the first
    /// connect and by recovery).
    pub fn fallback_address(mut self, host: impl Into<String>, port: u16) -> Self {
        self.0.fallback_addresses.push((host.into(), port));
        self
    }

    /// Automatic recovery with `policy`.
    pub fn recovery(mut self, policy: crate::RecoveryPolicy) -> Self {
        self.0.recovery = Some(policy);
        self
    }

    /// Read batching for fast input streams; `None` turns it off. See [`ReadBatching`].
    pub fn read_batching(mut self, batching: Option<ReadBatching>) -> Self {
        self.0.read_batching = batching;
        self
    }

    /// Whether consecutive acks coalesce into multiple acks (on by default); see
    /// [`ConnectionConfig::coalesce_acks`].
    pub fn coalesce_acks(mut self, on: bool) -> Self {
        self.0.coalesce_acks = on;
        self
    }

    /// The finished settings.
    pub fn build(self) -> ConnectionConfig {
        self.0
    }
}
