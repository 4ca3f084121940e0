//! Framing: a 4-byte big-endian length, then a 2-byte big-endian protocol version, then a bincode
//! body. The codec lives only here so that it can be swapped in one place.
//!
//! The version leads every frame, so a peer of another version is told so instead of failing to
//! decode. Buffers that may hold a code are zeroized.

use crate::{Request, PROTOCOL_VERSION};
use serde::{de::DeserializeOwned, Serialize};
use std::io::{self, Read, Write};
use zeroize::Zeroizing;

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
        fn every_truncation_of_a_valid_frame_is_an_error(cut in 0usize..64) {
            let bytes = encode(&begin()).unwrap();
            let cut = cut.min(bytes.len() - 1);
            prop_assert!(read_frame::<Request>(&mut &bytes[..cut]).is_err());
        }
    }
}
