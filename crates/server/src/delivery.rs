//! How frames reach a connection: each connection owns a bounded queue; everybody else holds
//! a cheap [`ConnHandle`] to push into it without waiting. A connection whose queue is full is
//! a slow consumer and is disconnected, never allowed to grow memory or slow the sender.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

/// A frame serialised once and shared by every recipient of a fan-out.
pub type Frame = Arc<str>;

/// Out-of-band signals that must get through even when the queue is full.
#[derive(Default, Debug)]
pub struct Signals {
    /// Another login of the same account took over: send `kick`, then close.
    pub kicked: AtomicBool,
    /// The queue overflowed: send `close`, then close.
    pub overflowed: AtomicBool,
    /// The server is shutting down: send `close`, then close.
    pub shutdown: AtomicBool,
    /// Close at once without a farewell frame, so the client reconnects and resumes (used
    /// when a cluster node finds its registration had lapsed).
    pub dropped: AtomicBool,
    /// Wakes the writer when a flag is set.
    pub notify: Notify,
}

/// A handle to push frames to one connection.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    /// Unique per server process.
    pub id: u64,
    tx: mpsc::Sender<Frame>,
    signals: Arc<Signals>,
}

impl ConnHandle {
    /// A new connection's handle and the receiving end of its queue.
    pub fn new(id: u64, capacity: usize) -> (ConnHandle, mpsc::Receiver<Frame>, Arc<Signals>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let signals = Arc::new(Signals::default());
        (
            ConnHandle {
                id,
                tx,
                signals: signals.clone(),
            },
            rx,
            signals,
        )
    }

    /// Queue a frame. Returns false when the connection is gone or has just been found to be
    /// a slow consumer (it will be closed).
    pub fn push(&self, frame: Frame) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.signal(|s| &s.overflowed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Tell the connection it was kicked by a newer login.
    pub fn kick(&self) {
        self.signal(|s| &s.kicked);
    }

    /// Close the connection without a farewell frame: the client reconnects.
    pub fn drop_silently(&self) {
        self.signal(|s| &s.dropped);
    }

    /// Tell the connection the server is shutting down.
    pub fn shutdown(&self) {
        self.signal(|s| &s.shutdown);
    }

    fn signal(&self, flag: impl Fn(&Signals) -> &AtomicBool) {
        flag(&self.signals).store(true, Ordering::SeqCst);
        self.signals.notify.notify_one();
    }

    /// Whether the connection's queue is still open.
    pub fn is_open(&self) -> bool {
        !self.tx.is_closed()
    }
}
