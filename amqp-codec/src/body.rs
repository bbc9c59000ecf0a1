//! [`Body`]: a message body as a chain of shared slices of the read buffer.
//!
//! A body that spans several body frames is not joined: each frame's payload is kept as the
//! [`Bytes`] slice the decoder split off, and the body is the chain of them. Joining would copy
//! the whole body once per message (it was 81% of the instructions decoding 128 KiB deliveries,
//! which take two frames at RabbitMQ's default frame-max); a chain costs one small `Vec`.
//!
//! The common case, a body in one frame, is that frame's slice itself: no allocation, no copy.
//! Readers that need one contiguous buffer call [`Body::into_bytes`], which is free for one chunk
//! and copies once for several; readers that can take pieces use [`Body::chunks`] or the
//! [`Buf`] implementation (with [`Buf::chunks_vectored`] for a vectored write).

use std::fmt;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

/// A message body: one or more [`Bytes`] chunks, in order, usually slices of the read buffer.
///
/// Equality compares contents, not how they are chunked: a body of chunks `"ab"`, `"c"` equals
/// one of `"abc"`, and equals the string `"abc"`.
///
/// ```
/// use amqp_codec::Body;
/// use bytes::{Buf, Bytes};
///
/// let one = Body::from(Bytes::from_static(b"hello world"));
/// let two = Body::from(vec![Bytes::from_static(b"hello "), Bytes::from_static(b"world")]);
/// assert_eq!(one, two);
/// assert_eq!(two.len(), 11);
/// assert_eq!(two.chunks().count(), 2);
/// assert_eq!(two, "hello world");
/// assert_eq!(two.clone().copy_to_bytes(5), "hello");
/// assert_eq!(Bytes::from(two), "hello world"); // one copy, as there are two chunks
/// ```
#[derive(Clone, Default)]
pub struct Body {
    repr: Repr,
}

/// The chunks. `Many` never holds an empty chunk, so [`Buf::chunk`] is non-empty while anything
/// remains; `One` may be empty (the empty body).
#[derive(Clone)]
enum Repr {
    /// A body in one piece (one frame, or built from one buffer).
    One(Bytes),
    /// A body in several pieces, in order. Only built with two or more chunks, though reading
    /// through [`Buf`] may consume it down to fewer.
    Many(Vec<Bytes>),
}

impl Default for Repr {
    fn default() -> Self {
        Self::One(Bytes::new())
    }
}

impl Body {
    /// An empty body.
    pub const fn new() -> Self {
        Self {
            repr: Repr::One(Bytes::new()),
        }
    }

    /// Total length in bytes, over every chunk.
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::One(b) => b.len(),
            Repr::Many(chunks) => chunks.iter().map(Bytes::len).sum(),
        }
    }

    /// True when the body has no bytes.
    pub fn is_empty(&self) -> bool {
        match &self.repr {
            Repr::One(b) => b.is_empty(),
            // `Many` holds no empty chunk, so it is empty only once reading consumed them all.
            Repr::Many(chunks) => chunks.is_empty(),
        }
    }

    /// The chunks, in order (an iterator over a slice: `.as_slice()` gives the slice, `.len()`
    /// the count). One chunk for a body that came in one frame; an empty body has one empty
    /// chunk.
    pub fn chunks(&self) -> std::slice::Iter<'_, Bytes> {
        match &self.repr {
            Repr::One(b) => std::slice::from_ref(b).iter(),
            Repr::Many(chunks) => chunks.iter(),
        }
    }

    /// The body as one chunk, if it is in one piece.
    pub fn as_single(&self) -> Option<&Bytes> {
        match &self.repr {
            Repr::One(b) => Some(b),
            Repr::Many(chunks) => match &chunks[..] {
                [one] => Some(one),
                _ => None,
            },
        }
    }

    /// The body as one contiguous [`Bytes`]: the chunk itself when there is one (no copy), else
    /// every chunk copied once into a buffer of exactly the body's length.
    pub fn into_bytes(self) -> Bytes {
        match self.repr {
            Repr::One(b) => b,
            Repr::Many(chunks) => join(&chunks),
        }
    }

    /// A copy of the body's bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        for chunk in self.chunks() {
            v.extend_from_slice(chunk);
        }
        v
    }

    /// Appends a chunk (for the content assembler): an empty chunk is skipped, a second chunk
    /// turns the body into a chain, with room for `hint` chunks in all.
    pub(crate) fn push(&mut self, chunk: Bytes, hint: usize) {
        if chunk.is_empty() {
            return;
        }
        match &mut self.repr {
            Repr::One(first) if first.is_empty() => *first = chunk,
            Repr::One(first) => {
                let mut chunks = Vec::with_capacity(hint.max(2));
                chunks.push(std::mem::take(first));
                chunks.push(chunk);
                self.repr = Repr::Many(chunks);
            }
            Repr::Many(chunks) => chunks.push(chunk),
        }
    }

    /// True when `other`, a contiguous byte string, has the same contents.
    fn eq_slice(&self, mut other: &[u8]) -> bool {
        if let Repr::One(b) = &self.repr {
            return b[..] == *other;
        }
        for chunk in self.chunks() {
            let Some((head, tail)) = other.split_at_checked(chunk.len()) else {
                return false;
            };
            if head != &chunk[..] {
                return false;
            }
            other = tail;
        }
        other.is_empty()
    }
}

/// Copies `chunks` into one buffer of exactly their total length.
fn join(chunks: &[Bytes]) -> Bytes {
    let mut out = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
    for chunk in chunks {
        out.extend_from_slice(chunk);
    }
    out.freeze()
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Self {
            repr: Repr::One(bytes),
        }
    }
}

/// Chains the chunks as they are (empty ones dropped): no copy.
impl From<Vec<Bytes>> for Body {
    fn from(mut chunks: Vec<Bytes>) -> Self {
        chunks.retain(|c| !c.is_empty());
        let repr = match chunks.len() {
            0 => Repr::One(Bytes::new()),
            1 => Repr::One(chunks.swap_remove(0)),
            _ => Repr::Many(chunks),
        };
        Self { repr }
    }
}

impl From<&'static [u8]> for Body {
    fn from(bytes: &'static [u8]) -> Self {
        Self::from(Bytes::from_static(bytes))
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Self::from(Bytes::from_static(s.as_bytes()))
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Self::from(Bytes::from(v))
    }
}

/// [`Body::into_bytes`]: free for one chunk, one copy for several.
impl From<Body> for Bytes {
    fn from(body: Body) -> Self {
        body.into_bytes()
    }
}

impl Buf for Body {
    fn remaining(&self) -> usize {
        self.len()
    }

    fn chunk(&self) -> &[u8] {
        match &self.repr {
            Repr::One(b) => b,
            Repr::Many(chunks) => chunks.first().map_or(&[], |c| &c[..]),
        }
    }

    fn advance(&mut self, mut cnt: usize) {
        match &mut self.repr {
            Repr::One(b) => b.advance(cnt),
            Repr::Many(chunks) => {
                let done = chunks.iter().take_while(|c| {
                    let whole = cnt >= c.len();
                    if whole {
                        cnt -= c.len();
                    }
                    whole
                });
                let done = done.count();
                chunks.drain(..done);
                match chunks.first_mut() {
                    Some(front) => front.advance(cnt),
                    None => assert!(cnt == 0, "advance past the end of a body"),
                }
            }
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, chunk) in dst.iter_mut().zip(self.chunks().filter(|c| !c.is_empty())) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        // Within the first chunk this is a shared slice, not a copy.
        match &mut self.repr {
            Repr::One(b) => return b.copy_to_bytes(len),
            Repr::Many(chunks) => match chunks.first_mut() {
                Some(front) if front.len() > len => return front.split_to(len),
                _ => {}
            },
        }
        assert!(
            len <= self.remaining(),
            "copy_to_bytes past the end of a body"
        );
        let mut out = BytesMut::with_capacity(len);
        while out.len() < len {
            let chunk = self.chunk();
            let take = chunk.len().min(len - out.len());
            out.extend_from_slice(&chunk[..take]);
            self.advance(take);
        }
        out.freeze()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Like `Bytes`: escaped contents, joined across chunks, with the chunk count when > 1.
        let mut s = String::new();
        for chunk in self.chunks() {
            let escaped = format!("{chunk:?}");
            let inner = escaped
                .strip_prefix("b\"")
                .and_then(|e| e.strip_suffix('"'));
            s.push_str(inner.unwrap_or(&escaped));
        }
        match &self.repr {
            Repr::Many(chunks) => write!(f, "Body(b\"{s}\" in {} chunks)", chunks.len()),
            Repr::One(_) => write!(f, "Body(b\"{s}\")"),
        }
    }
}

impl PartialEq for Body {
    fn eq(&self, other: &Body) -> bool {
        match (&self.repr, &other.repr) {
            (_, Repr::One(b)) => self.eq_slice(b),
            (Repr::One(a), _) => other.eq_slice(a),
            _ => self.len() == other.len() && self.to_vec() == other.to_vec(),
        }
    }
}

impl Eq for Body {}

macro_rules! eq_by_content {
    ($($ty:ty => |$v:ident| $slice:expr),* $(,)?) => {$(
        impl PartialEq<$ty> for Body {
            fn eq(&self, $v: &$ty) -> bool {
                self.eq_slice($slice)
            }
        }

        impl PartialEq<Body> for $ty {
            fn eq(&self, body: &Body) -> bool {
                let $v = self;
                body.eq_slice($slice)
            }
        }
    )*};
}

eq_by_content! {
    [u8] => |v| v,
    &[u8] => |v| v,
    str => |v| v.as_bytes(),
    &str => |v| v.as_bytes(),
    Bytes => |v| v,
    Vec<u8> => |v| v,
}

impl<const N: usize> PartialEq<[u8; N]> for Body {
    fn eq(&self, other: &[u8; N]) -> bool {
        self.eq_slice(other)
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Body {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self.eq_slice(*other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(parts: &[&'static str]) -> Body {
        Body::from(
            parts
                .iter()
                .map(|p| Bytes::from_static(p.as_bytes()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn one_chunk_is_the_slice_itself() {
        let bytes = Bytes::from_static(b"abc");
        let body = Body::from(bytes.clone());
        assert_eq!(body.as_single().map(|b| b.as_ptr()), Some(bytes.as_ptr()));
        assert_eq!(body.into_bytes().as_ptr(), bytes.as_ptr(), "no copy");
    }

    #[test]
    fn a_body_is_no_larger_than_bytes() {
        // Content moves on every decoded message; a chain must not make it larger.
        assert!(std::mem::size_of::<Body>() <= std::mem::size_of::<Bytes>() + 8);
    }

    #[test]
    fn equality_ignores_chunking() {
        let a = chain(&["ab", "", "cde"]);
        assert_eq!(a.chunks().len(), 2, "empty chunks dropped");
        assert_eq!(a, chain(&["a", "bcd", "e"]));
        assert_eq!(a, Body::from(Bytes::from_static(b"abcde")));
        assert_eq!(a, "abcde");
        assert_eq!(a, b"abcde");
        assert_eq!(a, &b"abcde"[..]);
        assert_eq!(a, Bytes::from_static(b"abcde"));
        assert_ne!(a, "abcd");
        assert_ne!(a, "abcdef");
        assert_ne!(a, chain(&["ab", "cdf"]));
        assert_eq!(Body::default(), "");
        assert!(Body::default().is_empty());
        assert_eq!(chain(&["", ""]), Body::new());
    }

    #[test]
    fn buf_reads_across_chunks() {
        let mut body = chain(&["hel", "lo ", "world"]);
        assert_eq!(body.remaining(), 11);
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(body.chunks_vectored(&mut slices), 3);
        assert_eq!(body.copy_to_bytes(2), "he");
        assert_eq!(body.chunk(), b"l");
        body.advance(4);
        assert_eq!(body.chunk(), b"world");
        assert_eq!(body.copy_to_bytes(5), "world");
        assert!(!body.has_remaining());
        assert_eq!(body.chunk(), b"");

        let mut body = chain(&["ab", "cd", "ef"]);
        assert_eq!(body.copy_to_bytes(5), "abcde");
        assert_eq!(body, "f");
    }

    #[test]
    fn into_bytes_joins_once() {
        let body = chain(&["ab", "cd"]);
        assert_eq!(body.clone().into_bytes(), "abcd");
        assert_eq!(Bytes::from(body.clone()), "abcd");
        assert_eq!(body.to_vec(), b"abcd");
        assert_eq!(format!("{body:?}"), r#"Body(b"abcd" in 2 chunks)"#);
        assert_eq!(
            format!("{:?}", Body::from("a\n")),
            r#"Body(b"a\n")"#,
            "escaped like Bytes"
        );
    }

    #[test]
    fn push_builds_a_chain() {
        let mut body = Body::new();
        body.push(Bytes::new(), 4);
        body.push(Bytes::from_static(b"ab"), 4);
        assert!(body.as_single().is_some());
        body.push(Bytes::from_static(b"c"), 4);
        body.push(Bytes::new(), 4);
        assert_eq!(body.chunks().len(), 2);
        assert_eq!(body, "abc");
    }
}
