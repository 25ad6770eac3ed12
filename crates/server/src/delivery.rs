//! How frames reach a connection: each connection owns a bounded queue; everybody else holds
//! a cheap [`ConnHandle`] to push into it without waiting. A connection whose queue is full is
//! a slow consumer and is disconnected, never allowed to grow memory or slow the sender.
//!
//! The queue is a `VecDeque` behind a mutex plus one `Notify` (not a tokio channel): it
//! allocates nothing until a frame arrives and the writer swaps it for its own spare buffer,
//! so an idle connection holds no queue memory and a busy one reuses two buffers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// A frame serialised once and shared by every recipient of a fan-out: reference-counted
/// UTF-8 bytes that the WebSocket writes as they are (no copy per recipient).
pub type Frame = axum::extract::ws::Utf8Bytes;

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
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Frame>,
    /// The connection is gone: pushes fail.
    closed: bool,
}

#[derive(Debug)]
struct Inner {
    queue: Mutex<Queue>,
    capacity: usize,
    signals: Signals,
    /// Wakes the writer: a frame was queued or a signal set.
    notify: Notify,
}

/// A handle to push frames to one connection.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    /// Unique per server process.
    pub id: u64,
    inner: Arc<Inner>,
}

/// The connection's own end of its queue. Dropping it closes the queue.
#[derive(Debug)]
pub struct Outbox {
    inner: Arc<Inner>,
}

impl ConnHandle {
    /// A new connection's handle and the receiving end of its queue (at most `capacity`
    /// frames waiting).
    pub fn new(id: u64, capacity: usize) -> (ConnHandle, Outbox) {
        let inner = Arc::new(Inner {
            queue: Mutex::new(Queue::default()),
            capacity: capacity.max(1),
            signals: Signals::default(),
            notify: Notify::new(),
        });
        (
            ConnHandle {
                id,
                inner: inner.clone(),
            },
            Outbox { inner },
        )
    }

    /// Queue a frame. Returns false when the connection is gone or has just been found to be
    /// a slow consumer (it will be closed).
    pub fn push(&self, frame: Frame) -> bool {
        {
            let mut q = self.inner.queue.lock();
            if q.closed {
                return false;
            }
            if q.frames.len() >= self.inner.capacity {
                drop(q);
                self.signal(|s| &s.overflowed);
                return false;
            }
            q.frames.push_back(frame);
        }
        self.inner.notify.notify_one();
        true
    }

    /// Tell the connection its session is over (a newer login took over, or its app was
    /// removed): `kick` (`onLogout(103)`), then close.
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
        flag(&self.inner.signals).store(true, Ordering::SeqCst);
        self.inner.notify.notify_one();
    }

    /// A queue of the same id and capacity that stands in for this one until its
    /// [`Outbox::hand_to`] this one: what is pushed meanwhile waits there (a login's reply
    /// must come first, and only once the login is stored).
    pub fn stand_in(&self) -> (ConnHandle, Outbox) {
        ConnHandle::new(self.id, self.inner.capacity)
    }

    /// Whether the connection's queue is still open.
    pub fn is_open(&self) -> bool {
        !self.inner.queue.lock().closed
    }
}

impl Outbox {
    /// Wait until something was queued or signalled since the last wake-up (a wake-up that
    /// came while the writer was busy is kept, so none is lost).
    pub async fn woken(&self) {
        self.inner.notify.notified().await
    }

    /// Wait until the queue overflowed (the client is not keeping up).
    pub async fn overflowed(&self) {
        while !self.inner.signals.overflowed.load(Ordering::SeqCst) {
            self.inner.notify.notified().await;
        }
    }

    /// Wake the writer again if frames or signals are waiting (after something else
    /// consumed the wake-up).
    pub fn rewake_if_pending(&self) {
        let s = &self.inner.signals;
        let signalled = [&s.kicked, &s.overflowed, &s.shutdown, &s.dropped]
            .iter()
            .any(|f| f.load(Ordering::SeqCst));
        if signalled || self.has_frames() {
            self.inner.notify.notify_one();
        }
    }

    /// The out-of-band signals.
    pub fn signals(&self) -> &Signals {
        &self.inner.signals
    }

    /// Take everything queued, in order, by swapping it with `spare` (which must be empty):
    /// no copy, and the two buffers are reused.
    pub fn take(&self, spare: &mut VecDeque<Frame>) {
        debug_assert!(spare.is_empty());
        std::mem::swap(&mut self.inner.queue.lock().frames, spare);
    }

    /// Whether frames are waiting.
    pub fn has_frames(&self) -> bool {
        !self.inner.queue.lock().frames.is_empty()
    }

    /// Pass what was queued and signalled here on to `to` (this queue stood in for it,
    /// [`ConnHandle::stand_in`]): the frames in order, then the signals.
    pub fn hand_to(&self, to: &ConnHandle) {
        let frames = std::mem::take(&mut self.inner.queue.lock().frames);
        for f in frames {
            to.push(f);
        }
        let s = &self.inner.signals;
        let flags: [fn(&Signals) -> &AtomicBool; 4] = [
            |s| &s.kicked,
            |s| &s.overflowed,
            |s| &s.shutdown,
            |s| &s.dropped,
        ];
        for flag in flags {
            if flag(s).load(Ordering::SeqCst) {
                to.signal(flag);
            }
        }
    }

    /// Give back the queue's memory (an idle connection should hold none).
    pub fn shrink(&self) {
        self.inner.queue.lock().frames.shrink_to(4);
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut q = self.inner.queue.lock();
        q.closed = true;
        q.frames = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> Frame {
        Frame::from(s.to_string())
    }

    #[test]
    fn a_stand_in_hands_on_its_frames_and_signals_in_order() {
        let (h, out) = ConnHandle::new(7, 8);
        assert!(h.push(f("first")));
        let (stand_in, held) = h.stand_in();
        assert_eq!(stand_in.id, 7);
        assert!(stand_in.push(f("a")));
        assert!(stand_in.push(f("b")));
        stand_in.kick();
        assert!(h.push(f("welcome")));
        held.hand_to(&h);
        let mut got = VecDeque::new();
        out.take(&mut got);
        assert_eq!(got, [f("first"), f("welcome"), f("a"), f("b")]);
        assert!(out.signals().kicked.load(Ordering::SeqCst));
        assert!(!out.signals().dropped.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn frames_arrive_in_order_and_wake_the_writer() {
        let (h, out) = ConnHandle::new(1, 8);
        assert!(h.push(f("a")));
        assert!(h.push(f("b")));
        out.woken().await; // the permit stored by the pushes
        let mut got = VecDeque::new();
        out.take(&mut got);
        assert_eq!(
            got.iter().map(|x| x.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(!out.has_frames());
    }

    #[test]
    fn a_full_queue_signals_overflow_and_refuses() {
        let (h, out) = ConnHandle::new(1, 2);
        assert!(h.push(f("1")));
        assert!(h.push(f("2")));
        assert!(!h.push(f("3")));
        assert!(out.signals().overflowed.load(Ordering::SeqCst));
        let mut got = VecDeque::new();
        out.take(&mut got);
        assert_eq!(got.len(), 2, "what was queued before the overflow is kept");
    }

    #[test]
    fn pushes_fail_once_the_connection_is_gone() {
        let (h, out) = ConnHandle::new(1, 2);
        assert!(h.is_open());
        drop(out);
        assert!(!h.is_open());
        assert!(!h.push(f("x")));
    }
}
