//! Batches against frames: the same bytes, cut into the same reads, give the same messages and
//! the same first error whether decoded frame by frame and assembled (`FrameDecoder::decode`,
//! `ContentAssembler`) or split off in batches with deliveries read whole and in place
//! (`FrameDecoder::decode_batch`, `Inbound::Delivery`), what a batch leaves out at the end of
//! the stream (a delivery awaiting its body) then decoded frame by frame; neither panics.
//!
//! Input layout, as `chunked_feed`: `n` (first byte, mod 16), then `n` chunk sizes (1..=255
//! each, 0 counts as 1, used in turn and repeated), then the byte stream.

#![no_main]

use std::collections::HashMap;

use amqp_codec::{Assembled, ContentAssembler, DecodeError, Frame, FrameDecoder, Inbound};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

/// A small frame-max and body limit, so that both are reached with small inputs.
const FRAME_MAX: u32 = 4096;
const MAX_BODY: u64 = 1000;

#[derive(Debug, PartialEq)]
enum Event {
    Assembled(u16, Assembled),
    Frame(Frame),
    Error(DecodeError),
}

#[derive(Default)]
struct Client {
    channels: HashMap<u16, ContentAssembler>,
    events: Vec<Event>,
    closed: bool,
}

impl Client {
    fn channel(&mut self, channel: u16) -> &mut ContentAssembler {
        self.channels
            .entry(channel)
            .or_insert_with(|| ContentAssembler::new(MAX_BODY))
    }

    fn outcome(&mut self, channel: u16, result: Result<Option<Assembled>, DecodeError>) {
        match result {
            Ok(Some(done)) => self.events.push(Event::Assembled(channel, done)),
            Ok(None) => {}
            Err(err) => self.error(err),
        }
    }

    fn error(&mut self, err: DecodeError) {
        if let DecodeError::BadContentHeader {
            channel,
            body_size,
            source,
        } = err
        {
            let result = self
                .channel(channel)
                .push_bad_header(channel, body_size, source);
            return self.outcome(channel, result);
        }
        self.events.push(Event::Error(err));
        self.closed = true;
    }

    /// Decodes frame by frame as far as `buf` goes.
    fn drain(&mut self, decoder: &mut FrameDecoder, buf: &mut BytesMut) {
        while !self.closed {
            let before = buf.len();
            match decoder.decode(buf) {
                Ok(Some(frame)) => self.frame(frame),
                Ok(None) => break,
                // Nothing consumed: the frame's end is unknown, the connection is closed.
                Err(err) if buf.len() == before => {
                    self.events.push(Event::Error(err));
                    self.closed = true;
                }
                Err(err) => self.error(err),
            }
        }
    }

    fn frame(&mut self, frame: Frame) {
        match frame {
            Frame::Heartbeat | Frame::ProtocolHeader(_) => self.events.push(Event::Frame(frame)),
            frame => {
                let channel = frame.channel();
                let result = self.channel(channel).push(frame);
                self.outcome(channel, result);
            }
        }
    }
}

fn by_frames(reads: &[&[u8]]) -> Vec<Event> {
    let mut client = Client::default();
    let mut decoder = FrameDecoder::with_frame_max(FRAME_MAX);
    let mut buf = BytesMut::new();
    for read in reads {
        buf.extend_from_slice(read);
        client.drain(&mut decoder, &mut buf);
    }
    client.events
}

fn by_batches(reads: &[&[u8]]) -> Vec<Event> {
    let mut client = Client::default();
    let mut decoder = FrameDecoder::with_frame_max(FRAME_MAX);
    let mut buf = BytesMut::new();
    for read in reads {
        buf.extend_from_slice(read);
        while !client.closed {
            let batch = match decoder.decode_batch(&mut buf) {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(err) => {
                    client.events.push(Event::Error(err));
                    client.closed = true;
                    break;
                }
            };
            for item in batch.iter().max_body_size(MAX_BODY) {
                if client.closed {
                    break;
                }
                match item {
                    Ok(Inbound::Delivery(delivery)) => {
                        let channel = delivery.channel();
                        // Cheap accessors must not panic on anything the iterator produced.
                        let properties = delivery.properties();
                        let _ = (properties.content_type(), properties.timestamp());
                        let _ = delivery.to_delivery().view() == delivery;
                        match client.channel(channel).expect_idle(channel) {
                            Ok(()) => {
                                let content = Assembled::Content(delivery.to_content());
                                client.events.push(Event::Assembled(channel, content));
                            }
                            Err(err) => client.error(err),
                        }
                    }
                    Ok(Inbound::Frame(frame)) => client.frame(frame),
                    Err(err) => client.error(err),
                }
            }
        }
    }
    // The stream ends: what a batch left out (a delivery awaiting its body) is read frame by
    // frame, as it would have been with the rest of the stream.
    client.drain(&mut decoder, &mut buf);
    client.events
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 16).min(rest.len());
    let (sizes, stream) = rest.split_at(n);

    let mut reads = Vec::new();
    let mut sizes = sizes.iter().map(|&s| usize::from(s).max(1)).cycle();
    let mut pos = 0;
    while pos < stream.len() {
        let len = sizes.next().unwrap_or(stream.len()).min(stream.len() - pos);
        reads.push(&stream[pos..pos + len]);
        pos += len;
    }
    // A wrong protocol header is refused as soon as its first bad byte is buffered, with the
    // bytes seen so far: both paths see the same bytes, so even those match.
    assert_eq!(
        by_frames(&reads),
        by_batches(&reads),
        "batches differ from frames"
    );
});
