//! The Yamux multiplexer of TCP connections, configured for packet transfer.
//!
//! Owns the muxer upgrade that replaces `libp2p::yamux::Config` on TCP: the
//! same `/yamux/1.0.0` protocol and wire (peers with the stock muxer
//! interoperate), but Yamux data frames of up to [`SPLIT_SEND_BYTES`]
//! instead of 16 KiB. Yamux flushes the socket after every frame and Noise
//! seals every flush as its own frame, so with 16 KiB frames a 4 MiB packet
//! costs 256 Noise frames, AEAD calls and socket writes; frames sized to one
//! full Noise frame cut that by four. libp2p 0.57's `yamux::Config` does not
//! expose the frame size, hence this thin adapter (after `libp2p-yamux`
//! 0.48, MIT): stream receive windows still start at 256 KiB and auto-tune
//! per the Yamux crate, within [`MAX_CONNECTION_WINDOW`].

use std::collections::VecDeque;
use std::iter;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures::{AsyncRead, AsyncWrite, future, ready};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};

/// Largest Yamux data frame sent: one Noise frame holds 65,535 bytes, 16 of
/// them its tag, and a Yamux header is 12 bytes.
pub const SPLIT_SEND_BYTES: usize = 65_535 - 16 - 12;

/// Upper bound of all stream receive windows of one connection together
/// (Yamux's default is 1 GiB; 256 streams × 256 KiB at least are needed).
pub const MAX_CONNECTION_WINDOW: usize = 256 << 20;

/// Streams one connection may have open at once (Yamux's default).
const MAX_STREAMS: usize = 512;

// A Yamux frame (header + data) fills one Noise frame's plaintext exactly.
const _: () = assert!(SPLIT_SEND_BYTES + 12 + 16 == 65_535);
// Yamux needs room for every stream's initial 256 KiB window (it panics otherwise).
const _: () = assert!(MAX_CONNECTION_WINDOW >= MAX_STREAMS * 256 * 1024);

/// Inbound streams held while the handler is not asking for them; more are
/// dropped (the remote stops opening them at Yamux's ACK backlog of 256).
const MAX_BUFFERED_INBOUND_STREAMS: usize = 256;

/// The muxer upgrade (use as `|| muxer::Config::default()` on TCP).
#[derive(Debug, Clone)]
pub struct Config(yamux::Config);

impl Default for Config {
    fn default() -> Self {
        let mut c = yamux::Config::default();
        c.set_max_num_streams(MAX_STREAMS);
        c.set_max_connection_receive_window(Some(MAX_CONNECTION_WINDOW));
        c.set_split_send_size(SPLIT_SEND_BYTES);
        Config(c)
    }
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        iter::once("/yamux/1.0.0")
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = std::io::Error;
    type Future = future::Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(yamux::Connection::new(
            io,
            self.0,
            yamux::Mode::Server,
        ))))
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = std::io::Error;
    type Future = future::Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(yamux::Connection::new(
            io,
            self.0,
            yamux::Mode::Client,
        ))))
    }
}

/// One Yamux connection as a libp2p stream muxer.
#[derive(Debug)]
pub struct Muxer<C> {
    connection: yamux::Connection<C>,
    /// Inbound streams that arrived while [`StreamMuxer::poll`] drove the
    /// connection (Yamux only progresses through `poll_next_inbound`).
    inbound: VecDeque<yamux::Stream>,
    inbound_waker: Option<Waker>,
}

impl<C> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    fn new(connection: yamux::Connection<C>) -> Self {
        Muxer {
            connection,
            inbound: VecDeque::new(),
            inbound_waker: None,
        }
    }
}

impl<C> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
{
    fn poll_inner(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<yamux::Stream, yamux::ConnectionError>> {
        match ready!(self.connection.poll_next_inbound(cx)) {
            Some(stream) => Poll::Ready(stream),
            None => Poll::Ready(Err(yamux::ConnectionError::Closed)),
        }
    }
}

impl<C> StreamMuxer for Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
{
    type Substream = yamux::Stream;
    type Error = yamux::ConnectionError;

    fn poll_inbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        if let Some(stream) = self.inbound.pop_front() {
            return Poll::Ready(Ok(stream));
        }
        if let Poll::Ready(res) = self.poll_inner(cx) {
            return Poll::Ready(res);
        }
        self.inbound_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_outbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        self.connection.poll_new_outbound(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.connection.poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let this = self.get_mut();
        let stream = ready!(this.poll_inner(cx))?;
        if this.inbound.len() >= MAX_BUFFERED_INBOUND_STREAMS {
            tracing::warn!(stream = %stream, "dropping an inbound stream: buffer full");
            drop(stream);
        } else {
            this.inbound.push_back(stream);
            if let Some(waker) = this.inbound_waker.take() {
                waker.wake();
            }
        }
        // Let other code run, then come back for more.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
