//! One client connection: reads requests and writes replies as frames (`otp_proto::frame`), each
//! read and write bounded by a timeout so a stuck or malicious client only holds its own task.

use otp_proto::frame::{self, FrameError, HEADER_LEN};
use otp_proto::{Reply, Request};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use zeroize::Zeroizing;

/// How long a reply may take to be accepted by the client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Connection {
    stream: UnixStream,
}

impl Connection {
    pub fn new(stream: UnixStream) -> Connection {
        Connection { stream }
    }

    /// The next request, waiting at most `timeout`.
    pub async fn read(&mut self, timeout: Duration) -> Result<Request, FrameError> {
        tokio::time::timeout(timeout, self.read_frame())
            .await
            .unwrap_or(Err(FrameError::TimedOut))
    }

    /// Send `reply`, whose texts are wiped once encoded (the frame buffer wipes itself).
    pub async fn write(&mut self, mut reply: Reply) -> Result<(), FrameError> {
        let encoded = frame::encode(&reply);
        reply.wipe();
        let bytes = encoded?;
        tokio::time::timeout(WRITE_TIMEOUT, async {
            self.stream.write_all(&bytes).await?;
            self.stream.flush().await
        })
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
        .map_err(FrameError::from)
    }

    async fn read_frame(&mut self) -> Result<Request, FrameError> {
        let mut header = [0u8; HEADER_LEN];
        self.stream.read_exact(&mut header).await?;
        let mut body = Zeroizing::new(vec![0u8; frame::body_len(header)?]);
        self.stream.read_exact(&mut body).await?;
        frame::decode(&body)
    }
}
