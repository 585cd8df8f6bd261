//! The wire to the engine: one HTTP/2 connection over the process's stdin
//! (engine → frontend) and stdout (frontend → engine).
//!
//! BuildKit runs a gateway frontend as a container and serves `LLBBridge` on
//! its stdio (`frontend/gateway/gateway.go`, `serve`: an `http2.Server`
//! `ServeConn` on the pipe pair); the frontend is the gRPC client and dials
//! nothing (`frontend/gateway/grpcclient/client.go`, `stdioConn`). tonic dials
//! through a connector, so [`StdioConnector`] hands out that one stream the
//! first time it is asked and refuses afterwards: the pipes cannot be
//! reopened, and a second connection would corrupt the first one's frames.

use std::future::{Ready, ready};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use kiln_proto::gateway::llb_bridge_client::LlbBridgeClient;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::{Channel, Endpoint, Uri};
use tower_service::Service;

/// The largest message the frontend accepts from the engine (a recipe read
/// back with `ReadFile`, a base image config). tonic's default is 4 MiB.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A reader and a writer joined into one byte stream.
#[derive(Debug)]
pub struct Duplex<R, W> {
    reader: R,
    writer: W,
}

impl<R, W> Duplex<R, W> {
    pub fn new(reader: R, writer: W) -> Self {
        Duplex { reader, writer }
    }
}

impl<R: AsyncRead + Unpin, W: Unpin> AsyncRead for Duplex<R, W> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().reader).poll_read(cx, buf)
    }
}

impl<R: Unpin, W: AsyncWrite + Unpin> AsyncWrite for Duplex<R, W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().writer).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().writer).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().writer).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().writer).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.writer.is_write_vectored()
    }
}

/// A tonic connector that yields one pre-opened stream, once.
#[derive(Debug)]
pub struct StdioConnector<R, W> {
    stream: Option<Duplex<R, W>>,
}

impl<R, W> StdioConnector<R, W> {
    pub fn new(reader: R, writer: W) -> Self {
        StdioConnector {
            stream: Some(Duplex::new(reader, writer)),
        }
    }
}

impl<R, W> Service<Uri> for StdioConnector<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    type Response = TokioIo<Duplex<R, W>>;
    type Error = io::Error;
    type Future = Ready<io::Result<Self::Response>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        ready(match self.stream.take() {
            Some(stream) => Ok(TokioIo::new(stream)),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection to the engine over stdin/stdout was lost and cannot be reopened",
            )),
        })
    }
}

/// An `LLBBridge` client speaking HTTP/2 over `reader`/`writer`.
///
/// The authority is a placeholder (the Go client dials "localhost" the same
/// way); nothing is resolved or dialled.
pub async fn connect<R, W>(
    reader: R,
    writer: W,
) -> Result<LlbBridgeClient<Channel>, tonic::transport::Error>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(StdioConnector::new(reader, writer))
        .await?;
    Ok(LlbBridgeClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES))
}

/// The client over this process's own stdin and stdout.
pub async fn connect_stdio() -> Result<LlbBridgeClient<Channel>, tonic::transport::Error> {
    connect(tokio::io::stdin(), tokio::io::stdout()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn duplex_reads_from_one_side_and_writes_to_the_other() {
        let (mut engine_out, frontend_in) = tokio::io::duplex(64);
        let (frontend_out, mut engine_in) = tokio::io::duplex(64);
        let mut stream = Duplex::new(frontend_in, frontend_out);

        engine_out.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"ping");

        stream.write_all(b"pong").await.expect("write");
        stream.flush().await.expect("flush");
        engine_in.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"pong");
    }

    #[tokio::test]
    async fn connector_hands_out_its_stream_once() {
        let (a, _keep_a) = tokio::io::duplex(8);
        let (b, _keep_b) = tokio::io::duplex(8);
        let mut connector = StdioConnector::new(a, b);
        let uri = Uri::from_static("http://localhost");
        assert!(connector.call(uri.clone()).await.is_ok());
        let again = connector.call(uri).await.expect_err("second connect fails");
        assert_eq!(again.kind(), io::ErrorKind::NotConnected);
    }
}
