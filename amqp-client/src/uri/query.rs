//! The query parameters of a URI (`?name=value&...`): which exist, how each value is read,
//! and what it sets. The list is on [`ConnectionConfig::from_uri`].

use std::str::FromStr;
use std::time::Duration;

use super::{Echo, UriError, decode};
use crate::config::{AuthMechanism, ConnectionConfig, TlsOptions};

/// Every parameter [`apply_query`] understands; TLS ones come after `connection_name`.
const KNOWN_PARAMETERS: [&str; 12] = [
    "heartbeat",
    "frame_max",
    "channel_max",
    "max_message_size",
    "connection_timeout",
    "auth_mechanism",
    "connection_name",
    "cacertfile",
    "certfile",
    "keyfile",
    "server_name_indication",
    "verify",
];

/// Applies `name=value&...` to `cfg` (TLS parameters need `cfg.tls` set already). Empty
/// pairs (`&&`) are skipped; each parameter is read, then applied, in the order given.
pub(super) fn apply_query(
    cfg: &mut ConnectionConfig,
    query: &str,
    echo: &Echo,
) -> Result<(), UriError> {
    let mut seen: Vec<&'static str> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        Param::read(pair, &mut seen, echo)?.apply(cfg)?;
    }
    Ok(())
}

/// One `name=value` pair, both decoded, its name known and not seen before.
struct Param<'e> {
    /// The parameter, as spelt in [`KNOWN_PARAMETERS`].
    name: &'static str,
    /// The percent-decoded value (empty if there was no `=`).
    value: String,
    /// Whether errors may show the value.
    echo: &'e Echo,
}

impl<'e> Param<'e> {
    /// Decodes `pair` and checks its name: unknown names and repeats are errors, so that a
    /// typo such as `heartbeet=5` is not silently ignored. Records the name in `seen`.
    fn read(pair: &str, seen: &mut Vec<&'static str>, echo: &'e Echo) -> Result<Self, UriError> {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let raw_name = decode(raw_name, "name of a URI parameter")?;
        let name = KNOWN_PARAMETERS
            .iter()
            .copied()
            .find(|known| *known == raw_name)
            .ok_or_else(|| UriError::UnknownParameter(echo.show(&raw_name)))?;
        if seen.contains(&name) {
            return Err(UriError::DuplicateParameter(name));
        }
        seen.push(name);
        let value = decode(raw_value, &format!("value of URI parameter `{name}`"))?;
        Ok(Param { name, value, echo })
    }

    /// Sets what the parameter names in `cfg`; TLS parameters are refused on a plain URI,
    /// where they would be silently unused.
    fn apply(self, cfg: &mut ConnectionConfig) -> Result<(), UriError> {
        match self.name {
            "heartbeat" => cfg.heartbeat = self.number("seconds from 0 to 65535")?,
            "frame_max" => cfg.frame_max = self.frame_max()?,
            "channel_max" => cfg.channel_max = self.number("0 to 65535")?,
            // This client's own: `Limits::max_message_size`, for configuration by URI alone.
            "max_message_size" => {
                cfg.limits.max_message_size = self.number("bytes, 0 to 2^64 - 1")?;
            }
            "connection_timeout" => cfg.connection_timeout = self.connection_timeout()?,
            "auth_mechanism" => cfg.auth_mechanism = self.auth_mechanism()?,
            "connection_name" if self.value.is_empty() => {
                return Err(self.invalid("a non-empty name"));
            }
            "connection_name" => cfg.connection_name = Some(self.value),
            tls_name => {
                let tls = cfg
                    .tls
                    .as_mut()
                    .ok_or(UriError::TlsParameterOnPlainUri(tls_name))?;
                self.apply_tls(tls)?;
            }
        }
        Ok(())
    }

    /// The error for this value, saying what would have been accepted.
    fn invalid(&self, expected: &'static str) -> UriError {
        UriError::InvalidParameter {
            name: self.name,
            value: self.echo.show(&self.value),
            expected,
        }
    }

    /// The value as a number of the setting's type; out of range is `expected`.
    fn number<T: FromStr>(&self, expected: &'static str) -> Result<T, UriError> {
        self.value.parse().map_err(|_| self.invalid(expected))
    }

    /// `frame_max`: the spec's frame-min-size is the least a frame-max may be (0: no limit).
    fn frame_max(&self) -> Result<u32, UriError> {
        self.value
            .parse()
            .ok()
            .filter(|&n: &u32| n == 0 || n >= amqp_codec::FRAME_MIN_SIZE)
            .ok_or_else(|| self.invalid("0 (no limit) or 4096 to 4294967295"))
    }

    /// `connection_timeout`: milliseconds, as the Erlang client reads it. 0 is refused rather
    /// than taken to mean "no bound" (as in the Java client): a hung connect must end.
    fn connection_timeout(&self) -> Result<Duration, UriError> {
        let ms: u64 = self.number("milliseconds, above 0")?;
        if ms == 0 {
            return Err(self.invalid("milliseconds, above 0"));
        }
        Ok(Duration::from_millis(ms))
    }

    /// `auth_mechanism`, in any case; the Erlang client's module-qualified form is accepted
    /// too.
    fn auth_mechanism(&self) -> Result<AuthMechanism, UriError> {
        let mech = self
            .value
            .strip_prefix("amqp_auth_mechanisms:")
            .unwrap_or(&self.value);
        [
            AuthMechanism::Plain,
            AuthMechanism::Amqplain,
            AuthMechanism::External,
        ]
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(mech))
        .ok_or_else(|| self.invalid("plain, amqplain or external"))
    }

    /// Sets one TLS parameter: `verify` takes `verify_peer` or `verify_none`; the others need
    /// a non-empty value.
    fn apply_tls(self, tls: &mut TlsOptions) -> Result<(), UriError> {
        let value = &self.value;
        match self.name {
            "verify" if value.eq_ignore_ascii_case("verify_peer") => tls.verify = true,
            "verify" if value.eq_ignore_ascii_case("verify_none") => tls.verify = false,
            "verify" => return Err(self.invalid("verify_peer or verify_none")),
            _ if value.is_empty() => return Err(self.invalid("a non-empty value")),
            // Erlang's `disable` turns SNI off; rustls always sends the name it checks.
            "server_name_indication" if value == "disable" => {
                return Err(self.invalid("a host name (`disable` is not supported)"));
            }
            "server_name_indication" => tls.server_name = Some(self.value),
            "cacertfile" => tls.ca_file = Some(self.value.into()),
            "certfile" => tls.cert_file = Some(self.value.into()),
            _ => tls.key_file = Some(self.value.into()),
        }
        Ok(())
    }
}
