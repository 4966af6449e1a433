//! Which jobs (and so which findings and images) a caller may see: job owners read once from the
//! stored specs (a job's owner never changes) and the decision in
//! [`overlord_core::security::visible_jobs`].

use crate::security::tokens::Principal;
use overlord_core::security::{Role, visible_jobs};
use overlord_storage::Store;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct Owners {
    store: Arc<dyn Store>,
    cache: Arc<Mutex<HashMap<u64, String>>>,
}

impl Owners {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Owners {
            store,
            cache: Default::default(),
        }
    }

    /// A job's owner; `None` when the job is unknown.
    pub fn owner_of(&self, job: u64) -> Result<Option<String>, String> {
        if let Some(o) = self.cache.lock().expect("owners").get(&job) {
            return Ok(Some(o.clone()));
        }
        let Some(spec) = self.store.spec(job).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        self.cache
            .lock()
            .expect("owners")
            .insert(job, spec.owner.clone());
        Ok(Some(spec.owner))
    }

    /// The jobs among `jobs` that `who` may see (`None`: all, the caller is an admin). Unknown
    /// jobs are never visible to non-admins.
    pub fn scope(
        &self,
        who: &Principal,
        jobs: impl IntoIterator<Item = u64>,
    ) -> Result<Option<BTreeSet<u64>>, String> {
        if who.role == Role::Admin {
            return Ok(None);
        }
        let mut known = Vec::new();
        for j in jobs {
            if let Some(o) = self.owner_of(j)? {
                known.push((j, o));
            }
        }
        Ok(visible_jobs(
            who.role,
            &who.owner,
            known.iter().map(|(j, o)| (*j, o.as_str())),
        ))
    }

    /// Whether `who` may see job `job`.
    pub fn may_see(&self, who: &Principal, job: u64) -> Result<bool, String> {
        Ok(self.scope(who, [job])?.is_none_or(|s| s.contains(&job)))
    }
}
