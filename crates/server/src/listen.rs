//! The accept loop: TCP (or TLS) connections into hyper, with the guards that must act before
//! any request is read — per-IP connection counting, the TLS handshake and request-header
//! timeouts (slowloris) — and graceful shutdown.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::Router;
use dashmap::DashMap;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

/// What the handlers learn about the connection a request came on.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The address the peer connected to (this machine's side).
    pub local: Option<SocketAddr>,
    /// This connection is over the per-IP cap: refuse it with a reason.
    pub over_cap: bool,
    /// Came over TLS.
    pub tls: bool,
}

/// Open connections per IP address.
#[derive(Default, Debug)]
pub struct IpCounts {
    map: DashMap<IpAddr, usize>,
}

/// One counted connection; uncounted when dropped (it lives inside the connection's IO, so
/// it lasts as long as the HTTP connection or the WebSocket it was upgraded to).
#[derive(Debug)]
pub struct IpSlot {
    counts: Arc<IpCounts>,
    ip: IpAddr,
}

impl IpCounts {
    /// Count a new connection from `ip`; returns the slot and the count including it.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> (IpSlot, usize) {
        let mut n = self.map.entry(ip).or_insert(0);
        *n += 1;
        let count = *n;
        drop(n);
        (
            IpSlot {
                counts: self.clone(),
                ip,
            },
            count,
        )
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.counts.map.remove_if_mut(&self.ip, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

/// A plain or TLS connection, carrying its per-IP slot.
pub struct Io {
    stream: Stream,
    _slot: IpSlot,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Connections the kernel queues for us before they are accepted (capped by the system's
/// `net.core.somaxconn`). Tokio's default of 1024 overflows when thousands of clients of a
/// dead node reconnect at once; the overflow waits for TCP's SYN retransmits (1 s, 3 s, 7 s …).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Listen on `addr` (`host:port`) with [`LISTEN_BACKLOG`].
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = match a {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a) {
            Ok(()) => return socket.listen(LISTEN_BACKLOG),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{addr}: no address"),
        )
    }))
}

/// How the accept loop treats new connections (a reload changes it in place).
pub struct Accept {
    /// TLS, when configured (a reload may swap the certificate).
    pub tls: Option<ArcSwap<tokio_rustls::TlsAcceptor>>,
    /// `connections_per_ip` (0: no cap).
    pub per_ip_cap: AtomicUsize,
    /// TLS handshake and request headers must be done within this many milliseconds.
    pub handshake_timeout_ms: AtomicU64,
    /// Open connections per IP.
    pub counts: Arc<IpCounts>,
}

impl Accept {
    /// The rules of `limits`, with `tls` when given.
    pub fn new(
        limits: &opensig_protocol::Limits,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Accept {
        let accept = Accept {
            tls: tls.map(ArcSwap::from_pointee),
            per_ip_cap: AtomicUsize::new(0),
            handshake_timeout_ms: AtomicU64::new(0),
            counts: Arc::new(IpCounts::default()),
        };
        accept.set_limits(limits);
        accept
    }

    /// Apply `limits` to connections accepted from now on.
    pub fn set_limits(&self, limits: &opensig_protocol::Limits) {
        self.per_ip_cap
            .store(limits.connections_per_ip, Ordering::Relaxed);
        self.handshake_timeout_ms.store(
            limits.handshake_timeout_secs.max(1).saturating_mul(1000),
            Ordering::Relaxed,
        );
    }

    fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms.load(Ordering::Relaxed))
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Accept until `stop` turns true; each connection is served by its own task and, on stop,
/// asked to finish gracefully (upgraded WebSockets are closed by the server's own shutdown).
pub async fn run(
    listener: TcpListener,
    app: Router,
    accept: Arc<Accept>,
    stop: watch::Receiver<bool>,
) {
    let mut stop_accepting = stop.clone();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // out of file descriptors and the like: let others finish, then go on
                    debug!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop_accepting) => return,
        };
        let (slot, count) = accept.counts.enter(peer.ip());
        let cap = accept.per_ip_cap.load(Ordering::Relaxed);
        // far over the cap: not even worth an HTTP answer
        if cap > 0 && count > cap.saturating_mul(2).saturating_add(16) {
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().ok();
        let (app, accept, stop) = (app.clone(), accept.clone(), stop.clone());
        tokio::spawn(async move {
            let stream = match &accept.tls {
                None => Stream::Plain(tcp),
                Some(tls) => {
                    let tls = tls.load_full();
                    match tokio::time::timeout(accept.handshake_timeout(), tls.accept(tcp)).await {
                        Ok(Ok(s)) => Stream::Tls(Box::new(s)),
                        Ok(Err(e)) => {
                            debug!(%peer, "TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let info = ConnInfo {
                peer,
                local,
                over_cap: cap > 0 && count > cap,
                tls: matches!(stream, Stream::Tls(_)),
            };
            let io = Io {
                stream,
                _slot: slot,
            };
            let service =
                tower::ServiceExt::map_request(app, move |req: http::Request<Incoming>| {
                    let mut req = req.map(Body::new);
                    req.extensions_mut().insert(info.clone());
                    req
                });
            // HTTP/1.1 only: WebSocket upgrades need nothing else, and it reads the request
            // head at once (no protocol sniffing that could wait without a deadline)
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(accept.handshake_timeout())
                .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
                .with_upgrades();
            tokio::pin!(conn);
            let mut stop = stop;
            let stopping = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stopping => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}
