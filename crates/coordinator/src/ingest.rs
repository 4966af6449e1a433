//! Result ingestion: validates each result batch a minion reports (finding kinds, targets, ports,
//! JSON data, blob sizes) and hashes blobs, off the scheduler and the job actors, then hands the
//! batch to the registry, which checks the fencing tokens and routes items to their jobs.

use crate::actors::Shared;
use crate::engine::{IngestedResult, SessionTx, ingest_item};
use crate::registry::RegMsg;
use overlord_proto::v1;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::debug;

pub enum IngestMsg {
    /// (minion id, session generation, batch, session)
    Results(String, u64, v1::ResultBatch, SessionTx),
}

pub struct IngestorActor;

impl Actor for IngestorActor {
    type Msg = IngestMsg;
    type State = Shared;
    type Arguments = Shared;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        shared: Shared,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(shared)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        sh: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let IngestMsg::Results(minion, generation, batch, tx) = msg;
        let items: Vec<IngestedResult> = batch.items.into_iter().map(ingest_item).collect();
        debug!(minion = %minion, items = items.len(), "result batch ingested");
        match sh.registry.get() {
            Some(r) => {
                let _ = r.cast(RegMsg::Results(minion, generation, items, tx));
            }
            None => {
                // The registry is restarting: this session ends; the minion reconnects and
                // re-sends every unacknowledged result.
                let _ = tx.send(Err(tonic::Status::unavailable(
                    "scheduler restarting; reconnect",
                )));
            }
        }
        Ok(())
    }
}
