//! `amqp://` and `amqps://` URIs to and from [`ConnectionConfig`]; the rules are on
//! [`ConnectionConfig::from_uri`], which is where users read them.
//!
//! Error messages never contain the password. A URI whose password holds an unencoded `/`, `?`
//! or `#` splits in the wrong place, so when an `@` follows the host the messages show no
//! value taken from the URI at all ([`Echo`]).
//!
//! This file has the errors, the parsing of everything up to the `?`, the way back to a URI,
//! and redaction; `query.rs` the query parameters; `tests.rs` the tests.

use std::borrow::Cow;
use std::fmt;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::str::FromStr;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::config::{ConnectionConfig, Secret, TlsOptions};

mod query;

/// Why a URI could not be turned into a [`ConnectionConfig`]. No message contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// The URI does not start with `scheme://`.
    #[error("not an AMQP URI: expected `amqp://` or `amqps://` at the start")]
    MissingScheme,
    /// A scheme other than `amqp` or `amqps`.
    #[error("unsupported URI scheme `{0}`: expected `amqp` or `amqps`")]
    UnsupportedScheme(String),
    /// Whitespace or a control character inside the URI.
    #[error(
        "the URI contains whitespace or a control character at byte {offset}; encode spaces as %20"
    )]
    InvalidCharacter {
        /// Byte offset in the trimmed URI.
        offset: usize,
    },
    /// A `#fragment`, which AMQP URIs do not have (often an unencoded `#` in a password).
    #[error("AMQP URIs have no `#fragment`; percent-encode `#` as %23")]
    Fragment,
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding in the {component}")]
    InvalidPercentEncoding {
        /// Which part of the URI (`password`, `vhost`, ...).
        component: String,
    },
    /// Percent-decoded bytes that are not UTF-8.
    #[error("the {component} is not UTF-8 once percent-decoded")]
    InvalidUtf8 {
        /// Which part of the URI.
        component: String,
    },
    /// A malformed host (a bad IPv6 literal, an unclosed `[`).
    #[error("invalid host `{0}`")]
    InvalidHost(String),
    /// A port that is not a number from 1 to 65535.
    #[error("invalid port `{0}`: expected a number from 1 to 65535")]
    InvalidPort(String),
    /// A path with more than one segment.
    #[error("the vhost `{0}` has several path segments: percent-encode `/` in a vhost name as %2f")]
    MultipleSegments(String),
    /// An unencoded `@` after the host, in the vhost: usually a password with an unencoded
    /// `/`, `?` or `#` that split the URI in the wrong place.
    #[error(
        "unencoded `@` after the host: write `@` in a vhost as %40, and percent-encode `/`, `?` and `#` in a password"
    )]
    AtAfterHost,
    /// A query parameter this client does not know.
    #[error("unknown URI parameter `{0}`")]
    UnknownParameter(String),
    /// A query parameter given twice.
    #[error("URI parameter `{0}` is given more than once")]
    DuplicateParameter(&'static str),
    /// A query parameter whose value cannot be used.
    #[error("invalid value `{value}` for URI parameter `{name}`: expected {expected}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// The value found.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// A TLS parameter on an `amqp://` URI, which would be silently unused.
    #[error("URI parameter `{0}` only applies to TLS: use an `amqps://` URI")]
    TlsParameterOnPlainUri(&'static str),
}

/// Shown instead of a value when the URI may have split inside the password.
const HIDDEN: &str = "(not shown: the URI has an `@` after the host)";

/// RFC 3986 unreserved characters stay; everything else is percent-encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// Query values may also keep `/` and `:` (file paths stay readable).
const QUERY_VALUE: &AsciiSet = &COMPONENT.remove(b'/').remove(b':');

impl ConnectionConfig {
    /// Parses a RabbitMQ URI (<https://www.rabbitmq.com/docs/uri-spec>):
    ///
    /// ```text
    /// amqp[s]://[user[:password]@]host[:port][/vhost][?name=value&...]
    /// ```
    ///
    /// User, password, host and vhost are percent-decoded (`%2f` is `/`); an IPv6 host goes in
    /// brackets. `amqps` turns TLS on and defaults the port to 5671 (else 5672). Parameters
    /// (<https://www.rabbitmq.com/docs/uri-query-parameters>): `heartbeat` (seconds),
    /// `frame_max`, `channel_max`, `connection_timeout` (milliseconds), `auth_mechanism`
    /// (`plain`, `amqplain`, `external`, any case), `connection_name`, this client's own
    /// `max_message_size` (bytes, [`Limits::max_message_size`](crate::Limits)), and on `amqps` only
    /// `cacertfile`, `certfile`, `keyfile`, `server_name_indication` and `verify`
    /// (`verify_peer` or `verify_none`).
    ///
    /// Where the spec leaves room (each choice follows a RabbitMQ client):
    /// - Absent components keep [`ConnectionConfig::default`]'s values one by one: no user info
    ///   is guest/guest, a user without a password keeps the password `guest` (Erlang and Java
    ///   clients), an empty host is the default host.
    /// - An absent path *and an empty one* (`amqp://host/`) both mean the default vhost `/`, as
    ///   in the .NET, Go (amqp091-go) and Python (pika) clients. The spec (and the Erlang and
    ///   Java clients) read `amqp://host/` as the empty vhost name, which no broker has, so
    ///   honouring it only turns a common trailing slash into an access-refused.
    /// - Every parameter may appear at most once, and unknown ones are errors, so that a typo
    ///   such as `heartbeet=5` is not silently ignored. `+` stays a `+` (this is not form
    ///   encoding). An unencoded `@` in the vhost is refused: write it `%40`.
    /// - Leading and trailing whitespace is trimmed (a URI from an env file often ends in a
    ///   newline); whitespace or control characters inside are errors.
    ///
    /// ```
    /// use amqp_client::ConnectionConfig;
    /// let cfg = ConnectionConfig::from_uri("amqps://app:s3cret@mq.example/billing?heartbeat=10")?;
    /// assert_eq!((cfg.port, cfg.vhost.as_str(), cfg.heartbeat), (5671, "billing", 10));
    /// assert!(cfg.tls.is_some());
    /// # Ok::<(), amqp_client::UriError>(())
    /// ```
    pub fn from_uri(uri: &str) -> Result<ConnectionConfig, UriError> {
        parse(uri)
    }

    /// This configuration as a URI, with the password replaced by `***`. Settings left at their
    /// defaults are omitted; [`Limits`](crate::Limits) have no URI form.
    pub fn to_uri_redacted(&self) -> String {
        let scheme = if self.tls.is_some() { "amqps" } else { "amqp" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            utf8_percent_encode(&self.host, COMPONENT).to_string()
        };
        let mut uri = format!(
            "{scheme}://{}:***@{host}:{}/{}",
            utf8_percent_encode(&self.username, COMPONENT),
            self.port,
            utf8_percent_encode(&self.vhost, COMPONENT),
        );
        let d = ConnectionConfig::default();
        let mut params: Vec<(&str, String)> = Vec::new();
        // Numeric settings whose URI parameter is named like the field.
        macro_rules! changed_numbers {
            ($($field:ident),*) => {$(
                if self.$field != d.$field {
                    params.push((stringify!($field), self.$field.to_string()));
                }
            )*};
        }
        changed_numbers!(heartbeat, frame_max, channel_max);
        if self.connection_timeout != d.connection_timeout {
            let ms = self.connection_timeout.as_millis().to_string();
            params.push(("connection_timeout", ms));
        }
        if self.auth_mechanism != d.auth_mechanism {
            let mechanism = self.auth_mechanism.name().to_ascii_lowercase();
            params.push(("auth_mechanism", mechanism));
        }
        let tls = self.tls.as_ref();
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());
        let optional = [
            ("connection_name", self.connection_name.clone()),
            ("cacertfile", tls.and_then(|t| path(&t.ca_file))),
            ("certfile", tls.and_then(|t| path(&t.cert_file))),
            ("keyfile", tls.and_then(|t| path(&t.key_file))),
            (
                "server_name_indication",
                tls.and_then(|t| t.server_name.clone()),
            ),
            (
                "verify",
                tls.filter(|t| !t.verify).map(|_| "verify_none".into()),
            ),
        ];
        params.extend(optional.into_iter().filter_map(|(n, v)| Some((n, v?))));
        for (i, (name, value)) in params.iter().enumerate() {
            uri.push(if i == 0 { '?' } else { '&' });
            uri.push_str(name);
            uri.push('=');
            uri.extend(utf8_percent_encode(value, QUERY_VALUE));
        }
        uri
    }
}

impl FromStr for ConnectionConfig {
    type Err = UriError;

    fn from_str(uri: &str) -> Result<Self, UriError> {
        parse(uri)
    }
}

/// The redacted URI ([`ConnectionConfig::to_uri_redacted`]).
impl fmt::Display for ConnectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_uri_redacted())
    }
}

/// Replaces the password in any URI-like string with `***`, whether or not it parses, for
/// logging a URI as it was given.
///
/// The user info is taken to end at the *last* `@`, so a password holding an unencoded `@`,
/// `/`, `?` or `#` is still hidden; the price is that an `@` in the query of a URI with a port
/// hides more than the password. A `password=` query parameter (the Erlang client's key-file
/// password) is redacted too.
///
/// ```
/// assert_eq!(amqp_client::redact_uri("amqp://app:s3/cr@t@host/%2f"), "amqp://app:***@host/%2f");
/// ```
pub fn redact_uri(uri: &str) -> String {
    let start = uri.find("://").map_or(0, |i| i + 3);
    let (head, rest) = uri.split_at(start);
    let mut out = String::with_capacity(uri.len());
    out.push_str(head);
    let after_userinfo = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    match after_userinfo.split_once('?') {
        Some((before, query)) => {
            out.push_str(before);
            out.push('?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        out.push_str(key);
                        out.push_str("=***");
                    }
                    _ => out.push_str(pair),
                }
            }
        }
        None => out.push_str(after_userinfo),
    }
    out
}

/// Shows values from the URI in errors only when they cannot be part of the password.
struct Echo(bool);

impl Echo {
    fn show(&self, value: &str) -> String {
        if self.0 {
            value.to_owned()
        } else {
            HIDDEN.to_owned()
        }
    }
}

/// [`ConnectionConfig::from_uri`]: split the URI, then fill a default configuration part by
/// part. The steps run in this order so that the first fault in reading order is the one
/// reported.
fn parse(input: &str) -> Result<ConnectionConfig, UriError> {
    let uri = trim(input)?;
    let (tls, rest) = split_scheme(uri)?;
    let parts = Parts::split(rest)?;
    let mut cfg = ConnectionConfig::default();
    let hosts = apply_userinfo(&mut cfg, parts.authority)?;
    let default_port = if tls { 5671 } else { 5672 };
    apply_hosts(&mut cfg, hosts, default_port, &parts.echo)?;
    apply_vhost(&mut cfg, parts.path, &parts.echo)?;
    if tls {
        cfg.tls = Some(TlsOptions::default());
    }
    if let Some(query) = parts.query {
        query::apply_query(&mut cfg, query, &parts.echo)?;
    }
    Ok(cfg)
}

/// The URI without surrounding whitespace (a URI from an env file often ends in a newline);
/// whitespace or a control character inside is refused, with its offset.
fn trim(input: &str) -> Result<&str, UriError> {
    let uri = input.trim_matches(|c: char| c.is_ascii_whitespace());
    match uri.find(|c: char| c.is_whitespace() || c.is_control()) {
        Some(offset) => Err(UriError::InvalidCharacter { offset }),
        None => Ok(uri),
    }
}

/// Whether the scheme asks for TLS, and what follows `://`. Anything before `://` that is not
/// a well-formed scheme is never echoed: it may be credentials from a mangled URI.
fn split_scheme(uri: &str) -> Result<(bool, &str), UriError> {
    let (scheme, rest) = uri.split_once("://").ok_or(UriError::MissingScheme)?;
    if scheme.eq_ignore_ascii_case("amqp") {
        Ok((false, rest))
    } else if scheme.eq_ignore_ascii_case("amqps") {
        Ok((true, rest))
    } else if !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        Err(UriError::UnsupportedScheme(scheme.to_owned()))
    } else {
        Err(UriError::MissingScheme)
    }
}

/// What follows `scheme://`, split where RFC 3986 splits it and not yet decoded.
struct Parts<'a> {
    /// `[user[:password]@]host[:port][,host[:port]...]`.
    authority: &'a str,
    /// `/vhost`, or empty.
    path: &'a str,
    /// What follows the `?`, if there is one.
    query: Option<&'a str>,
    /// Whether errors may show values from the URI.
    echo: Echo,
}

impl<'a> Parts<'a> {
    /// Splits `rest` (after `scheme://`), refusing a `#fragment` and an `@` in the path, both
    /// usually the sign of a password with an unencoded `#`, `/` or `?`.
    fn split(rest: &'a str) -> Result<Self, UriError> {
        if rest.contains('#') {
            return Err(UriError::Fragment);
        }
        // RFC 3986: the authority ends at the first `/` or `?`.
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(authority_end);
        let echo = Echo(!path_and_query.contains('@'));
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        // RFC 3986 allows `@` in a path, but a vhost holding one is far less likely than a
        // password holding a `/`; refusing it keeps such a password out of the vhost (and logs).
        if path.contains('@') {
            return Err(UriError::AtAfterHost);
        }
        Ok(Parts {
            authority,
            path,
            query,
            echo,
        })
    }
}

/// Sets the user name and password from the user info of `authority`, if any, and returns
/// the rest: the host list. A user without a password keeps the default password.
fn apply_userinfo<'a>(cfg: &mut ConnectionConfig, authority: &'a str) -> Result<&'a str, UriError> {
    // The last `@` separates user info, as in most URI parsers: a stray `@` in a password
    // then still leaves the host intact.
    let Some(at) = authority.rfind('@') else {
        return Ok(authority);
    };
    let userinfo = &authority[..at];
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    };
    cfg.username = decode(user, "user name")?;
    if let Some(password) = password {
        cfg.password = Secret::new(decode(password, "password")?);
    }
    Ok(&authority[at + 1..])
}

/// Sets the host and port, and the fallback addresses. Several hosts (`h1:5672,h2:5673`, as
/// other RabbitMQ clients accept) are the addresses recovery fails over to; the first is where
/// the client connects first, and only it may be empty (the default host).
fn apply_hosts(
    cfg: &mut ConnectionConfig,
    hosts: &str,
    default_port: u16,
    echo: &Echo,
) -> Result<(), UriError> {
    let mut hosts = hosts.split(',');
    let (host, port) = split_host_port(hosts.next().unwrap_or_default(), echo)?;
    if !host.is_empty() {
        cfg.host = host;
    }
    cfg.port = port.unwrap_or(default_port);
    for other in hosts {
        let (host, port) = split_host_port(other, echo)?;
        if host.is_empty() {
            return Err(UriError::InvalidHost(echo.show(other)));
        }
        cfg.fallback_addresses
            .push((host, port.unwrap_or(default_port)));
    }
    Ok(())
}

/// Sets the vhost from the path: one segment, percent-decoded; an absent or empty one keeps
/// the default `/` (see [`ConnectionConfig::from_uri`] for why).
fn apply_vhost(cfg: &mut ConnectionConfig, path: &str, echo: &Echo) -> Result<(), UriError> {
    if let Some(segment) = path.strip_prefix('/') {
        if segment.contains('/') {
            return Err(UriError::MultipleSegments(echo.show(segment)));
        }
        if !segment.is_empty() {
            cfg.vhost = decode(segment, "vhost")?;
        }
    }
    Ok(())
}

/// Splits `host[:port]` or `[v6]:port`; the host is percent-decoded, IPv6 without brackets.
fn split_host_port(s: &str, echo: &Echo) -> Result<(String, Option<u16>), UriError> {
    let (host, port) = if let Some(bracketed) = s.strip_prefix('[') {
        let (literal, after) = bracketed
            .split_once(']')
            .ok_or_else(|| UriError::InvalidHost(echo.show(s)))?;
        let addr: Ipv6Addr = literal
            .parse()
            .map_err(|_| UriError::InvalidHost(echo.show(s)))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| UriError::InvalidHost(echo.show(s)))?,
            ),
        };
        (addr.to_string(), port)
    } else {
        let (host, port) = match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        };
        (decode(host, "host")?, port)
    };
    // RFC 3986 allows an empty port after the colon: it means the default.
    let port = match port {
        None | Some("") => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(UriError::InvalidPort(echo.show(p))),
        },
    };
    Ok((host, port))
}

/// Percent-decodes one component, refusing malformed escapes (which `percent_decode_str` would
/// pass through unchanged) and non-UTF-8 results.
fn decode(s: &str, component: &str) -> Result<String, UriError> {
    let bytes = s.as_bytes();
    for (i, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'%') {
        let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
        if !(hex(i + 1) && hex(i + 2)) {
            return Err(UriError::InvalidPercentEncoding {
                component: component.to_owned(),
            });
        }
    }
    percent_decode_str(s)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| UriError::InvalidUtf8 {
            component: component.to_owned(),
        })
}

#[cfg(test)]
mod tests;
