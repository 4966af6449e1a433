//! `leak`: looks the e-mail addresses found on a screen up in a local leak database and emits one
//! `leak` finding per known address. Unknown addresses give no finding (the task just completes).
//!
//! The leak database lives beside the coordinator's image store, so this module is not in
//! [`crate::modules::builtin`]: it runs only on the *lookup minion* that the coordinator process
//! starts next to its database ([`lookup_settings`], [`lookup_modules`]); an ordinary minion does
//! not declare it and so is never leased a `leak` task.
//!
//! Params (from the `enrichment` → `leak` follow-up rule): `emails` (array of addresses, at most
//! [`MAX_EMAILS`]) and `image` (the image id, sha256 of its PNG; optional).
//! Finding data: `email` (the known address), `read_as` (the address as OCR read it, when that
//! differs: a reading with up to two typical confusions, see `LeakDb::lookup_read`; else null),
//! `source`, `date` (first record of the address), `leaks` (every `{source, date}` record of the
//! address), `image`.

use crate::config::MinionSettings;
use crate::module::{FindingOut, Module, ModuleCtx, ModuleError, TaskInput};
use futures::future::BoxFuture;
use overlord_core::scope::Scope;
use overlord_enrich::LeakDb;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Most addresses one task may ask about.
pub const MAX_EMAILS: usize = 256;

/// Minion id of the lookup minion a coordinator runs in its own process.
pub const LOOKUP_MINION_ID: &str = "coordinator-lookup";
/// Provider name of the lookup minion.
pub const LOOKUP_PROVIDER: &str = "coordinator";

pub struct LeakLookup {
    db: LeakDb,
}

impl LeakLookup {
    pub fn new(db: LeakDb) -> Self {
        LeakLookup { db }
    }

    /// The findings for `emails` found on a screen at `target`/`port` (blocking sled reads).
    pub fn lookup(
        &self,
        emails: &[String],
        image: Option<&str>,
        target: Option<std::net::IpAddr>,
        port: Option<u16>,
    ) -> Result<Vec<FindingOut>, ModuleError> {
        let mut out: Vec<FindingOut> = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for e in emails {
            let key = e.trim().to_lowercase();
            if key.is_empty() || seen.contains(&key) {
                continue;
            }
            seen.push(key.clone());
            let Some((known, recs)) = self
                .db
                .lookup_read(&key)
                .map_err(|err| ModuleError::Failed(format!("leak database: {err}")))?
            else {
                continue;
            };
            let Some(first) = recs.first() else { continue };
            if seen.contains(&known) && known != key {
                continue; // two readings of one known address
            }
            seen.push(known.clone());
            let data = json!({
                "email": known,
                // as read on the screen, when OCR confusions were undone to find it
                "read_as": (known != key).then_some(&key),
                "source": first.source,
                "date": first.date,
                "leaks": recs
                    .iter()
                    .map(|r| json!({"source": r.source, "date": r.date}))
                    .collect::<Vec<_>>(),
                "image": image,
            });
            out.push(FindingOut::new("leak", target, port, data));
        }
        Ok(out)
    }
}

impl Module for LeakLookup {
    fn name(&self) -> &'static str {
        "leak"
    }
    fn capability(&self) -> &'static str {
        "leak"
    }
    fn run<'a>(
        &'a self,
        task: &'a TaskInput,
        _ctx: &'a ModuleCtx,
    ) -> BoxFuture<'a, Result<Vec<FindingOut>, ModuleError>> {
        Box::pin(async move {
            let emails = task
                .params
                .get("emails")
                .and_then(Value::as_array)
                .ok_or_else(|| ModuleError::Invalid("leak needs params.emails (array)".into()))?;
            if emails.len() > MAX_EMAILS {
                return Err(ModuleError::Invalid(format!(
                    "{} addresses, over the cap of {MAX_EMAILS}",
                    emails.len()
                )));
            }
            let emails: Vec<String> = emails
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        ModuleError::Invalid(format!("params.emails: not a string: {v}"))
                    })
                })
                .collect::<Result<_, _>>()?;
            let image = task
                .params
                .get("image")
                .and_then(Value::as_str)
                .map(str::to_string);
            let me = LeakLookup {
                db: self.db.clone(),
            };
            let (target, port) = (task.target, task.ports.first().copied());
            tokio::task::spawn_blocking(move || me.lookup(&emails, image.as_deref(), target, port))
                .await
                .map_err(|e| ModuleError::Failed(e.to_string()))?
        })
    }
}

/// Settings of the lookup minion: connects to `coordinator_url` (the coordinator's own address),
/// provider [`LOOKUP_PROVIDER`], declares only the `leak` capability and module. `scope` is the
/// coordinator's: a `leak` task carries the target of the screen it looks at, which the runtime
/// checks before running the module (the module itself connects nowhere).
pub fn lookup_settings(coordinator_url: &str, capacity: u32, scope: Scope) -> MinionSettings {
    MinionSettings {
        id: LOOKUP_MINION_ID.into(),
        provider: LOOKUP_PROVIDER.into(),
        coordinator: coordinator_url.into(),
        capacity: capacity.max(1),
        capabilities: vec!["leak".into()],
        modules: vec!["leak".into()],
        scope,
        reconnect_max: Duration::from_millis(1000),
        tls: None,
        internal_secret: None,
        input_dir: None,
    }
}

/// The lookup minion's module registry: only `leak`, over `db`.
pub fn lookup_modules(db: LeakDb) -> Vec<Arc<dyn Module>> {
    vec![Arc::new(LeakLookup::new(db))]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(params: Value) -> TaskInput {
        TaskInput {
            job_id: 1,
            task_id: 3,
            parent_task_id: Some(2),
            module: "leak".into(),
            target: Some("127.0.0.1".parse().unwrap()),
            target_count: 1,
            ports: vec![5900],
            params,
            blob: None,
            input: None,
        }
    }

    fn ctx() -> ModuleCtx {
        ModuleCtx {
            minion_id: LOOKUP_MINION_ID.into(),
            provider: LOOKUP_PROVIDER.into(),
            scope: Scope::loopback(),
            input_dir: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_finding_per_known_address_none_for_unknown() {
        let db = LeakDb::temporary().unwrap();
        db.import(
            "address,source,date\nAlice@Example.com,combo-2019,2019-01-07\nalice@example.com,forum,2021-03-01\nbob+shop@mx1.example.org,shop,2020-05-05\n"
                .as_bytes(),
        )
        .unwrap();
        let m = LeakLookup::new(db);
        let out = m
            .run(
                &task(json!({"emails": ["alice@example.com", "ALICE@example.com", "carol@example.net"], "image": "ab"})),
                &ctx(),
            )
            .await
            .unwrap();
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].kind, "leak");
        assert_eq!(out[0].port, Some(5900));
        assert_eq!(out[0].data["email"], "alice@example.com");
        assert_eq!(out[0].data["source"], "combo-2019");
        assert_eq!(out[0].data["date"], "2019-01-07");
        assert_eq!(out[0].data["leaks"].as_array().unwrap().len(), 2);
        assert_eq!(out[0].data["image"], "ab");
        // OCR read `+` as `t` and `1` as `l`: still the known address, with what was read
        let fuzzy = m
            .run(
                &task(json!({"emails": ["bobtshop@mxl.example.org", "bob+shop@mx1.example.org"]})),
                &ctx(),
            )
            .await
            .unwrap();
        assert_eq!(fuzzy.len(), 1, "two readings of one address: {fuzzy:?}");
        assert_eq!(fuzzy[0].data["email"], "bob+shop@mx1.example.org");
        assert_eq!(fuzzy[0].data["read_as"], "bobtshop@mxl.example.org");
        assert_eq!(out[0].data["read_as"], Value::Null);
        let none = m
            .run(&task(json!({"emails": ["carol@example.net"]})), &ctx())
            .await
            .unwrap();
        assert!(none.is_empty());
        let err = m.run(&task(json!({})), &ctx()).await.unwrap_err();
        assert!(matches!(err, ModuleError::Invalid(_)), "{err}");
        let err = m
            .run(&task(json!({"emails": [1]})), &ctx())
            .await
            .unwrap_err();
        assert!(err.permanent(), "{err}");
    }

    #[test]
    fn lookup_minion_declares_only_leak_and_builtin_has_no_leak() {
        let s = lookup_settings("http://127.0.0.1:1", 0, Scope::loopback());
        assert_eq!(s.capabilities, vec!["leak".to_string()]);
        assert_eq!(s.modules, vec!["leak".to_string()]);
        assert_eq!(s.capacity, 1);
        assert!(
            crate::modules::builtin()
                .iter()
                .all(|m| m.name() != "leak" && m.capability() != "leak"),
            "ordinary minions have no leak database"
        );
    }
}
