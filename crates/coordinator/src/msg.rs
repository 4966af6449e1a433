//! The messages of the coordinator's actors (one enum per actor) and what they carry. A module of
//! its own so that actors depend on each other's messages, never on each other's code: the
//! module graph has no cycles (`actors.rs` wires the tree; it is the only module that knows every
//! actor).

use crate::engine::{IngestedResult, SessionTx};
pub use crate::model::planner::Demand;
use overlord_core::job::{JobRecord, JobSpec, RootPlan};
use overlord_core::{JobId, Token};
use overlord_proto::error::ApiError;
use overlord_proto::v1;
use ractor::RpcReplyPort;
use std::sync::Arc;

/// Free slots of one minion offered to a job.
#[derive(Clone)]
pub struct SlotOffer {
    pub minion: String,
    pub provider: String,
    pub generation: u64,
    pub modules: Arc<Vec<String>>,
    pub free: u32,
    pub tx: SessionTx,
}

pub enum RegMsg {
    Register(Box<v1::Register>, SessionTx, u64, RpcReplyPort<u64>),
    /// (minion, generation, the lease tokens it holds)
    Heartbeat(String, u64, Vec<Token>),
    /// Validated results from the ingestor: (minion, generation, items, session).
    Results(String, u64, Vec<IngestedResult>, SessionTx),
    Kick(String, u64, String),
    Disconnected(String, u64),
    Demand(JobId, Demand),
    /// Answer to an offer: the tokens leased per (minion, generation), and the job's new demand.
    Taken {
        job: JobId,
        offer: u64,
        used: Vec<(String, u64, Vec<Token>)>,
        demand: Demand,
    },
    /// The job gave these leases up (deadline passed, cancelled): free the slots, tell the minions.
    Release(JobId, Vec<Token>),
    /// These leases passed their deadline unanswered: released, and their minions get no new
    /// offers until they answer something (`Planner::expired`).
    Expired(JobId, Vec<Token>),
    /// A job actor (re)started holding leases (token, minion, generation). With `keep`, leases of
    /// minions still current stay; the others (all, without `keep`) are sent back for requeueing.
    Adopt {
        job: JobId,
        leases: Vec<(Token, String, u64)>,
        keep: bool,
    },
    JobGone(JobId),
    /// Per job (one, or all with `None`): modules it has pending tasks for that no live minion
    /// declares (only jobs with such modules are listed).
    Unserved(Option<JobId>, RpcReplyPort<Vec<(JobId, Vec<String>)>>),
    Tick,
    Flushed(u64),
    InjectPanic,
    /// Answered once every message before it was handled (a graceful stop's barrier).
    Barrier(RpcReplyPort<()>),
}

pub enum JobInit {
    /// Just submitted: the manager wrote the spec and the first record.
    New {
        rec: JobRecord,
        spec: Arc<JobSpec>,
        plan: RootPlan,
    },
    /// Rebuilt from storage. `keep_leases`: after a coordinator restart, leases of minions that
    /// come back stay valid; after this actor's own failure they are all given back.
    Recover { id: JobId, keep_leases: bool },
}

pub enum JobMsg {
    Offer {
        offer: u64,
        slots: Vec<SlotOffer>,
        alive: u32,
    },
    Results {
        minion: String,
        provider: String,
        generation: u64,
        items: Vec<IngestedResult>,
        tx: SessionTx,
    },
    /// Leases the registry took back (minion dead or replaced): (tokens, reason, count attempt).
    Requeue(Vec<Token>, String, bool),
    /// Results rejected by the registry as stale (counted in the job's record).
    Stale(u64),
    Status(RpcReplyPort<Result<v1::JobStatus, ApiError>>),
    Cancel(RpcReplyPort<Result<v1::JobStatus, ApiError>>),
    /// The registry restarted: report live leases again.
    Readopt,
    Flushed(u64),
    Tick,
    /// Sent by the manager once it recorded the job as finished.
    Stop,
    InjectPanic,
}

pub enum MgrMsg {
    /// (spec, client request id for idempotent retries, reply)
    Submit(
        Box<JobSpec>,
        Option<String>,
        RpcReplyPort<Result<v1::JobStatus, ApiError>>,
    ),
    Get(JobId, RpcReplyPort<Result<v1::JobStatus, ApiError>>),
    List(RpcReplyPort<Vec<v1::JobStatus>>),
    Cancel(JobId, RpcReplyPort<Result<v1::JobStatus, ApiError>>),
    /// A job actor's final record is durable.
    Finished(JobId, JobRecord, Arc<JobSpec>),
    /// Stale results for a job that is no longer running.
    Stale(JobId, u64),
    /// The registry restarted: every job actor reports its leases again.
    Readopt,
    RestartJob(JobId),
    Flushed(u64),
    /// Test hook: a running job's actor panics (or the manager itself when none runs).
    InjectPanic,
}

pub enum IngestMsg {
    /// (minion id, session generation, batch, session)
    Results(String, u64, v1::ResultBatch, SessionTx),
    /// Answered once every message before it was handled (a graceful stop's barrier).
    Barrier(RpcReplyPort<()>),
}
