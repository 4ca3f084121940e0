//! One client connection: reads requests and writes replies as frames (`otp_proto::frame`), each
//! read and write bounded by a timeout so a stuck or malicious client only holds its own task.
//! Frames go through buffers kept for the connection: one `read` per frame (header and body
//! together), one `write` per reply, no allocation per frame (issue 16, BENCHMARKS.md).

use otp_proto::frame::{FrameError, FrameReader, FrameWriter};
use otp_proto::{Reply, Request};
use std::os::fd::AsRawFd;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// How long a reply may take to be accepted by the client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Connection {
    stream: UnixStream,
    reader: FrameReader,
    writer: FrameWriter,
}

impl Connection {
    pub fn new(stream: UnixStream) -> Connection {
        Connection {
            stream,
            reader: FrameReader::new(),
            writer: FrameWriter::new(),
        }
    }

    /// The next request, waiting at most `timeout`.
    pub async fn read(&mut self, timeout: Duration) -> Result<Request, FrameError> {
        tokio::time::timeout(timeout, self.read_frame())
            .await
            .unwrap_or(Err(FrameError::TimedOut))
    }

    /// Send `reply`, whose texts are wiped once encoded (the frame buffer is wiped once sent).
    pub async fn write(&mut self, mut reply: Reply) -> Result<(), FrameError> {
        let result = match self.writer.encode(&reply) {
            Ok(bytes) => {
                reply.wipe();
                tokio::time::timeout(WRITE_TIMEOUT, self.stream.write_all(bytes))
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
                    .map_err(FrameError::from)
            }
            Err(e) => {
                reply.wipe();
                Err(e)
            }
        };
        self.writer.wipe();
        result
    }

    /// The first request if the whole of it has already arrived, without waiting; `None` if
    /// not (nothing or part of a frame sent, or the peer gone). For a connection about to be
    /// dropped as idle: one whose request is already here has spoken, even if otpd has not
    /// read it yet (a burst of connections accepted faster than their tasks run).
    pub fn request_already_sent(&mut self) -> Option<Result<Request, FrameError>> {
        loop {
            match self.reader.take() {
                Ok(Some(request)) => return Some(Ok(request)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            let spare = match self.reader.spare() {
                Ok(spare) => spare,
                Err(e) => return Some(Err(e)),
            };
            // From the socket itself: the runtime may not have seen these bytes arrive yet.
            // SAFETY: a non-blocking recv into `spare`, a live buffer of `spare.len()` bytes,
            // on the stream's own descriptor.
            let n = unsafe {
                libc::recv(
                    self.stream.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    spare.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            match usize::try_from(n) {
                Ok(n) if n > 0 => self.reader.filled(n),
                _ => return None,
            }
        }
    }

    async fn read_frame(&mut self) -> Result<Request, FrameError> {
        loop {
            if let Some(request) = self.reader.take()? {
                return Ok(request);
            }
            match self.stream.read(self.reader.spare()?).await {
                Ok(0) => return Err(FrameError::Closed),
                Ok(n) => self.reader.filled(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}
