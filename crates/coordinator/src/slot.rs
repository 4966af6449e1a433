//! Typed handles the actors are given at spawn (instead of one shared locator): where an actor
//! currently lives, the directory of running job actors, and the fencing-token source. A leaf
//! module: it knows message types only as type parameters.

use overlord_core::{JobId, Token};
use ractor::{ActorId, ActorRef};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Where an actor currently lives (it changes when its supervisor restarts it).
pub struct Slot<M>(Arc<RwLock<Option<ActorRef<M>>>>);

impl<M> Clone for Slot<M> {
    fn clone(&self) -> Self {
        Slot(self.0.clone())
    }
}

impl<M> Default for Slot<M> {
    fn default() -> Self {
        Slot(Arc::new(RwLock::new(None)))
    }
}

impl<M> Slot<M> {
    pub fn get(&self) -> Option<ActorRef<M>> {
        self.0.read().expect("slot lock").clone()
    }
    pub fn set(&self, r: Option<ActorRef<M>>) {
        *self.0.write().expect("slot lock") = r;
    }
}

/// Running job actors by job id (for routing results and offers).
pub struct JobDir<M>(Arc<RwLock<HashMap<JobId, ActorRef<M>>>>);

impl<M> Clone for JobDir<M> {
    fn clone(&self) -> Self {
        JobDir(self.0.clone())
    }
}

impl<M> Default for JobDir<M> {
    fn default() -> Self {
        JobDir(Arc::new(RwLock::new(HashMap::new())))
    }
}

impl<M> JobDir<M> {
    pub fn get(&self, id: JobId) -> Option<ActorRef<M>> {
        self.0.read().expect("job dir").get(&id).cloned()
    }
    pub fn insert(&self, id: JobId, a: ActorRef<M>) {
        self.0.write().expect("job dir").insert(id, a);
    }
    /// Removes `id` if it is still the actor `actor` (not a successor).
    pub fn remove_if(&self, id: JobId, actor: ActorId) {
        let mut d = self.0.write().expect("job dir");
        if d.get(&id).map(|a| a.get_id()) == Some(actor) {
            d.remove(&id);
        }
    }
    pub fn all(&self) -> Vec<ActorRef<M>> {
        self.0.read().expect("job dir").values().cloned().collect()
    }
    pub fn drain(&self) -> Vec<ActorRef<M>> {
        self.0
            .write()
            .expect("job dir")
            .drain()
            .map(|(_, a)| a)
            .collect()
    }
}

/// Fencing tokens of this coordinator process: its start epoch in the high bits
/// (`core::sched::token`), a counter below.
#[derive(Clone)]
pub struct TokenSource {
    epoch: u64,
    counter: Arc<AtomicU64>,
}

impl TokenSource {
    pub fn new(epoch: u64) -> Self {
        TokenSource {
            epoch,
            counter: Arc::new(AtomicU64::new(0)),
        }
    }
    pub fn next(&self) -> Token {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        overlord_core::sched::token(self.epoch, n)
    }
}

/// Tasks spawned on behalf of the tree or the gRPC layer (session readers, watch streams, list
/// queries): each is counted here, so a graceful stop can tell them to finish (`closing`) and wait
/// for them. Nothing the coordinator spawns is left without an owner.
#[derive(Clone)]
pub struct Tasks {
    live: Arc<AtomicU64>,
    ended: Arc<tokio::sync::Notify>,
    closing: tokio::sync::watch::Sender<bool>,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks {
            live: Arc::default(),
            ended: Arc::default(),
            closing: tokio::sync::watch::channel(false).0,
        }
    }
}

/// Decrements the live count when a tracked task ends (also when it panics or is aborted).
struct Live(Arc<AtomicU64>, Arc<tokio::sync::Notify>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        self.1.notify_waiters();
    }
}

impl Tasks {
    pub fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.live.fetch_add(1, Ordering::AcqRel);
        let guard = Live(self.live.clone(), self.ended.clone());
        tokio::spawn(async move {
            let _guard = guard;
            f.await
        })
    }
    /// Resolves once a graceful stop began: stop taking new work.
    pub fn closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }
    pub fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }
    /// Begins the stop: every task is told to finish.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }
    /// Waits until every tracked task ended.
    pub async fn wait(&self) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.live.load(Ordering::Acquire) == 0 {
                return;
            }
            ended.await;
        }
    }
    pub fn len(&self) -> usize {
        self.live.load(Ordering::Acquire) as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
