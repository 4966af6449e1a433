//! Stream fan-out of job events to WatchJob subscribers. Events are published only after the flush
//! that made them durable, so a watcher that falls behind (or reconnects) can always replay the
//! gap from storage by cursor.

use overlord_core::JobId;
use overlord_core::job::FindingRecord;
use overlord_proto::v1;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub enum HubEvent {
    Finding(FindingRecord),
    Progress(JobId, v1::JobStatus),
    Finished(JobId, v1::JobStatus),
}

impl HubEvent {
    pub fn job_id(&self) -> JobId {
        match self {
            HubEvent::Finding(f) => f.job_id,
            HubEvent::Progress(j, _) | HubEvent::Finished(j, _) => *j,
        }
    }
}

/// Highest durable finding cursor per job (readers never see findings beyond it).
#[derive(Clone, Default)]
pub struct Durable(Arc<Mutex<HashMap<JobId, u64>>>);

impl Durable {
    pub fn set(&self, job: JobId, cursor: u64) {
        let mut m = self.0.lock().expect("durable lock");
        let e = m.entry(job).or_insert(0);
        *e = (*e).max(cursor);
    }
    pub fn get(&self, job: JobId) -> Option<u64> {
        self.0.lock().expect("durable lock").get(&job).copied()
    }
}
