//! Framing: a 4-byte big-endian length, then a 2-byte big-endian protocol version, then a bincode
//! body. The codec lives only here so that it can be swapped in one place.
//!
//! The version leads every frame, so a peer of another version is told so instead of failing to
//! decode. Buffers that may hold a code are zeroized.

use crate::{Request, PROTOCOL_VERSION};
use serde::{de::DeserializeOwned, Serialize};
use std::io::{self, Read, Write};
use zeroize::{Zeroize, Zeroizing};

/// Largest body accepted, either way. Generous for a QR URI; small enough that a hostile peer
/// cannot make either side allocate much.
pub const MAX_FRAME: usize = 64 * 1024;

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

const VERSION_LEN: usize = 2;

type Config = bincode::config::Configuration<
    bincode::config::BigEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_FRAME>,
>;

fn config() -> Config {
    bincode::config::standard()
        .with_big_endian()
        .with_limit::<MAX_FRAME>()
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("frame of {0} bytes is too short to hold a version")]
    TooShort(usize),
    #[error("peer speaks protocol version {0}, this side speaks {PROTOCOL_VERSION}")]
    Version(u16),
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A well-formed message where the dialogue allows another: a protocol violation, not a
    /// codec failure.
    #[error("expected {expected}, got {got}")]
    Unexpected { expected: Turn, got: RequestKind },
    #[error("connection closed")]
    Closed,
    #[error("timed out")]
    TimedOut,
    #[error("i/o error: {0}")]
    Io(io::Error),
}

/// What a dialogue step waits for from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// A new connection's first request: a login or a command.
    Opening,
    /// The answer to the prompt just sent.
    Answer,
}

impl std::fmt::Display for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Turn::Opening => "a login or a command",
            Turn::Answer => "an answer to the prompt",
        })
    }
}

/// Which request a peer sent, without its contents (an answer holds a code): enough to name a
/// protocol violation in a refusal or the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Begin,
    Answer,
    Command,
}

impl RequestKind {
    pub fn of(request: &Request) -> RequestKind {
        match request {
            Request::Begin(_) => RequestKind::Begin,
            Request::Answer(_) => RequestKind::Answer,
            Request::Command(_) => RequestKind::Command,
        }
    }
}

impl std::fmt::Display for RequestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RequestKind::Begin => "a login",
            RequestKind::Answer => "an answer",
            RequestKind::Command => "a command",
        })
    }
}

impl FrameError {
    /// `got` arrived where the dialogue waited for `expected`.
    pub fn unexpected(expected: Turn, got: &Request) -> FrameError {
        FrameError::Unexpected {
            expected,
            got: RequestKind::of(got),
        }
    }
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => FrameError::Closed,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FrameError::TimedOut,
            _ => FrameError::Io(e),
        }
    }
}

/// A whole frame, header included, ready to write.
pub fn encode<T: Serialize>(msg: &T) -> Result<Zeroizing<Vec<u8>>, FrameError> {
    let body = Zeroizing::new(
        bincode::serde::encode_to_vec(msg, config())
            .map_err(|e| FrameError::Malformed(e.to_string()))?,
    );
    let len = VERSION_LEN + body.len();
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(HEADER_LEN + len));
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The body length announced by a header, checked against the cap before anything is allocated.
pub fn body_len(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if len < VERSION_LEN {
        return Err(FrameError::TooShort(len));
    }
    Ok(len)
}

/// Decode a body (everything after the header). Rejects another version and trailing bytes.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (version, rest) = match body {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
        _ => return Err(FrameError::TooShort(body.len())),
    };
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version(version));
    }
    let (msg, used) = bincode::serde::decode_from_slice(rest, config())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if used != rest.len() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes",
            rest.len() - used
        )));
    }
    Ok(msg)
}

/// Blocking write of one message.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(msg)?)?;
    w.flush()?;
    Ok(())
}

/// Blocking read of one message.
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> Result<T, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    r.read_exact(&mut header)?;
    let mut body = Zeroizing::new(vec![0u8; body_len(header)?]);
    r.read_exact(&mut body)?;
    decode(&body)
}

/// Room a connection's buffers start with: every login frame fits (the largest, a Begin with a
/// long rhost, is a few hundred bytes), so a login allocates them once and never grows them.
/// Small on purpose: what a buffer holds is wiped, and its allocation is zeroed.
const BUF_START: usize = 1024;

/// The buffer a connection reads frames into, kept for the connection's life: one `read` takes
/// a frame's header and body together (and whatever follows), where two `read_exact`s and an
/// allocation per frame cost two syscalls and a `malloc`. Each frame's bytes are wiped once
/// decoded (an answer holds a code), and what is left undecoded when dropped: everything
/// outside `start..end` is always zero, so a drop wipes only that, not the whole buffer.
pub struct FrameReader {
    buf: Vec<u8>,
    /// Undecoded bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Drop for FrameReader {
    fn drop(&mut self) {
        if let Some(held) = self.buf.get_mut(self.start..self.end) {
            held.zeroize();
        }
    }
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader::new()
    }
}

impl FrameReader {
    pub fn new() -> FrameReader {
        FrameReader {
            buf: vec![0; BUF_START],
            start: 0,
            end: 0,
        }
    }

    /// The next message if a whole frame is buffered; `None` if more bytes are needed. A header
    /// over the cap is refused here, before anything is allocated for its body.
    pub fn take<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        let Some(len) = self.announced()? else {
            return Ok(None);
        };
        let frame_end = self.start + HEADER_LEN + len;
        if frame_end > self.end {
            return Ok(None);
        }
        let decoded = decode(&self.buf[self.start + HEADER_LEN..frame_end]);
        self.buf[self.start..frame_end].zeroize();
        self.start = frame_end;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        decoded.map(Some)
    }

    /// Free space to read into, with room for at least the rest of the frame being read.
    pub fn spare(&mut self) -> Result<&mut [u8], FrameError> {
        let need = HEADER_LEN + self.announced()?.unwrap_or(0);
        if self.start + need > self.buf.len() {
            let held = self.end - self.start;
            if need > self.buf.len() {
                // A fresh buffer, not a `Vec` growing in place: a reallocation would leave the
                // old bytes in freed memory unwiped.
                let mut bigger = vec![0; need];
                bigger[..held].copy_from_slice(&self.buf[self.start..self.end]);
                self.buf[self.start..self.end].zeroize();
                self.buf = bigger;
            } else {
                self.buf.copy_within(self.start..self.end, 0);
                let old = held.max(self.start)..self.end;
                self.buf[old].zeroize();
            }
            (self.start, self.end) = (0, held);
        }
        Ok(&mut self.buf[self.end..])
    }

    /// `n` bytes were read into what `spare` returned.
    pub fn filled(&mut self, n: usize) {
        self.end = self.end.saturating_add(n).min(self.buf.len());
    }

    /// Whether `take` has something to say without another read: a whole frame, or a header
    /// it will refuse.
    pub fn holds_a_frame(&self) -> bool {
        match self.announced() {
            Ok(Some(len)) => self.start + HEADER_LEN + len <= self.end,
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// The body length of the buffered header, if a whole header is buffered.
    fn announced(&self) -> Result<Option<usize>, FrameError> {
        match self.buf.get(self.start..self.start + HEADER_LEN) {
            Some(h) if self.end - self.start >= HEADER_LEN => {
                body_len([h[0], h[1], h[2], h[3]]).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Blocking read of the next message: usually one `read(2)`.
    pub fn read<T: DeserializeOwned>(&mut self, r: &mut impl Read) -> Result<T, FrameError> {
        loop {
            if let Some(msg) = self.take()? {
                return Ok(msg);
            }
            let n = match r.read(self.spare()?) {
                Ok(0) => return Err(FrameError::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            self.filled(n);
        }
    }
}

/// The buffer a connection encodes frames into, kept for the connection's life: a frame is
/// encoded in place behind its header and goes out in one `write`, with no allocation. Wiped
/// after each frame is written (a prompt may carry a key being enrolled).
pub struct FrameWriter {
    buf: Vec<u8>,
    /// How much of `buf` the last frame used, to wipe just that: the rest is always zero.
    dirty: usize,
}

impl Drop for FrameWriter {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl Default for FrameWriter {
    fn default() -> Self {
        FrameWriter::new()
    }
}

impl FrameWriter {
    pub fn new() -> FrameWriter {
        FrameWriter {
            buf: vec![0; BUF_START],
            dirty: 0,
        }
    }

    /// Encode `msg` as a whole frame, header included, ready to write; call `wipe` once written.
    pub fn encode<T: Serialize>(&mut self, msg: &T) -> Result<&[u8], FrameError> {
        let start = HEADER_LEN + VERSION_LEN;
        self.wipe();
        self.dirty = self.buf.len();
        let used = loop {
            match bincode::serde::encode_into_slice(msg, &mut self.buf[start..], config()) {
                Ok(used) => break used,
                Err(bincode::error::EncodeError::UnexpectedEnd)
                    if self.buf.len() < HEADER_LEN + MAX_FRAME =>
                {
                    // A fresh buffer, never a reallocation that leaves bytes unwiped.
                    let bigger = (self.buf.len() * 4).min(HEADER_LEN + MAX_FRAME + 1);
                    self.wipe();
                    self.buf = vec![0; bigger];
                    self.dirty = self.buf.len();
                }
                Err(bincode::error::EncodeError::UnexpectedEnd) => {
                    return Err(FrameError::TooLarge(MAX_FRAME + 1))
                }
                Err(e) => return Err(FrameError::Malformed(e.to_string())),
            }
        };
        let len = VERSION_LEN + used;
        if len > MAX_FRAME {
            self.wipe();
            return Err(FrameError::TooLarge(len));
        }
        self.dirty = HEADER_LEN + len;
        self.buf[..HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
        self.buf[HEADER_LEN..start].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        Ok(&self.buf[..HEADER_LEN + len])
    }

    /// Wipe what the last frame left in the buffer.
    pub fn wipe(&mut self) {
        let dirty = self.dirty.min(self.buf.len());
        self.buf[..dirty].zeroize();
        self.dirty = 0;
    }

    /// Blocking write of one message, in one `write(2)`.
    pub fn write<T: Serialize>(&mut self, w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
        let result = match self.encode(msg) {
            Ok(bytes) => w.write_all(bytes).map_err(FrameError::from),
            Err(e) => Err(e),
        };
        self.wipe();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Login, Reply, Request, Secret};
    use proptest::prelude::*;

    fn begin() -> Request {
        Request::Begin(Login {
            user: "alice".into(),
            service: "sshd".into(),
            rhost: Some("192.0.2.1".into()),
            tty: None,
            nullok: false,
            forward_pass: None,
        })
    }

    #[test]
    fn a_request_survives_the_round_trip() {
        let bytes = encode(&begin()).unwrap();
        let back: Request = read_frame(&mut &bytes[..]).unwrap();
        assert_eq!(back, begin());
    }

    #[test]
    fn an_answer_round_trips_and_keeps_its_text() {
        let bytes = encode(&Request::Answer(Secret::new("123456"))).unwrap();
        let back: Request = read_frame(&mut &bytes[..]).unwrap();
        assert_eq!(back, Request::Answer(Secret::new("123456")));
    }

    #[test]
    fn another_protocol_version_is_named_not_misread() {
        let mut bytes = encode(&begin()).unwrap().to_vec();
        bytes[HEADER_LEN + 1] = 99;
        let err = read_frame::<Request>(&mut &bytes[..]).unwrap_err();
        assert!(matches!(err, FrameError::Version(99)), "{err}");
    }

    #[test]
    fn an_oversized_header_is_refused_before_allocating() {
        let header = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(body_len(header), Err(FrameError::TooLarge(_))));
        assert!(matches!(
            body_len(u32::MAX.to_be_bytes()),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn a_truncated_frame_reads_as_closed() {
        let bytes = encode(&begin()).unwrap();
        let cut = &bytes[..bytes.len() - 3];
        assert!(matches!(
            read_frame::<Request>(&mut &cut[..]),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let bytes = encode(&begin()).unwrap();
        let mut body = bytes[HEADER_LEN..].to_vec();
        body.push(0);
        assert!(matches!(
            decode::<Request>(&body),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn a_protocol_violation_names_what_came_and_what_was_due_never_the_code() {
        let err = FrameError::unexpected(Turn::Opening, &Request::Answer(Secret::new("123456")));
        assert!(matches!(
            err,
            FrameError::Unexpected {
                expected: Turn::Opening,
                got: RequestKind::Answer
            }
        ));
        let text = err.to_string();
        assert_eq!(text, "expected a login or a command, got an answer");
        let err = FrameError::unexpected(Turn::Answer, &begin());
        assert_eq!(
            err.to_string(),
            "expected an answer to the prompt, got a login"
        );
    }

    #[test]
    fn an_oversized_message_is_refused_on_encode() {
        let huge = Reply::Info {
            text: "x".repeat(MAX_FRAME),
        };
        assert!(matches!(encode(&huge), Err(FrameError::TooLarge(_))));
    }

    /// A stream that hands out at most `chunk` bytes per `read` and counts the calls.
    struct Trickle<'a> {
        bytes: &'a [u8],
        chunk: usize,
        reads: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            let n = self.chunk.min(out.len()).min(self.bytes.len());
            out[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    fn two_frames() -> Vec<u8> {
        let mut bytes = encode(&begin()).unwrap().to_vec();
        bytes.extend_from_slice(&encode(&Request::Answer(Secret::new("123456"))).unwrap());
        bytes
    }

    #[test]
    fn the_reader_takes_a_frame_in_one_read_and_keeps_what_follows() {
        let bytes = two_frames();
        let mut stream = Trickle {
            bytes: &bytes,
            chunk: usize::MAX,
            reads: 0,
        };
        let mut reader = FrameReader::new();
        assert_eq!(reader.read::<Request>(&mut stream).unwrap(), begin());
        assert_eq!(stream.reads, 1);
        // The second frame came in the same read: no syscall for it.
        assert_eq!(
            reader.read::<Request>(&mut stream).unwrap(),
            Request::Answer(Secret::new("123456"))
        );
        assert_eq!(stream.reads, 1);
        assert!(matches!(
            reader.read::<Request>(&mut stream),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn the_reader_reassembles_frames_that_come_a_byte_at_a_time() {
        let bytes = two_frames();
        let mut stream = Trickle {
            bytes: &bytes,
            chunk: 1,
            reads: 0,
        };
        let mut reader = FrameReader::new();
        assert_eq!(reader.read::<Request>(&mut stream).unwrap(), begin());
        assert_eq!(
            reader.read::<Request>(&mut stream).unwrap(),
            Request::Answer(Secret::new("123456"))
        );
        assert_eq!(stream.reads, bytes.len());
    }

    #[test]
    fn the_reader_grows_for_a_large_frame_and_wipes_what_it_decoded() {
        let big = Reply::Info {
            text: "x".repeat(3 * BUF_START),
        };
        let mut bytes = encode(&big).unwrap().to_vec();
        bytes.extend_from_slice(&encode(&Request::Answer(Secret::new("987654"))).unwrap());
        let mut stream = Trickle {
            bytes: &bytes[..],
            chunk: 1000,
            reads: 0,
        };
        let mut reader = FrameReader::new();
        assert_eq!(reader.read::<Reply>(&mut stream).unwrap(), big);
        assert_eq!(
            reader.read::<Request>(&mut stream).unwrap(),
            Request::Answer(Secret::new("987654"))
        );
        assert!(
            !reader.buf.windows(6).any(|w| w == b"987654"),
            "a decoded code is left in the buffer"
        );
        assert!(reader.buf.iter().all(|b| *b == 0));
    }

    #[test]
    fn the_reader_refuses_an_oversized_header_without_growing() {
        let mut bytes = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 64]);
        let mut reader = FrameReader::new();
        let err = reader.read::<Request>(&mut &bytes[..]).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(_)), "{err}");
        assert_eq!(reader.buf.len(), BUF_START);
    }

    #[test]
    fn the_writer_writes_what_encode_does_and_wipes_after() {
        let mut writer = FrameWriter::new();
        let mut out = Vec::new();
        let answer = Request::Answer(Secret::new("123456"));
        writer.write(&mut out, &answer).unwrap();
        assert_eq!(out, encode(&answer).unwrap().to_vec());
        assert!(writer.buf.iter().all(|b| *b == 0));
        let big = Reply::Info {
            text: "y".repeat(2 * BUF_START),
        };
        let mut out = Vec::new();
        writer.write(&mut out, &big).unwrap();
        assert_eq!(out, encode(&big).unwrap().to_vec());
        let huge = Reply::Info {
            text: "x".repeat(MAX_FRAME),
        };
        assert!(matches!(
            writer.write(&mut Vec::new(), &huge),
            Err(FrameError::TooLarge(_))
        ));
        assert!(writer.buf.iter().all(|b| *b == 0));
    }

    proptest! {
        #[test]
        fn random_bodies_never_panic_the_decoder(body in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = decode::<Request>(&body);
            let _ = decode::<Reply>(&body);
        }

        #[test]
        fn random_streams_never_panic_the_reader(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = read_frame::<Request>(&mut &bytes[..]);
        }

        #[test]
        fn version_prefixed_garbage_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut body = PROTOCOL_VERSION.to_be_bytes().to_vec();
            body.extend(tail);
            let _ = decode::<Request>(&body);
            let _ = decode::<Reply>(&body);
        }

        #[test]
        fn random_streams_never_panic_the_buffered_reader(bytes in proptest::collection::vec(any::<u8>(), 0..4096), chunk in 1usize..600) {
            let mut stream = Trickle { bytes: &bytes, chunk, reads: 0 };
            let mut reader = FrameReader::new();
            for _ in 0..8 {
                if reader.read::<Request>(&mut stream).is_err() {
                    break;
                }
            }
        }

        #[test]
        fn every_truncation_of_a_valid_frame_is_an_error(cut in 0usize..64) {
            let bytes = encode(&begin()).unwrap();
            let cut = cut.min(bytes.len() - 1);
            prop_assert!(read_frame::<Request>(&mut &bytes[..cut]).is_err());
        }
    }
}
