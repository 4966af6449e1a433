//! Durability for the actor tree: every writing actor owns a [`Committer`]; the [`FlusherActor`]
//! groups flushes.
//!
//! At the end of each message an actor applies its write batch to the store (visible, not yet
//! durable) and files the outputs that acknowledge something (replies, result acks, published
//! events) under the sequence number of that apply. It then asks the flusher for a flush; the
//! flusher waits a short window so that the requests of every actor share one `fsync`, flushes, and
//! wakes each requester, which releases the outputs filed up to the sequence it asked for.
//! Nothing is acknowledged before the flush that covers its writes has returned.

use crate::engine::Counters;
use crate::slot::Slot;
use overlord_storage::{Batch, Store, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::warn;

/// Called once the flush covering a request has returned.
pub type Waker = Box<dyn FnOnce() + Send>;

/// An output released after the writes before it are durable.
pub type Deferred = Box<dyn FnOnce() + Send>;

/// Re-ask for a flush if none answered within this time (the flusher may have been restarted).
const REREQUEST_AFTER: Duration = Duration::from_secs(2);

pub struct Committer {
    store: Arc<dyn Store>,
    counters: Arc<Counters>,
    pub batch: Batch,
    pending_out: Vec<Deferred>,
    outbox: VecDeque<(u64, Deferred)>,
    applied: u64,
    flushed: u64,
    requested: Option<(u64, Instant)>,
}

impl Committer {
    pub fn new(store: Arc<dyn Store>, counters: Arc<Counters>) -> Self {
        Committer {
            store,
            counters,
            batch: Batch::default(),
            pending_out: Vec::new(),
            outbox: VecDeque::new(),
            applied: 0,
            flushed: 0,
            requested: None,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Runs `f` once every write made so far (including the current batch) is durable.
    pub fn defer(&mut self, f: impl FnOnce() + Send + 'static) {
        // Counted until released, so a graceful stop can wait for every acknowledgement.
        Counters::add(&self.counters.unreleased, 1);
        let counters = self.counters.clone();
        self.pending_out.push(Box::new(move || {
            counters
                .unreleased
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            f()
        }));
    }

    /// Ends a message: applies the batch and files its deferred outputs. Call before
    /// [`Committer::request_flush`].
    pub fn commit(&mut self) -> Result<(), StoreError> {
        if !self.batch.is_empty() {
            let b = std::mem::take(&mut self.batch);
            let t = Instant::now();
            self.store.apply(b)?;
            Counters::add(&self.counters.apply_us, t.elapsed().as_micros() as u64);
            Counters::add(&self.counters.batches, 1);
            self.applied += 1;
        }
        for d in self.pending_out.drain(..) {
            if self.applied <= self.flushed && self.outbox.is_empty() {
                d();
            } else {
                self.outbox.push_back((self.applied, d));
            }
        }
        Ok(())
    }

    /// Asks the flusher for a flush covering everything applied, if outputs wait for one and no
    /// request is outstanding. `wake(seq)` builds the callback that tells the actor.
    pub fn request_flush(&mut self, flusher: &Slot<FlushMsg>, wake: impl FnOnce(u64) -> Waker) {
        if self.outbox.is_empty() {
            return;
        }
        if let Some((_, at)) = self.requested
            && at.elapsed() < REREQUEST_AFTER
        {
            return;
        }
        let Some(f) = flusher.get() else {
            return;
        };
        if f.cast(FlushMsg::Flush(wake(self.applied))).is_ok() {
            self.requested = Some((self.applied, Instant::now()));
        }
    }

    /// Ends an actor's message: [`Committer::commit`], then a flush request whose wake-up sends
    /// `flushed(seq)` to `me`.
    pub fn end_turn<M: ractor::Message>(
        &mut self,
        flusher: &Slot<FlushMsg>,
        me: &ActorRef<M>,
        flushed: fn(u64) -> M,
    ) -> Result<(), StoreError> {
        self.commit()?;
        let me = me.clone();
        self.request_flush(flusher, move |seq| {
            Box::new(move || {
                let _ = me.cast(flushed(seq));
            })
        });
        Ok(())
    }

    /// The flush for `seq` returned: releases the outputs filed up to it.
    pub fn flushed(&mut self, seq: u64) {
        self.flushed = self.flushed.max(seq);
        if matches!(self.requested, Some((s, _)) if s <= seq) {
            self.requested = None;
        }
        while let Some((s, _)) = self.outbox.front() {
            if *s > self.flushed {
                break;
            }
            let (_, d) = self.outbox.pop_front().expect("front");
            d();
        }
    }

    pub fn has_unreleased(&self) -> bool {
        !self.outbox.is_empty() || !self.pending_out.is_empty()
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Outputs that will never be released (the actor died) are no longer waited for.
        let n = (self.outbox.len() + self.pending_out.len()) as u64;
        self.counters
            .unreleased
            .fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
    }
}

// ---------------- Flusher ----------------

pub enum FlushMsg {
    /// The sender applied its writes before sending this: wake it after the next flush.
    Flush(Waker),
    Go,
    Done(Vec<Waker>, Result<(), String>),
}

/// Minimum spacing of flushes: requests arriving meanwhile share the next flush (group commit).
/// Bounds the extra acknowledgement latency.
pub const FLUSH_WINDOW: Duration = Duration::from_millis(5);

pub struct FlusherActor;

pub struct FlusherState {
    store: Arc<dyn Store>,
    counters: Arc<Counters>,
    waiting: Vec<Waker>,
    busy: bool,
    last: Instant,
}

impl Actor for FlusherActor {
    type Msg = FlushMsg;
    type State = FlusherState;
    type Arguments = (Arc<dyn Store>, Arc<Counters>);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (store, counters): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(FlusherState {
            store,
            counters,
            waiting: Vec::new(),
            busy: false,
            last: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FlushMsg::Flush(w) => {
                st.waiting.push(w);
                if !st.busy {
                    st.busy = true;
                    schedule_go(&myself, st.last);
                }
            }
            FlushMsg::Go => {
                // Every request received so far was applied before it was sent: this flush
                // covers all of them.
                let ws = std::mem::take(&mut st.waiting);
                let s = st.store.clone();
                let me = myself.clone();
                tokio::spawn(async move {
                    // sled's flush blocks on fsync: keep it off the async workers.
                    let r = match tokio::task::spawn_blocking(move || s.flush()).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    let _ = me.cast(FlushMsg::Done(ws, r));
                });
            }
            FlushMsg::Done(ws, r) => {
                st.last = Instant::now();
                st.busy = false;
                if let Err(e) = r {
                    warn!(error = %e, "storage flush failed");
                    return Err(format!("storage flush failed: {e}").into());
                }
                Counters::add(&st.counters.flushes, 1);
                for w in ws {
                    w();
                }
                if !st.waiting.is_empty() {
                    st.busy = true;
                    schedule_go(&myself, st.last);
                }
            }
        }
        Ok(())
    }
}

fn schedule_go(myself: &ActorRef<FlushMsg>, last: Instant) {
    let wait = FLUSH_WINDOW.saturating_sub(last.elapsed());
    if wait.is_zero() {
        let _ = myself.cast(FlushMsg::Go);
    } else {
        myself.send_after(wait, || FlushMsg::Go);
    }
}
