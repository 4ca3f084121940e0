//! One client connection: reads requests and writes replies as frames (`otp_proto::frame`), each
//! read and write bounded by a timeout so a stuck or malicious client only holds its own task.
//! Frames go through buffers kept for the connection: one `read` per frame (header and body
//! together), one `write` per reply, no allocation per frame (issue 16, BENCHMARKS.md).

use otp_proto::frame::{FrameError, FrameReader, FrameWriter};
use otp_proto::{Reply, Request};
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
