//! Every AMQP 0-9-1 method, with RabbitMQ's extensions, as typed structs and one [`Method`] enum.
//!
//! The structs, the enum, the decoder's dispatch and the metadata in [`METHODS`] are all
//! expanded from one declarative table in `spec.rs` by the `amqp_methods!` macro below: the table
//! is the single source of truth, cross-checked against RabbitMQ's JSON spec by a test.
//!
//! `Default` on a method struct is the zero value of every field (empty strings and tables,
//! `false`, 0), not the spec's suggested defaults.

mod spec;

pub use spec::*;

use bytes::{Buf, Bytes, BytesMut};

use crate::constants::{ClassId, FrameType};
use crate::error::DecodeError;
use crate::read::args::Reader;
use crate::read::deliver::{Hot, hot};
use crate::strings::ShortStr;
use crate::wire::{BufSink, LenCounter};

/// Which peer sends a method (the spec's `chassis` elements, read from the receiver's side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sent by clients, received by servers.
    ToServer,
    /// Sent by servers, received by clients.
    ToClient,
    /// Either peer may send it (close, flow, cancel, ack, nack, blocked).
    Both,
}

impl Direction {
    /// True if a client may receive this method from a server.
    pub const fn client_receives(self) -> bool {
        matches!(self, Self::ToClient | Self::Both)
    }

    /// True if a server may receive this method from a client.
    pub const fn server_receives(self) -> bool {
        matches!(self, Self::ToServer | Self::Both)
    }
}

/// Static facts about one method, from the method table.
#[derive(Debug, Clone, Copy)]
pub struct MethodInfo {
    /// The class id.
    pub class_id: ClassId,
    /// The method id within its class.
    pub method_id: u16,
    /// The spec name, e.g. `"basic.deliver"`.
    pub name: &'static str,
    /// Who sends it.
    pub direction: Direction,
    /// True for requests that the peer answers with one of [`MethodInfo::responses`].
    pub synchronous: bool,
    /// True if a content header and body follow the method (publish, deliver, get-ok, return).
    pub has_content: bool,
    /// The methods that answer this one, as `(class id, method id)`.
    pub responses: &'static [(ClassId, u16)],
    /// The arguments, in wire order.
    pub fields: &'static [FieldInfo],
}

/// One method argument, from the method table.
#[derive(Debug, Clone, Copy)]
pub struct FieldInfo {
    /// The spec's name, with `_` where the spec writes `-` (e.g. `"routing_key"`).
    pub name: &'static str,
    /// The spec's type: `octet`, `short`, `long`, `longlong`, `bit`, `shortstr`, `longstr` or
    /// `table`.
    pub spec_type: &'static str,
}

/// `flags` (method table annotations) contains `want`; a const fn so that [`MethodInfo`] stays a
/// constant.
pub(crate) const fn has_flag(flags: &[&str], want: &str) -> bool {
    let mut i = 0;
    while i < flags.len() {
        if const_str_eq(flags[i], want) {
            return true;
        }
        i += 1;
    }
    false
}

const fn const_str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Expands the method table: one struct per method, the [`Method`] enum, its decode/encode
/// dispatch, and the [`METHODS`] metadata.
macro_rules! amqp_methods {
    ($(
        $(#[doc = $cdoc:literal])*
        class $cname:literal = $class_id:literal {
            $(
                $(#[doc = $mdoc:literal])*
                $mid:literal $Name:ident $mname:literal ($dir:ident $(, $flag:ident)*)
                    $(=> $($Reply:ident)|+)? {
                    $(
                        $(#[doc = $fdoc:literal])*
                        $field:ident $(($wire:literal))? : $fty:ty
                    ),* $(,)?
                }
            )*
        }
    )*) => {
        $($(
            $(#[doc = $mdoc])*
            #[doc = ""]
            #[doc = concat!("Wire: `", $cname, ".", $mname, "`, class ", $class_id, ", method ", $mid, ".")]
            #[derive(Debug, Clone, PartialEq, Eq, Default)]
            pub struct $Name {
                $(
                    $(#[doc = $fdoc])*
                    pub $field: $fty,
                )*
            }

            impl $Name {
                /// This method's class id.
                pub const CLASS_ID: ClassId = ClassId($class_id);
                /// This method's id within its class.
                pub const METHOD_ID: u16 = $mid;
                /// The spec name, `class.method`.
                pub const NAME: &'static str = concat!($cname, ".", $mname);
                /// Static facts about this method.
                pub const INFO: MethodInfo = MethodInfo {
                    class_id: ClassId($class_id),
                    method_id: $mid,
                    name: concat!($cname, ".", $mname),
                    direction: Direction::$dir,
                    synchronous: has_flag(&[$(stringify!($flag)),*], "sync"),
                    has_content: has_flag(&[$(stringify!($flag)),*], "content"),
                    responses: &[$($(($Reply::CLASS_ID, $Reply::METHOD_ID)),+)?],
                    fields: &[$(
                        FieldInfo {
                            name: amqp_methods!(@name $field $(, $wire)?),
                            spec_type: <$fty as crate::wire::Field>::SPEC_TYPE,
                        }
                    ),*],
                };

                #[allow(unused_variables)]
                fn read_fields(r: &mut Reader<'_>) -> Result<Self, crate::error::FieldError> {
                    Ok(Self {
                        $($field: <$fty as crate::wire::Field>::read(r)?,)*
                    })
                }

                #[allow(unused_variables)]
                fn write_fields<S: crate::wire::Sink>(&self, s: &mut S) {
                    $(<$fty as crate::wire::Field>::write(&self.$field, s);)*
                }
            }

            impl From<$Name> for Method {
                fn from(m: $Name) -> Method {
                    Method::$Name(m)
                }
            }
        )*)*

        /// Any AMQP 0-9-1 method, in either direction.
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[allow(clippy::large_enum_variant)]
        pub enum Method {
            $($(
                $(#[doc = $mdoc])*
                $Name($Name),
            )*)*
        }

        impl Method {
            /// Static facts about this method.
            // A table lookup by variant; inlinable because the assembler asks it per message.
            #[inline]
            pub fn info(&self) -> &'static MethodInfo {
                match self {
                    $($(Method::$Name(_) => &$Name::INFO,)*)*
                }
            }

            pub(crate) fn read_args(
                class_id: u16,
                method_id: u16,
                r: &mut Reader<'_>,
            ) -> Option<Result<Method, (&'static str, crate::error::FieldError)>> {
                Some(match (class_id, method_id) {
                    $($(
                        ($class_id, $mid) => $Name::read_fields(r)
                            .map(Method::$Name)
                            .map_err(|e| ($Name::NAME, e)),
                    )*)*
                    _ => return None,
                })
            }

            pub(crate) fn write_args<S: crate::wire::Sink>(&self, s: &mut S) {
                match self {
                    $($(Method::$Name(m) => m.write_fields(s),)*)*
                }
            }
        }

        /// Every method in the table, in table order.
        pub static METHODS: &[MethodInfo] = &[$($($Name::INFO,)*)*];
    };
    (@name $field:ident) => { stringify!($field) };
    (@name $field:ident, $wire:literal) => { $wire };
}

pub(crate) use amqp_methods;

impl Method {
    /// The class id.
    #[inline]
    pub fn class_id(&self) -> ClassId {
        self.info().class_id
    }

    /// The method id within its class.
    pub fn method_id(&self) -> u16 {
        self.info().method_id
    }

    /// The spec name, e.g. `"basic.publish"`.
    pub fn name(&self) -> &'static str {
        self.info().name
    }

    /// True if a content header and body follow this method.
    #[inline]
    pub fn has_content(&self) -> bool {
        self.info().has_content
    }

    /// True if this method is a request the peer must answer.
    pub fn is_synchronous(&self) -> bool {
        self.info().synchronous
    }

    /// True if `reply` is one of the methods that answer this request.
    pub fn is_answered_by(&self, reply: &Method) -> bool {
        self.info()
            .responses
            .contains(&(reply.class_id(), reply.method_id()))
    }

    /// Decodes a method frame's payload: class id, method id, then the arguments. Strings and
    /// tables in the result share `payload`.
    pub fn decode(payload: &Bytes) -> Result<Method, DecodeError> {
        Self::decode_owned(payload.clone())
    }

    /// [`Method::decode`], taking the payload so that a string of the method can be the payload
    /// itself. Deliveries and confirms are read whole by [`crate::read::deliver`]; every other
    /// method, and anything that path does not accept, by the generated decoders.
    // Inlined into the frame decoder so that the method is built in the frame it returns, not
    // built here and copied there (144 bytes, once per delivery).
    #[inline(always)]
    pub(crate) fn decode_owned(payload: Bytes) -> Result<Method, DecodeError> {
        Ok(match hot(&payload) {
            Some(Hot::Ack(ack)) => Method::BasicAck(ack),
            Some(Hot::Nack(nack)) => Method::BasicNack(nack),
            Some(Hot::Deliver(args)) => {
                let consumer_tag = ShortStr::from_wire(payload.slice_ref(args.consumer_tag));
                let exchange = ShortStr::from_wire(payload.slice_ref(args.exchange));
                let (delivery_tag, redelivered) = (args.delivery_tag, args.redelivered);
                // The routing key ends the payload: it is the payload itself, advanced (one
                // reference count fewer than a slice and a drop).
                let routing_key_at = payload.len() - args.routing_key.len();
                let mut routing_key = payload;
                routing_key.advance(routing_key_at);
                Method::BasicDeliver(BasicDeliver {
                    consumer_tag,
                    delivery_tag,
                    redelivered,
                    exchange,
                    routing_key: ShortStr::from_wire(routing_key),
                })
            }
            None => return Self::decode_generated(&payload),
        })
    }

    /// Decodes any method with the decoders the method table generates.
    pub(crate) fn decode_generated(payload: &Bytes) -> Result<Method, DecodeError> {
        let mut r = Reader::new(payload);
        let (Ok(class_id), Ok(method_id)) = (r.short(), r.short()) else {
            return Err(DecodeError::FrameTooShort {
                frame_type: FrameType::METHOD,
                size: payload.len() as u32,
            });
        };
        let bad = |(name, source)| DecodeError::BadMethod {
            class_id: ClassId(class_id),
            method_id,
            name,
            source,
        };
        match Method::read_args(class_id, method_id, &mut r) {
            None => Err(DecodeError::UnknownMethod {
                class_id: ClassId(class_id),
                method_id,
            }),
            Some(Err(e)) => Err(bad(e)),
            Some(Ok(method)) => {
                // A payload holds exactly its arguments; leftovers mean a framing bug upstream.
                r.finish().map_err(|e| bad((method.name(), e)))?;
                Ok(method)
            }
        }
    }

    /// Octets of the method frame's payload: class id, method id and arguments.
    pub fn encoded_len(&self) -> usize {
        let mut counter = LenCounter::default();
        self.write_args(&mut counter);
        4 + counter.len
    }

    /// Appends the payload (class id, method id, arguments) to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        let info = self.info();
        let [c0, c1] = info.class_id.0.to_be_bytes();
        let [m0, m1] = info.method_id.to_be_bytes();
        buf.extend_from_slice(&[c0, c1, m0, m1]);
        self.write_args(&mut BufSink::new(buf));
    }
}

/// The method with this class and method id, if the table has it.
pub fn method_info(class_id: ClassId, method_id: u16) -> Option<&'static MethodInfo> {
    METHODS
        .iter()
        .find(|m| m.class_id == class_id && m.method_id == method_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(method: &Method) -> Vec<u8> {
        let mut buf = BytesMut::new();
        method.encode(&mut buf);
        buf.to_vec()
    }

    /// Both paths on `payload`: same method, or same error.
    fn same_as_generated(payload: &[u8]) {
        let payload = Bytes::copy_from_slice(payload);
        assert_eq!(
            Method::decode_owned(payload.clone()),
            Method::decode_generated(&payload),
            "{payload:?}"
        );
    }

    #[test]
    fn hot_and_generated_decoders_agree() {
        let deliver = Method::BasicDeliver(BasicDeliver {
            consumer_tag: ShortStr::from_static("ctag"),
            delivery_tag: 0x0102_0304_0506_0708,
            redelivered: true,
            exchange: ShortStr::from_static("ex"),
            routing_key: ShortStr::from_static("rk.1"),
        });
        let empty_strings = Method::BasicDeliver(BasicDeliver::default());
        let ack = Method::BasicAck(BasicAck {
            delivery_tag: 9,
            multiple: true,
        });
        let nack = Method::BasicNack(BasicNack {
            delivery_tag: 9,
            multiple: false,
            requeue: true,
        });
        for method in [deliver, empty_strings, ack, nack] {
            let wire = encoded(&method);
            assert_eq!(
                Method::decode_owned(Bytes::from(wire.clone())),
                Ok(method.clone())
            );
            // Every truncation, and one or two bytes too many.
            for len in 0..wire.len() {
                same_as_generated(&wire[..len]);
            }
            for extra in [&[0u8][..], &[1, 2]] {
                same_as_generated(&[&wire[..], extra].concat());
            }
            // Every value of every octet, one octet at a time (lengths, bits, tags).
            for at in 4..wire.len() {
                for v in 0..=255 {
                    let mut changed = wire.clone();
                    changed[at] = v;
                    same_as_generated(&changed);
                }
            }
        }
    }

    #[test]
    fn the_routing_key_is_the_payload_itself() {
        let wire = Bytes::from(encoded(&Method::BasicDeliver(BasicDeliver {
            routing_key: ShortStr::from_static("rk"),
            ..Default::default()
        })));
        let Ok(Method::BasicDeliver(d)) = Method::decode_owned(wire.clone()) else {
            panic!("a delivery");
        };
        assert_eq!(d.routing_key, "rk");
        assert_eq!(d.routing_key.as_ptr(), wire[wire.len() - 2..].as_ptr());
    }
}
