//! Result ingestion: validates each result batch a minion reports (finding kinds, targets, ports,
//! JSON data, blob sizes) and hashes blobs, off the scheduler and the job actors, then hands the
//! batch to the registry, which checks the fencing tokens and routes items to their jobs.

use crate::engine::{IngestedResult, ingest_item};
use crate::msg::{IngestMsg, RegMsg};
use crate::slot::Slot;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::debug;

pub struct IngestorActor;

impl Actor for IngestorActor {
    type Msg = IngestMsg;
    type State = Slot<RegMsg>;
    type Arguments = Slot<RegMsg>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        registry: Slot<RegMsg>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(registry)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        registry: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (minion, generation, batch, tx) = match msg {
            IngestMsg::Results(m, g, b, tx) => (m, g, b, tx),
            IngestMsg::Barrier(reply) => {
                let _ = reply.send(());
                return Ok(());
            }
        };
        let items: Vec<IngestedResult> = batch.items.into_iter().map(ingest_item).collect();
        debug!(minion = %minion, items = items.len(), "result batch ingested");
        match registry.get() {
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
