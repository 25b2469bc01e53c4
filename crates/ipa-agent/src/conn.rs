//! Connection limits for `ipa agent`: at most `max` connections at once (further ones wait in the kernel's accept
//! queue), and a connection that makes no progress in either direction for `idle` is closed — partial headers, a
//! stalled body and idle keep-alive connections alike.
//!
//! `idle` must exceed the longest request: while a handler runs (an LLM call), hyper keeps reading the connection
//! to notice a client that went away, and no byte moves in either direction.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// A `TcpListener` with a connection cap and an idle timeout per connection.
#[derive(Debug)]
pub struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle: Duration,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, max_connections: usize, idle: Duration) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
            idle,
        }
    }
}

impl Listener for LimitedListener {
    type Io = LimitedIo;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // At the cap, stop accepting until a connection closes: the rest wait in the backlog.
        // The semaphore is never closed; without a permit a connection would merely be uncounted.
        let permit = self.permits.clone().acquire_owned().await.ok();
        let (stream, addr) = Listener::accept(&mut self.inner).await;
        (LimitedIo::new(stream, permit, self.idle), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that holds its slot until dropped and fails with `TimedOut` after `idle` without progress.
#[derive(Debug)]
pub struct LimitedIo {
    stream: TcpStream,
    _permit: Option<OwnedSemaphorePermit>,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl LimitedIo {
    fn new(stream: TcpStream, permit: Option<OwnedSemaphorePermit>, idle: Duration) -> Self {
        Self {
            stream,
            _permit: permit,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn progress(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    /// After the inner IO said `Pending`: `TimedOut` once the deadline has passed (the timer's waker is registered
    /// otherwise).
    fn check_idle<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for LimitedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.progress();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.check_idle(cx),
        }
    }
}

impl AsyncWrite for LimitedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.progress();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.check_idle(cx),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_flush(cx) {
            Poll::Pending => this.check_idle(cx),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn serve(max: usize, idle: Duration) -> io::Result<std::net::SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move {
            let _ = axum::serve(LimitedListener::new(listener, max, idle), app).await;
        });
        Ok(addr)
    }

    async fn get(addr: std::net::SocketAddr) -> io::Result<String> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn stalled_connections_are_closed_and_the_server_still_serves() -> io::Result<()> {
        let addr = serve(64, Duration::from_millis(300)).await?;
        // Partial headers, and a connection that never sends anything.
        let mut partial = TcpStream::connect(addr).await?;
        partial.write_all(b"GET / HTTP/1.1\r\nhost:").await?;
        let mut silent = TcpStream::connect(addr).await?;
        assert!(get(addr).await?.contains("200 OK"));
        for s in [&mut partial, &mut silent] {
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .map_err(|_| io::Error::other("not closed within 5 s"))?;
            assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        }
        assert!(get(addr).await?.contains("200 OK"));
        Ok(())
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_until_one_closes() -> io::Result<()> {
        let addr = serve(2, Duration::from_millis(400)).await?;
        let _a = TcpStream::connect(addr).await?;
        let _b = TcpStream::connect(addr).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The third is accepted by the kernel but not served while two are open...
        let third = tokio::spawn(get(addr));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!third.is_finished());
        // ...and is served once the idle ones are closed.
        let out = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .map_err(|_| io::Error::other("never served"))?
            .map_err(io::Error::other)??;
        assert!(out.contains("200 OK"));
        Ok(())
    }
}
