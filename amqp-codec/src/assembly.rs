//! Content assembly: a content-bearing method, its header and its body frames, into one message.
//!
//! One [`ContentAssembler`] per channel (frames of different channels may interleave, but a
//! channel's content frames are strictly sequential). States:
//!
//! ```text
//! Idle --method with content--> AwaitingHeader --header--> AwaitingBody --body...--> Idle
//!   \--method without content: returned at once      \--body size 0: complete
//! ```
//!
//! Spec: "a peer MUST handle ... content frames out of order" by raising 505 UNEXPECTED_FRAME;
//! a body longer than the header declared is a frame error (501). Nothing is allocated up
//! front: a body is the chain of its frames' slices ([`Body`]), never copied; only a body of two
//! or more frames allocates, once, the list of its chunks.
//!
//! A message this side will not or cannot keep (a declared size over the configured limit, or
//! properties that do not parse) is not an error of the connection: its body frames are
//! counted and dropped as they come, and the message is handed over as [`Discarded`], method
//! and all, so that a client can give the application its delivery tag to reject (a message
//! refused with an error would stay at the head of its queue and stop every consumer of it).
//!
//! The state lives in two `Option` fields rather than an enum of states: moving a whole state
//! (method, header and body, some 250 bytes) in and out at every frame cost more than the
//! parsing of the frame itself, and now each part is moved once in and once out.

use bytes::Bytes;

use crate::body::Body;
use crate::constants::FrameType;
use crate::error::{DecodeError, FieldError};
use crate::frame::Frame;
use crate::methods::Method;
use crate::properties::ContentHeader;

/// A complete message: the method that carried it, its header and its whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// basic.deliver, basic.get-ok, basic.return, or basic.publish (server side).
    pub method: Method,
    /// The content header, with the properties.
    pub header: ContentHeader,
    /// The body: the body frames' payloads, slices of the read buffer, chained without a copy.
    pub body: Body,
}

/// What the assembler produced from a frame.
// Boxing the large variant would cost a heap allocation per message; moves are cheaper.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assembled {
    /// A method that carries no content, passed through.
    Method(Method),
    /// A complete message.
    Content(Content),
    /// A message whose content was dropped as it arrived; the method says which (its delivery
    /// tag, for a delivery).
    Discarded(Discarded),
}

/// A message whose content the assembler dropped rather than kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discarded {
    /// basic.deliver, basic.get-ok, basic.return, or basic.publish (server side).
    pub method: Method,
    /// The body size its header declared (all of it was received and dropped).
    pub body_size: u64,
    /// Why it was not kept.
    pub reason: DiscardReason,
}

/// Why a message's content was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscardReason {
    /// The header declared a body larger than the assembler's limit.
    #[error("its body of {declared} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// The declared body size.
        declared: u64,
        /// The limit.
        limit: u64,
    },
    /// Its content header's properties do not parse.
    #[error("its properties do not parse: {0}")]
    BadProperties(FieldError),
}

/// A message whose body is being dropped as it arrives.
#[derive(Debug)]
struct Discarding {
    /// The body size its header declared.
    declared: u64,
    /// Why it is dropped.
    reason: DiscardReason,
}

/// Most chunks a body's list reserves room for up front; a longer chain grows as it goes, so a
/// tiny first frame of a huge declared body cannot make the assembler reserve much.
const MAX_CHUNK_HINT: u64 = 64;

/// Assembles one channel's content frames into messages.
///
/// ```
/// use amqp_codec::{Assembled, BasicProperties, ContentAssembler, ContentHeader, Frame, Method};
/// use amqp_codec::methods::BasicDeliver;
/// use bytes::Bytes;
///
/// let mut asm = ContentAssembler::new(u64::MAX);
/// let deliver = Method::BasicDeliver(BasicDeliver { delivery_tag: 1, ..Default::default() });
/// assert_eq!(asm.push(Frame::Method { channel: 1, method: deliver }), Ok(None));
/// let header = ContentHeader::basic(5, BasicProperties::default());
/// assert_eq!(asm.push(Frame::Header { channel: 1, header }), Ok(None));
/// let body = Bytes::from_static(b"hello");
/// let Ok(Some(Assembled::Content(msg))) = asm.push(Frame::Body { channel: 1, body }) else {
///     panic!("expected a message");
/// };
/// assert_eq!(msg.body, "hello");
/// ```
#[derive(Debug)]
pub struct ContentAssembler {
    /// The content-bearing method of the message in progress; `None` between messages.
    method: Option<Method>,
    /// Its header, once it arrived (only ever `Some` while `method` is).
    header: Option<ContentHeader>,
    /// The body frames received so far.
    body: Body,
    /// Body bytes received so far.
    received: u64,
    /// Largest body accepted, checked against the header's declared size.
    max_body_size: u64,
    /// Set while the body of a message not kept is counted and dropped (then `header` is
    /// `None` and `method` is `Some`); boxed, so that the common state stays small.
    discarding: Option<Box<Discarding>>,
}

impl ContentAssembler {
    /// An assembler accepting bodies up to `max_body_size` bytes.
    pub fn new(max_body_size: u64) -> Self {
        Self {
            method: None,
            header: None,
            body: Body::new(),
            received: 0,
            max_body_size,
            discarding: None,
        }
    }

    /// True between messages.
    pub fn is_idle(&self) -> bool {
        self.method.is_none()
    }

    /// Forgets a partial message (after the channel closed).
    pub fn reset(&mut self) {
        self.method = None;
        self.header = None;
        self.body = Body::new();
        self.received = 0;
        self.discarding = None;
    }

    /// Checks that a delivery read whole ([`crate::Inbound::Delivery`]), which stands for its
    /// method, header and body frames, may arrive on this channel now: between messages. In
    /// the middle of a message, its method frame is out of order, and the error is the one
    /// [`ContentAssembler::push`] returns for it (505; the partial message is dropped).
    #[inline]
    pub fn expect_idle(&mut self, channel: u16) -> Result<(), DecodeError> {
        if self.method.is_none() {
            return Ok(());
        }
        Err(self.unexpected(channel, FrameType::METHOD))
    }

    /// Feeds a content header that did not decode ([`DecodeError::BadContentHeader`], which
    /// names the channel and the declared body size): the message's body is then dropped as
    /// it comes and the message handed over as [`Assembled::Discarded`]. Out of order (no
    /// content method before it) it is the same error as any misplaced header.
    pub fn push_bad_header(
        &mut self,
        channel: u16,
        body_size: u64,
        source: FieldError,
    ) -> Result<Option<Assembled>, DecodeError> {
        if self.method.is_none() || self.header.is_some() || self.discarding.is_some() {
            return Err(self.unexpected(channel, FrameType::HEADER));
        }
        self.discard(body_size, DiscardReason::BadProperties(source))
    }

    /// Starts dropping the body of the message in progress; completes at once if it is empty.
    #[cold]
    fn discard(
        &mut self,
        declared: u64,
        reason: DiscardReason,
    ) -> Result<Option<Assembled>, DecodeError> {
        self.discarding = Some(Box::new(Discarding { declared, reason }));
        self.received = 0;
        if declared == 0 {
            return Ok(self.finish_discarding());
        }
        Ok(None)
    }

    /// A body frame of a message being dropped.
    #[cold]
    fn discard_body(&mut self, channel: u16, len: usize) -> Result<Option<Assembled>, DecodeError> {
        let Some(discarding) = &self.discarding else {
            return Err(self.unexpected(channel, FrameType::BODY));
        };
        let declared = discarding.declared;
        let total = self.received.saturating_add(len as u64);
        if total > declared {
            self.reset();
            return Err(DecodeError::BodyTooLong {
                declared,
                received: total,
            });
        }
        self.received = total;
        if total < declared {
            return Ok(None);
        }
        Ok(self.finish_discarding())
    }

    /// The message being dropped, handed over; back to idle.
    fn finish_discarding(&mut self) -> Option<Assembled> {
        let discarding = self.discarding.take()?;
        let method = self.method.take()?;
        self.received = 0;
        Some(Assembled::Discarded(Discarded {
            method,
            body_size: discarding.declared,
            reason: discarding.reason,
        }))
    }

    /// Feeds one frame of this channel. Returns a method or a complete message when one is
    /// ready, `Ok(None)` while a message is still incomplete. Heartbeats and protocol headers
    /// are not channel frames and are refused.
    // Inlinable into the caller's loop for the same reason as `FrameDecoder::decode`.
    #[inline]
    pub fn push(&mut self, frame: Frame) -> Result<Option<Assembled>, DecodeError> {
        // The checks are guards, so that the method is moved straight from the frame into its
        // slot (binding it first and checking after cost a second 144-byte copy).
        let idle = self.method.is_none();
        match frame {
            Frame::Body { channel, body } => self.push_body(channel, body),
            Frame::Header { channel, header } => self.push_header(channel, header),
            Frame::Method { method, .. } if idle && method.has_content() => {
                self.method = Some(method);
                Ok(None)
            }
            Frame::Method { method, .. } if idle => Ok(Some(Assembled::Method(method))),
            Frame::Method { channel, .. } => Err(self.unexpected(channel, FrameType::METHOD)),
            other => Err(self.unexpected(
                other.channel(),
                other.frame_type().unwrap_or(FrameType(b'A')),
            )),
        }
    }

    // Inlined into `push`, and with it into the caller's loop, so that a result is built where
    // the caller reads it: out of line, each 232-byte result was copied twice more per frame
    // (deliver triples: 74 -> 65 ns per frame).
    #[inline]
    fn push_header(
        &mut self,
        channel: u16,
        header: ContentHeader,
    ) -> Result<Option<Assembled>, DecodeError> {
        let class_id = match &self.method {
            Some(method) if self.header.is_none() && self.discarding.is_none() => method.class_id(),
            _ => return Err(self.unexpected(channel, FrameType::HEADER)),
        };
        if header.class_id != class_id {
            self.reset();
            return Err(DecodeError::ContentClassMismatch {
                method: class_id,
                header: header.class_id,
            });
        }
        if header.body_size > self.max_body_size {
            let reason = DiscardReason::TooLarge {
                declared: header.body_size,
                limit: self.max_body_size,
            };
            return self.discard(header.body_size, reason);
        }
        if header.body_size == 0 {
            return self.complete(header, Body::new());
        }
        self.header = Some(header);
        Ok(None)
    }

    // Inlined for the same reason as `push_header`.
    #[inline]
    fn push_body(&mut self, channel: u16, chunk: Bytes) -> Result<Option<Assembled>, DecodeError> {
        let Some(header) = &self.header else {
            return self.discard_body(channel, chunk.len());
        };
        let declared = header.body_size;
        let total = self.received + chunk.len() as u64;
        if total > declared {
            self.reset();
            return Err(DecodeError::BodyTooLong {
                declared,
                received: total,
            });
        }
        if total < declared {
            // Room for the chunks still to come, should this one start a chain.
            let left = (declared - total).div_ceil(chunk.len().max(1) as u64);
            self.body.push(chunk, 2 + left.min(MAX_CHUNK_HINT) as usize);
            self.received = total;
            return Ok(None);
        }
        let Some(header) = self.header.take() else {
            return Ok(None); // unreachable: checked above
        };
        let body = if self.received == 0 {
            // The whole body in one frame (the common case): the frame's slice is the body.
            Body::from(chunk)
        } else {
            self.received = 0;
            self.body.push(chunk, 2);
            std::mem::take(&mut self.body)
        };
        self.complete(header, body)
    }

    /// The message in progress, completed by `header` and `body`; back to idle.
    // Returns the `push` result itself, inlined, so the message is built where `push` returns
    // it (an `Option` re-wrapped into the `Result` was one more 232-byte copy per message).
    #[inline(always)]
    fn complete(
        &mut self,
        header: ContentHeader,
        body: Body,
    ) -> Result<Option<Assembled>, DecodeError> {
        // `method` is always `Some` here (a header is only accepted after a method).
        Ok(self.method.take().map(|method| {
            Assembled::Content(Content {
                method,
                header,
                body,
            })
        }))
    }

    /// The error for a frame this state does not expect; the partial message is dropped.
    fn unexpected(&mut self, channel: u16, got: FrameType) -> DecodeError {
        let expected = match (&self.method, &self.header, &self.discarding) {
            (None, _, _) => "between messages",
            (Some(_), None, None) => "awaiting a content header",
            (Some(_), _, _) => "awaiting a content body",
        };
        self.reset();
        DecodeError::UnexpectedFrame {
            channel,
            got,
            expected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReplyCode;
    use crate::methods::{BasicDeliver, BasicQosOk};
    use crate::properties::BasicProperties;

    fn deliver() -> Frame {
        Frame::Method {
            channel: 1,
            method: Method::BasicDeliver(BasicDeliver::default()),
        }
    }

    fn header(size: u64) -> Frame {
        Frame::Header {
            channel: 1,
            header: ContentHeader::basic(size, BasicProperties::default()),
        }
    }

    fn body(b: &'static [u8]) -> Frame {
        Frame::Body {
            channel: 1,
            body: Bytes::from_static(b),
        }
    }

    #[test]
    fn multi_frame_body_is_joined_in_order() {
        let mut asm = ContentAssembler::new(1024);
        assert_eq!(asm.push(deliver()), Ok(None));
        assert_eq!(asm.push(header(7)), Ok(None));
        assert_eq!(asm.push(body(b"abc")), Ok(None));
        assert_eq!(asm.push(body(b"de")), Ok(None));
        let Ok(Some(Assembled::Content(c))) = asm.push(body(b"fg")) else {
            panic!("expected content");
        };
        assert_eq!(c.body, "abcdefg");
        assert!(asm.is_idle());
    }

    #[test]
    fn empty_body_completes_at_the_header() {
        let mut asm = ContentAssembler::new(1024);
        asm.push(deliver()).expect("method");
        assert!(matches!(
            asm.push(header(0)),
            Ok(Some(Assembled::Content(_)))
        ));
    }

    #[test]
    fn out_of_order_frames_are_505() {
        let mut asm = ContentAssembler::new(1024);
        assert_eq!(
            asm.push(body(b"x")).unwrap_err().reply_code(),
            ReplyCode::UNEXPECTED_FRAME
        );
        let mut asm = ContentAssembler::new(1024);
        assert_eq!(
            asm.push(header(1)).unwrap_err().reply_code(),
            ReplyCode::UNEXPECTED_FRAME
        );
        let mut asm = ContentAssembler::new(1024);
        asm.push(deliver()).expect("method");
        let qos_ok = Frame::Method {
            channel: 1,
            method: Method::BasicQosOk(BasicQosOk {}),
        };
        assert_eq!(
            asm.push(qos_ok).unwrap_err().reply_code(),
            ReplyCode::UNEXPECTED_FRAME
        );
    }

    #[test]
    fn body_longer_than_declared_is_an_error() {
        let mut asm = ContentAssembler::new(1024);
        asm.push(deliver()).expect("method");
        asm.push(header(2)).expect("header");
        let err = asm.push(body(b"abc")).unwrap_err();
        assert_eq!(
            err,
            DecodeError::BodyTooLong {
                declared: 2,
                received: 3
            }
        );
    }

    fn deliver_tagged(tag: u64) -> Frame {
        Frame::Method {
            channel: 1,
            method: Method::BasicDeliver(BasicDeliver {
                delivery_tag: tag,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_body_over_the_limit_is_dropped_as_it_comes_and_handed_over() {
        let mut asm = ContentAssembler::new(4);
        asm.push(deliver_tagged(7)).expect("method");
        assert_eq!(asm.push(header(7)), Ok(None));
        assert_eq!(asm.push(body(b"abc")), Ok(None));
        assert_eq!(asm.body.len(), 0, "nothing kept");
        let Ok(Some(Assembled::Discarded(d))) = asm.push(body(b"defg")) else {
            panic!("expected the discarded message");
        };
        assert_eq!(d.body_size, 7);
        assert_eq!(
            d.reason,
            DiscardReason::TooLarge {
                declared: 7,
                limit: 4
            }
        );
        assert!(matches!(d.method, Method::BasicDeliver(m) if m.delivery_tag == 7));
        // The channel goes on: the next message is assembled as usual.
        assert!(asm.is_idle());
        asm.push(deliver()).expect("method");
        asm.push(header(2)).expect("header");
        assert!(matches!(
            asm.push(body(b"hi")),
            Ok(Some(Assembled::Content(_)))
        ));
    }

    #[test]
    fn a_huge_declared_size_reserves_nothing_and_overruns_are_still_refused() {
        let mut asm = ContentAssembler::new(10);
        asm.push(deliver()).expect("method");
        assert_eq!(asm.push(header(u64::MAX)), Ok(None));
        assert_eq!(asm.push(body(b"abc")), Ok(None));
        let mut asm = ContentAssembler::new(1);
        asm.push(deliver()).expect("method");
        asm.push(header(2)).expect("discarding");
        assert_eq!(
            asm.push(body(b"abc")),
            Err(DecodeError::BodyTooLong {
                declared: 2,
                received: 3
            })
        );
    }

    #[test]
    fn a_bad_header_drops_its_body_and_hands_the_method_over() {
        let source = FieldError::UnknownFieldType { letter: b'?' };
        let mut asm = ContentAssembler::new(1024);
        // Without a method before it, it is a misplaced header.
        assert_eq!(
            asm.push_bad_header(1, 3, source.clone())
                .unwrap_err()
                .reply_code(),
            ReplyCode::UNEXPECTED_FRAME
        );
        asm.push(deliver_tagged(9)).expect("method");
        assert_eq!(asm.push_bad_header(1, 3, source.clone()), Ok(None));
        // A second header is out of order.
        let mut twice = ContentAssembler::new(1024);
        twice.push(deliver()).expect("method");
        twice.push_bad_header(1, 3, source.clone()).expect("first");
        assert!(twice.push(header(3)).is_err());
        let Ok(Some(Assembled::Discarded(d))) = asm.push(body(b"xyz")) else {
            panic!("expected the discarded message");
        };
        assert_eq!(d.reason, DiscardReason::BadProperties(source.clone()));
        // An empty body completes at the header.
        let mut asm = ContentAssembler::new(1024);
        asm.push(deliver()).expect("method");
        assert!(matches!(
            asm.push_bad_header(1, 0, source),
            Ok(Some(Assembled::Discarded(_)))
        ));
        assert!(asm.is_idle());
    }
}
