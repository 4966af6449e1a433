//! Who a minion session is, and whether it may run: identity from the verified client
//! certificate (never the Register message), reserved ids, one live session per id, revocation.
//! The decisions are `overlord_core::security::{check_reserved, admit_session}`; this keeps the
//! table of live sessions and closes the ones that must go.

use super::pki::{self, MinionIdentity};
use crate::engine::SessionTx;
use overlord_core::security::{Admission, admit_session, check_reserved};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tonic::Status;
use tracing::{info, warn};

pub use overlord_core::security::INTERNAL_HEADER;

struct Live {
    sid: u64,
    serial: Option<String>,
    last_seen: Arc<AtomicU64>,
    tx: SessionTx,
    kill: Arc<Notify>,
}

/// A session admitted by [`Gate::admit`]; drop after the session ends (via [`Gate::leave`]).
pub struct Admitted {
    pub minion_id: String,
    pub provider: String,
    pub last_seen: Arc<AtomicU64>,
    pub kill: Arc<Notify>,
}

pub struct Gate {
    /// TLS with client certificates: identity comes from the certificate.
    pub mtls: bool,
    internal_secret: String,
    /// A session heard from within this window is live: a second one for its id is refused.
    pub live_within_ms: u64,
    live: Mutex<HashMap<String, Live>>,
    revoked: Mutex<HashSet<String>>,
    ca_dir: Option<PathBuf>,
    /// Violations per minion id (`overlord_core::trust::Strikes`).
    strikes: Mutex<HashMap<String, overlord_core::trust::Strikes>>,
}

impl Gate {
    pub fn new(mtls: bool, live_within_ms: u64, ca_dir: Option<PathBuf>) -> Arc<Gate> {
        let revoked = ca_dir.as_deref().map(pki::load_revoked).unwrap_or_default();
        Arc::new(Gate {
            mtls,
            internal_secret: format!("{:032x}", rand::random::<u128>()),
            live_within_ms,
            live: Mutex::default(),
            revoked: Mutex::new(revoked),
            ca_dir,
            strikes: Mutex::default(),
        })
    }

    pub fn internal_secret(&self) -> &str {
        &self.internal_secret
    }

    /// The identity a session runs under: the certificate's with mTLS (the Register's id and
    /// provider are overwritten), else the Register's. Refuses reserved ids and modules unless
    /// the session is the coordinator's own.
    pub fn identify(
        &self,
        certs: Option<Arc<Vec<tonic::transport::CertificateDer<'static>>>>,
        metadata: &tonic::metadata::MetadataMap,
        reg: &mut overlord_proto::v1::Register,
    ) -> Result<Option<String>, Status> {
        let (internal, serial) = if self.mtls {
            let certs = certs.ok_or_else(|| {
                Status::unauthenticated(
                    "minion sessions need a client certificate (enroll with `overlord minion enroll`)",
                )
            })?;
            let der = certs
                .first()
                .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
            let MinionIdentity {
                minion_id,
                provider,
                serial,
            } = pki::identity(der).map_err(|e| Status::unauthenticated(e.to_string()))?;
            if self.revoked.lock().expect("revoked").contains(&serial) {
                return Err(Status::permission_denied(format!(
                    "certificate of minion {minion_id:?} (serial {serial}) is revoked"
                )));
            }
            if reg.minion_id != minion_id || reg.provider != provider {
                warn!(claimed = %reg.minion_id, certified = %minion_id, "Register names another identity than the certificate; using the certificate's");
            }
            reg.minion_id = minion_id;
            reg.provider = provider;
            // Only the coordinator issues certificates for reserved ids (enrollment refuses them).
            let internal =
                overlord_core::security::RESERVED_MINION_IDS.contains(&reg.minion_id.as_str());
            (internal, Some(serial))
        } else {
            let internal = metadata
                .get(INTERNAL_HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == self.internal_secret);
            (internal, None)
        };
        check_reserved(&reg.minion_id, &reg.modules, internal)
            .map_err(Status::permission_denied)?;
        Ok(serial)
    }

    /// Admits a session for `id`: refused while another session for it is live; a silent one is
    /// displaced (closed, so its minion reconnects if it is still there).
    pub fn admit(
        &self,
        id: &str,
        provider: &str,
        sid: u64,
        serial: Option<String>,
        tx: SessionTx,
    ) -> Result<Admitted, Status> {
        let now = overlord_core::now_ms();
        if let Some(s) = self.strikes.lock().expect("strikes").get(id)
            && s.quarantined(now)
        {
            return Err(Status::permission_denied(format!(
                "minion {id:?} is quarantined for {} more seconds after repeated result violations",
                s.until.unwrap_or(now).saturating_sub(now) / 1000
            )));
        }
        let mut live = self.live.lock().expect("sessions");
        let seen = live.get(id).map(|l| l.last_seen.load(Ordering::Relaxed));
        match admit_session(seen, now, self.live_within_ms) {
            Admission::RefuseLive => {
                return Err(Status::already_exists(format!(
                    "minion {id:?} already has a live session; a second one is refused"
                )));
            }
            Admission::Displace => {
                if let Some(old) = live.remove(id) {
                    info!(minion = %id, "displacing a silent session");
                    let _ = old.tx.send(Err(Status::aborted(
                        "displaced by a new session for this minion id",
                    )));
                    old.kill.notify_one();
                }
            }
            Admission::Admit => {}
        }
        let last_seen = Arc::new(AtomicU64::new(now));
        let kill = Arc::new(Notify::new());
        live.insert(
            id.to_string(),
            Live {
                sid,
                serial,
                last_seen: last_seen.clone(),
                tx,
                kill: kill.clone(),
            },
        );
        Ok(Admitted {
            minion_id: id.to_string(),
            provider: provider.to_string(),
            last_seen,
            kill,
        })
    }

    /// Counts `n` rejected results against `id`; once it is quarantined its session is closed
    /// and new ones are refused until the quarantine ends. True if it is now quarantined.
    pub fn strike(&self, id: &str, n: usize) -> bool {
        let now = overlord_core::now_ms();
        let mut quarantined = false;
        {
            let mut st = self.strikes.lock().expect("strikes");
            let s = st.entry(id.to_string()).or_default();
            for _ in 0..n {
                quarantined |= s.strike(now);
            }
        }
        if quarantined {
            warn!(minion = %id, "quarantined after repeated result violations");
            if let Some(l) = self.live.lock().expect("sessions").remove(id) {
                let _ = l.tx.send(Err(Status::permission_denied(
                    "quarantined after repeated result violations",
                )));
                l.kill.notify_one();
            }
        }
        quarantined
    }

    /// Ids with a session now.
    pub fn live_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .live
            .lock()
            .expect("sessions")
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Session `sid` of `id` ended.
    pub fn leave(&self, id: &str, sid: u64) {
        let mut live = self.live.lock().expect("sessions");
        if live.get(id).is_some_and(|l| l.sid == sid) {
            live.remove(id);
        }
    }

    /// Re-reads the revocation list and closes sessions whose certificate is on it.
    pub fn refresh_revocations(&self) -> usize {
        let Some(dir) = &self.ca_dir else { return 0 };
        let set = pki::load_revoked(dir);
        let mut closed = 0;
        {
            let mut live = self.live.lock().expect("sessions");
            let gone: Vec<String> = live
                .iter()
                .filter(|(_, l)| l.serial.as_ref().is_some_and(|s| set.contains(s)))
                .map(|(id, _)| id.clone())
                .collect();
            for id in gone {
                if let Some(l) = live.remove(&id) {
                    warn!(minion = %id, "certificate revoked; closing its session");
                    let _ = l.tx.send(Err(Status::permission_denied(
                        "this minion's certificate was revoked",
                    )));
                    l.kill.notify_one();
                    closed += 1;
                }
            }
        }
        *self.revoked.lock().expect("revoked") = set;
        closed
    }

    /// Polls the revocation list until the returned task is aborted.
    pub fn spawn_revocation_watch(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        self.ca_dir.as_ref()?;
        let g = self.clone();
        Some(tokio::spawn(async move {
            let mut iv = tokio::time::interval(pki::REVOCATION_POLL);
            loop {
                iv.tick().await;
                g.refresh_revocations();
            }
        }))
    }
}
