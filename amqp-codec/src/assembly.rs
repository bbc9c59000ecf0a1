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
//! a body longer than the header declared is a frame error (501). The declared size is checked
//! against a configurable limit before anything is kept, and nothing is allocated up front: a
//! single-frame body is the frame's own slice, and a multi-frame body is copied once, when its
//! last frame arrives.

use bytes::{Bytes, BytesMut};

use crate::constants::FrameType;
use crate::error::DecodeError;
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
    /// The body, shared with the read buffer when it came in one frame.
    pub body: Bytes,
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
}

/// Where a channel's content stream stands.
// Boxing the large variant would cost a heap allocation per message; moves are cheaper.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Default)]
enum State {
    /// Between messages.
    #[default]
    Idle,
    /// A content-bearing method arrived; its header comes next.
    AwaitingHeader(Method),
    /// Header in; body frames until `received == header.body_size`.
    AwaitingBody {
        method: Method,
        header: ContentHeader,
        /// Bytes received so far.
        received: u64,
        /// The first body frame, kept as is: most messages have only one.
        first: Option<Bytes>,
        /// Further body frames, kept as slices until the last arrives.
        rest: Vec<Bytes>,
    },
}

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
    /// Where the stream stands.
    state: State,
    /// Largest body accepted, checked against the header's declared size.
    max_body_size: u64,
}

impl ContentAssembler {
    /// An assembler accepting bodies up to `max_body_size` bytes.
    pub fn new(max_body_size: u64) -> Self {
        Self {
            state: State::Idle,
            max_body_size,
        }
    }

    /// True between messages.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Forgets a partial message (after the channel closed).
    pub fn reset(&mut self) {
        self.state = State::Idle;
    }

    /// Feeds one frame of this channel. Returns a method or a complete message when one is
    /// ready, `Ok(None)` while a message is still incomplete. Heartbeats and protocol headers
    /// are not channel frames and are refused.
    pub fn push(&mut self, frame: Frame) -> Result<Option<Assembled>, DecodeError> {
        match frame {
            Frame::Body { channel, body } => self.push_body(channel, body),
            Frame::Method { channel, method } => match self.state {
                State::Idle if method.has_content() => {
                    self.state = State::AwaitingHeader(method);
                    Ok(None)
                }
                State::Idle => Ok(Some(Assembled::Method(method))),
                _ => Err(self.unexpected(channel, FrameType::METHOD)),
            },
            Frame::Header { channel, header } => self.push_header(channel, header),
            other => Err(self.unexpected(
                other.channel(),
                other.frame_type().unwrap_or(FrameType(b'A')),
            )),
        }
    }

    fn push_header(
        &mut self,
        channel: u16,
        header: ContentHeader,
    ) -> Result<Option<Assembled>, DecodeError> {
        let State::AwaitingHeader(method) = std::mem::take(&mut self.state) else {
            return Err(self.unexpected(channel, FrameType::HEADER));
        };
        if header.class_id != method.class_id() {
            return Err(DecodeError::ContentClassMismatch {
                method: method.class_id(),
                header: header.class_id,
            });
        }
        if header.body_size > self.max_body_size {
            return Err(DecodeError::MessageTooLarge {
                declared: header.body_size,
                limit: self.max_body_size,
            });
        }
        if header.body_size == 0 {
            return Ok(Some(Assembled::Content(Content {
                method,
                header,
                body: Bytes::new(),
            })));
        }
        self.state = State::AwaitingBody {
            method,
            header,
            received: 0,
            first: None,
            rest: Vec::new(),
        };
        Ok(None)
    }

    fn push_body(&mut self, channel: u16, body: Bytes) -> Result<Option<Assembled>, DecodeError> {
        let State::AwaitingBody {
            header,
            received,
            first,
            rest,
            ..
        } = &mut self.state
        else {
            return Err(self.unexpected(channel, FrameType::BODY));
        };
        let total = *received + body.len() as u64;
        if total > header.body_size {
            let declared = header.body_size;
            self.state = State::Idle;
            return Err(DecodeError::BodyTooLong {
                declared,
                received: total,
            });
        }
        *received = total;
        if first.is_none() {
            *first = Some(body);
        } else {
            rest.push(body);
        }
        if total < header.body_size {
            return Ok(None);
        }
        let State::AwaitingBody {
            method,
            header,
            first,
            rest,
            ..
        } = std::mem::take(&mut self.state)
        else {
            return Ok(None);
        };
        Ok(Some(Assembled::Content(Content {
            method,
            header,
            body: join(first.unwrap_or_default(), rest, total),
        })))
    }

    /// The error for a frame this state does not expect; the partial message is dropped.
    fn unexpected(&mut self, channel: u16, got: FrameType) -> DecodeError {
        let expected = match std::mem::take(&mut self.state) {
            State::Idle => "between messages",
            State::AwaitingHeader(_) => "awaiting a content header",
            State::AwaitingBody { .. } => "awaiting a content body",
        };
        DecodeError::UnexpectedFrame {
            channel,
            got,
            expected,
        }
    }
}

/// The whole body: the first frame's slice itself when it was the only one, otherwise every
/// frame copied once into a buffer of exactly the received size.
fn join(first: Bytes, rest: Vec<Bytes>, total: u64) -> Bytes {
    if rest.is_empty() {
        return first;
    }
    // `total` is what actually arrived, so this allocation is not sized by a claim.
    let mut body = BytesMut::with_capacity(usize::try_from(total).unwrap_or(0));
    body.extend_from_slice(&first);
    for part in rest {
        body.extend_from_slice(&part);
    }
    body.freeze()
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

    #[test]
    fn declared_size_over_the_limit_is_refused_before_any_body() {
        let mut asm = ContentAssembler::new(10);
        asm.push(deliver()).expect("method");
        let err = asm.push(header(u64::MAX)).unwrap_err();
        assert_eq!(err.reply_code(), ReplyCode::CONTENT_TOO_LARGE);
    }
}
