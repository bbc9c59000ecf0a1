//! Connection negotiation: connection.start / start-ok, secure / secure-ok, tune / tune-ok,
//! open / open-ok, as steps of the connection core.

use std::time::{Duration, Instant};

use amqp_codec::methods::{
    ConnectionClose, ConnectionOpen, ConnectionSecureOk, ConnectionStart, ConnectionStartOk,
    ConnectionTune, ConnectionTuneOk,
};
use amqp_codec::table::FieldTable;
use amqp_codec::{FRAME_MIN_SIZE, LongStr, Method, ReplyCode, ShortStr};

use super::{Core, Phase};
use crate::auth;
use crate::error::{CloseReason, Error};

/// The client properties sent in connection.start-ok: who we are and what we understand.
pub(crate) fn client_properties(connection_name: Option<&str>) -> FieldTable {
    let capabilities = FieldTable::builder()
        .insert("publisher_confirms", true)
        .insert("consumer_cancel_notify", true)
        .insert("basic.nack", true)
        .insert("connection.blocked", true)
        .insert("authentication_failure_close", true)
        .insert("exchange_exchange_bindings", true)
        .insert("per_consumer_qos", true)
        .build()
        .unwrap_or_default();
    let mut props = FieldTable::builder()
        .insert("product", "amqp-client (Rust)")
        .insert("version", env!("CARGO_PKG_VERSION"))
        .insert(
            "platform",
            format!("Rust, {} {}", std::env::consts::OS, std::env::consts::ARCH),
        )
        // No web address: the project has none to point at yet. What the crate is, instead.
        .insert(
            "information",
            concat!(
                env!("CARGO_PKG_NAME"),
                " ",
                env!("CARGO_PKG_VERSION"),
                ": ",
                env!("CARGO_PKG_DESCRIPTION")
            ),
        )
        .insert("capabilities", capabilities);
    if let Some(name) = connection_name {
        props = props.insert("connection_name", name);
    }
    // Only a name longer than 255 bytes can fail here; fall back to no properties rather than
    // fail the connection over a label.
    props.build().unwrap_or_default()
}

/// connection.secure rounds answered before the handshake is given up: PLAIN, AMQPLAIN and
/// EXTERNAL have a single round (the response goes in start-ok); a broker asking again after
/// the one courtesy answer will not be satisfied by a third.
const MAX_SECURE_ROUNDS: u8 = 1;

/// The negotiated frame-max, never below the spec's frame-min-size: "the minimum negotiated
/// value for frame-max is also frame-min-size" (connection.tune, rule "minimum"). A smaller
/// value would not even fit tune-ok's answer to it. 0 (no limit) stays 0.
pub(crate) fn negotiate_frame_max(client: u32, server: u32) -> u32 {
    match negotiate(client, server) {
        0 => 0,
        n => n.max(FRAME_MIN_SIZE),
    }
}

/// Tune negotiation: the smaller non-zero value, 0 meaning "no limit" on that side.
pub(crate) fn negotiate<T: Copy + Ord + Default>(client: T, server: T) -> T {
    let zero = T::default();
    match (client == zero, server == zero) {
        (true, _) => server,
        (_, true) => client,
        _ => client.min(server),
    }
}

impl Core {
    /// A connection-class method while the handshake is in progress: each step answers the
    /// broker's method and moves the phase on.
    pub(super) fn handle_handshake(&mut self, method: Method, now: Instant) {
        match (&self.phase, method) {
            (Phase::AwaitStart, Method::ConnectionStart(start)) => self.on_start(start),
            (Phase::AwaitTune, Method::ConnectionSecure(_)) => self.on_secure(),
            (Phase::AwaitTune, Method::ConnectionTune(tune)) => self.on_tune(&tune, now),
            (Phase::AwaitOpenOk, Method::ConnectionOpenOk(_)) => self.on_open_ok(),
            (_, Method::ConnectionClose(close)) => self.on_refused(&close),
            (_, other) => {
                let msg = format!("unexpected {} during the handshake", other.name());
                let offending = Some((other.class_id(), other.method_id()));
                self.violation(ReplyCode::COMMAND_INVALID, msg, offending, now);
            }
        }
    }

    /// connection.start: check the version and that our mechanism is offered, then answer
    /// with start-ok (client properties and the credentials).
    fn on_start(&mut self, start: ConnectionStart) {
        if (start.version_major, start.version_minor) != (0, 9) {
            let msg = format!(
                "server speaks AMQP {}-{}, not 0-9-1",
                start.version_major, start.version_minor
            );
            return self.lose(Error::NotAmqp(msg));
        }
        let mech = self.config.auth_mechanism;
        if !auth::mechanism_offered(&start.mechanisms, mech) {
            return self.lose(Error::MechanismNotOffered {
                wanted: mech.name(),
                offered: String::from_utf8_lossy(&start.mechanisms).into_owned(),
            });
        }
        self.server_properties = start.server_properties;
        let start_ok = Method::ConnectionStartOk(ConnectionStartOk {
            client_properties: client_properties(self.config.connection_name.as_deref()),
            mechanism: ShortStr::from_static(mech.name()),
            response: self.sasl_response(),
            locale: ShortStr::from_static("en_US"),
        });
        if self.send_connection_method(&start_ok) {
            self.phase = Phase::AwaitTune;
        }
    }

    /// connection.secure: PLAIN, AMQPLAIN and EXTERNAL have no second round; answer once with
    /// the same response, as RabbitMQ's own clients do, and let the broker decide. A broker
    /// that asks again would be answered forever: that ends the handshake.
    fn on_secure(&mut self) {
        let mech = self.config.auth_mechanism;
        self.secure_rounds += 1;
        if self.secure_rounds > MAX_SECURE_ROUNDS {
            return self.lose(Error::AuthenticationFailed {
                mechanism: mech.name(),
                reason: format!(
                    "the broker sent connection.secure {} times; {} has a single round, \
                     so it will not accept these credentials",
                    self.secure_rounds,
                    mech.name()
                ),
            });
        }
        let secure_ok = Method::ConnectionSecureOk(ConnectionSecureOk {
            response: self.sasl_response(),
        });
        self.send_connection_method(&secure_ok);
    }

    /// The SASL response for the configured mechanism and credentials.
    fn sasl_response(&self) -> LongStr {
        let mech = self.config.auth_mechanism;
        let response = auth::start_ok_response(mech, &self.config.username, &self.config.password);
        LongStr::from_bytes(response).unwrap_or_default()
    }

    /// connection.tune: apply the negotiated limits, answer tune-ok and open the vhost.
    fn on_tune(&mut self, tune: &ConnectionTune, now: Instant) {
        let tune_ok = self.apply_tune(tune);
        let vhost = ShortStr::try_from(self.config.vhost.as_str()).unwrap_or_default();
        let open = Method::ConnectionOpen(ConnectionOpen {
            virtual_host: vhost,
            capabilities: ShortStr::default(),
            insist: false,
        });
        if self.send_connection_method(&tune_ok) && self.send_connection_method(&open) {
            self.phase = Phase::AwaitOpenOk;
            self.last_recv = now;
        }
    }

    /// Negotiates channel-max, frame-max (never below the spec's minimum) and heartbeat with
    /// the broker's proposal, applies them, and returns the tune-ok that says so.
    fn apply_tune(&mut self, tune: &ConnectionTune) -> Method {
        let channel_max = negotiate(self.config.channel_max, tune.channel_max);
        let frame_max = negotiate_frame_max(self.config.frame_max, tune.frame_max);
        if frame_max != negotiate(self.config.frame_max, tune.frame_max) {
            tracing::warn!(
                proposed = tune.frame_max,
                configured = self.config.frame_max,
                "frame-max below the spec's minimum of 4096; using 4096"
            );
        }
        let heartbeat = negotiate(self.config.heartbeat, tune.heartbeat);
        self.channel_max = if channel_max == 0 {
            u16::MAX
        } else {
            channel_max
        };
        // Frame-max 0 means "no limit"; the decoder then takes what the 32-bit size allows.
        self.frame_max = frame_max;
        let decode_max = if frame_max == 0 { u32::MAX } else { frame_max };
        self.decoder.set_frame_max(decode_max);
        self.heartbeat = (heartbeat > 0).then(|| Duration::from_secs(u64::from(heartbeat)));
        Method::ConnectionTuneOk(ConnectionTuneOk {
            channel_max,
            frame_max,
            heartbeat,
        })
    }

    /// connection.open-ok: the connection is open.
    fn on_open_ok(&mut self) {
        self.phase = Phase::Open;
        self.deadline = None;
        tracing::debug!(address = %self.config.address(), vhost = %self.config.vhost, "connection open");
        if std::mem::take(&mut self.awaiting_open) {
            self.events.push(super::Event::Opened(Ok(())));
        }
    }

    /// connection.close during the handshake: refused credentials (403 after start-ok), an
    /// unknown or forbidden vhost (530), or anything else the broker objects to.
    fn on_refused(&mut self, close: &ConnectionClose) {
        self.send_connection_method(&Method::ConnectionCloseOk(Default::default()));
        let reason = CloseReason::from_wire(
            close.reply_code,
            &close.reply_text,
            close.class_id,
            close.method_id,
        );
        let err =
            if reason.code == ReplyCode::ACCESS_REFUSED && matches!(self.phase, Phase::AwaitTune) {
                Error::AuthenticationFailed {
                    mechanism: self.config.auth_mechanism.name(),
                    reason: reason.text,
                }
            } else {
                Error::ConnectionClosed(reason)
            };
        self.lose(err);
    }

    /// The socket closed during the handshake: name the likely cause.
    pub(super) fn handshake_eof_error(&self) -> Error {
        match self.phase {
            // Nothing (or less than a frame) came: no greeting to judge, so not `NotAmqp`.
            Phase::AwaitStart => Error::ClosedBeforeStart {
                address: self.config.address(),
            },
            // Brokers without authentication_failure_close drop the socket on bad credentials.
            Phase::AwaitTune => Error::AuthenticationFailed {
                mechanism: self.config.auth_mechanism.name(),
                reason: "the broker closed the connection after start-ok".into(),
            },
            _ => Error::ConnectionLost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_max_is_never_negotiated_below_4096() {
        assert_eq!(negotiate_frame_max(131_072, 1024), 4096);
        assert_eq!(negotiate_frame_max(512, 0), 4096);
        assert_eq!(negotiate_frame_max(0, 4095), 4096);
        assert_eq!(negotiate_frame_max(0, 0), 0);
        assert_eq!(negotiate_frame_max(131_072, 8192), 8192);
    }

    #[test]
    fn negotiate_prefers_smaller_nonzero() {
        assert_eq!(negotiate(2047u16, 0), 2047);
        assert_eq!(negotiate(0u16, 2047), 2047);
        assert_eq!(negotiate(60u16, 30), 30);
        assert_eq!(negotiate(131_072u32, 1_048_576), 131_072);
        assert_eq!(negotiate(0u32, 0), 0);
    }

    #[test]
    fn client_properties_advertise_capabilities() {
        let props = client_properties(Some("svc"));
        assert_eq!(
            props
                .get("connection_name")
                .and_then(|v| v.as_str().map(str::to_owned)),
            Some("svc".into())
        );
        let info = props
            .get("information")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        assert!(
            info.starts_with(concat!(env!("CARGO_PKG_NAME"), " 0.")),
            "{info}"
        );
        assert!(info.contains("RabbitMQ"), "{info}");
        let Some(amqp_codec::FieldValue::Table(caps)) = props.get("capabilities") else {
            panic!("capabilities table missing");
        };
        for cap in [
            "publisher_confirms",
            "consumer_cancel_notify",
            "basic.nack",
            "connection.blocked",
            "authentication_failure_close",
            "exchange_exchange_bindings",
            "per_consumer_qos",
        ] {
            assert_eq!(
                caps.get(cap),
                Some(amqp_codec::FieldValue::Bool(true)),
                "{cap}"
            );
        }
    }
}
