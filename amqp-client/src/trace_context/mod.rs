//! W3C Trace Context in message headers (feature `trace-context`): a [`TraceContext`] read
//! from and written to the `traceparent` and `tracestate` headers of a message, so that one
//! trace runs from a publisher through whoever consumes the message.
//!
//! `traceparent` follows <https://www.w3.org/TR/trace-context/#traceparent-header>:
//! `00-<trace-id>-<parent-id>-<trace-flags>`, lowercase hex, a trace id of 16 bytes and a
//! parent id of 8 bytes, neither all zeros, and flags of one byte (bit 0: sampled). A later
//! version is read by the version 00 rules (and what follows the flags is ignored); version
//! `ff` is invalid. `tracestate` is kept as an opaque string, carried along unchanged.
//!
//! ```
//! use amqp_client::{FieldTable, TraceContext};
//!
//! let ctx: TraceContext = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse()?;
//! assert!(ctx.sampled());
//! let mut headers = FieldTable::default();
//! ctx.child().inject(&mut headers);
//! let read = TraceContext::extract(&headers).expect("injected");
//! assert_eq!(read.trace_id(), ctx.trace_id());
//! assert_ne!(read.parent_id(), ctx.parent_id());
//! # Ok::<(), amqp_client::TraceContextError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use amqp_codec::{BasicProperties, FieldTable, FieldValue, PropertyError};

use crate::message::Delivery;

/// The header that carries the trace id, the parent (span) id and the flags.
pub const TRACEPARENT: &str = "traceparent";
/// The header that carries vendor-specific trace data, opaque here.
pub const TRACESTATE: &str = "tracestate";

/// Length of a version 00 `traceparent`.
const LEN: usize = 55;

/// Why a `traceparent` value is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceContextError {
    /// Too short, or (version 00) not exactly 55 characters, or a later version whose flags
    /// are followed by something other than `-`.
    #[error("a traceparent is 55 characters (version 00), this one has {0}")]
    Length(usize),
    /// A `-` is missing where one must be.
    #[error("a traceparent's fields are separated by '-'")]
    Separator,
    /// The version is not two lowercase hex digits, or is `ff`.
    #[error("invalid traceparent version")]
    Version,
    /// The trace id is not 32 lowercase hex digits, or is all zeros.
    #[error("invalid trace id")]
    TraceId,
    /// The parent id is not 16 lowercase hex digits, or is all zeros.
    #[error("invalid parent id")]
    ParentId,
    /// The flags are not two lowercase hex digits.
    #[error("invalid trace flags")]
    Flags,
}

/// A position in a trace: the trace's id, the id of the span that sent the message (the
/// parent of whatever the receiver does), the flags (sampled or not) and the vendors'
/// `tracestate`, kept as is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The whole trace's id: the same from the first publisher to the last consumer.
    trace_id: [u8; 16],
    /// The sending span's id: what the receiver's span is a child of.
    parent_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    flags: u8,
    /// The `tracestate` header, opaque (`None` when absent or empty).
    tracestate: Option<String>,
}

impl TraceContext {
    /// The sampled flag.
    pub const SAMPLED: u8 = 0x01;

    /// The start of a new trace: a random trace id and parent id, sampled or not.
    pub fn new_root(sampled: bool) -> Self {
        Self {
            trace_id: fastrand::u128(1..).to_be_bytes(),
            parent_id: random_parent(),
            flags: if sampled { Self::SAMPLED } else { 0 },
            tracestate: None,
        }
    }

    /// A context from its parts; `None` if either id is all zeros (invalid in the spec).
    pub fn from_parts(trace_id: [u8; 16], parent_id: [u8; 8], flags: u8) -> Option<Self> {
        (trace_id != [0; 16] && parent_id != [0; 8]).then_some(Self {
            trace_id,
            parent_id,
            flags,
            tracestate: None,
        })
    }

    /// Reads a `traceparent` value (leading and trailing spaces and tabs are ignored).
    pub fn parse(traceparent: &str) -> Result<Self, TraceContextError> {
        let s = traceparent.trim_matches([' ', '\t']).as_bytes();
        if s.len() < LEN {
            return Err(TraceContextError::Length(s.len()));
        }
        let version = hex::<1>(&s[0..2]).ok_or(TraceContextError::Version)?[0];
        if version == 0xff {
            return Err(TraceContextError::Version);
        }
        // Version 00 is exactly 55 characters; a later one may go on, after a '-'.
        if (version == 0 && s.len() != LEN) || (s.len() > LEN && s[LEN] != b'-') {
            return Err(TraceContextError::Length(s.len()));
        }
        if s[2] != b'-' || s[35] != b'-' || s[52] != b'-' {
            return Err(TraceContextError::Separator);
        }
        let trace_id = hex::<16>(&s[3..35])
            .filter(|id| *id != [0; 16])
            .ok_or(TraceContextError::TraceId)?;
        let parent_id = hex::<8>(&s[36..52])
            .filter(|id| *id != [0; 8])
            .ok_or(TraceContextError::ParentId)?;
        let flags = hex::<1>(&s[53..55]).ok_or(TraceContextError::Flags)?[0];
        Ok(Self {
            trace_id,
            parent_id,
            flags,
            tracestate: None,
        })
    }

    /// The next hop of the same trace: the same trace id, flags and `tracestate`, a new
    /// random parent id (the span that sends the next message).
    pub fn child(&self) -> Self {
        Self {
            parent_id: random_parent(),
            ..self.clone()
        }
    }

    /// The trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The trace id as 32 lowercase hex digits (as tracing back ends show it).
    pub fn trace_id_hex(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// The parent (span) id.
    pub fn parent_id(&self) -> [u8; 8] {
        self.parent_id
    }

    /// The parent id as 16 lowercase hex digits.
    pub fn parent_id_hex(&self) -> String {
        to_hex(&self.parent_id)
    }

    /// The trace flags.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// True if the sender sampled (recorded) its part of the trace.
    pub fn sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }

    /// The `tracestate` carried along, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The same context with `tracestate` (an empty one is none).
    pub fn with_tracestate(mut self, tracestate: impl Into<String>) -> Self {
        let state: String = tracestate.into();
        self.tracestate = (!state.is_empty()).then_some(state);
        self
    }

    /// Writes `traceparent` (and `tracestate`, if any; otherwise a stale one is removed) into
    /// `headers`, replacing what was there.
    pub fn inject(&self, headers: &mut FieldTable) {
        headers.insert(TRACEPARENT, self.to_string());
        match &self.tracestate {
            Some(state) => {
                headers.insert(TRACESTATE, state.as_str());
            }
            None => {
                headers.remove(TRACESTATE);
            }
        }
    }

    /// Reads the context from `headers`: `None` if there is no `traceparent`, or it is not a
    /// valid one (its `tracestate` is then ignored too, as the spec says).
    pub fn extract(headers: &FieldTable) -> Option<Self> {
        let parent = text(&headers.get(TRACEPARENT)?)?;
        let ctx = Self::parse(&parent).ok()?;
        match headers.get(TRACESTATE).as_ref().and_then(text) {
            Some(state) => Some(ctx.with_tracestate(state)),
            None => Some(ctx),
        }
    }

    /// Reads the context from a message's headers (see [`extract`](Self::extract)).
    pub fn from_properties(properties: &BasicProperties) -> Option<Self> {
        Self::extract(&properties.headers()?)
    }

    /// `properties` with this context in their headers (the other headers and properties
    /// kept): what to publish with.
    ///
    /// ```
    /// use amqp_client::{BasicProperties, TraceContext};
    ///
    /// let ctx = TraceContext::new_root(true);
    /// let props = ctx.inject_properties(&BasicProperties::persistent())?;
    /// assert_eq!(TraceContext::from_properties(&props), Some(ctx));
    /// # Ok::<(), amqp_client::PropertyError>(())
    /// ```
    pub fn inject_properties(
        &self,
        properties: &BasicProperties,
    ) -> Result<BasicProperties, PropertyError> {
        let mut builder = properties.to_builder();
        let mut headers = builder.headers.take().unwrap_or_default();
        self.inject(&mut headers);
        builder.headers = Some(headers);
        builder.build()
    }
}

impl Delivery {
    /// The trace context the publisher put in this message's headers, if a valid one
    /// (feature `trace-context`; see [`TraceContext::extract`]).
    pub fn trace_context(&self) -> Option<TraceContext> {
        TraceContext::from_properties(&self.properties)
    }
}

impl fmt::Display for TraceContext {
    /// The `traceparent` value, version 00.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            to_hex(&self.trace_id),
            to_hex(&self.parent_id),
            self.flags
        )
    }
}

impl FromStr for TraceContext {
    type Err = TraceContextError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A random parent id, never all zeros.
fn random_parent() -> [u8; 8] {
    fastrand::u64(1..).to_be_bytes()
}

/// `N` bytes from `2 * N` lowercase hex digits; `None` for anything else.
fn hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// Lowercase hex of `bytes`.
fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// A header's value as text: a long string, or a byte array holding UTF-8.
fn text(value: &FieldValue) -> Option<String> {
    match value {
        FieldValue::ByteArray(b) => std::str::from_utf8(b).ok().map(str::to_owned),
        v => v.as_str().map(str::to_owned),
    }
}

#[cfg(test)]
mod tests;
