//! Work the coordinator does itself, next to its data: the leak lookup (module `leak`).
//!
//! The `enrichment` → `leak` follow-up rule makes a `leak` task like any other (a task record with
//! its parent, so provenance and counts stay as for minion work), but the job runs it at once,
//! in process, against the leak database of its image store ([`LeakLookup::run`]), and completes
//! it with minion id [`LOOKUP_MINION_ID`]. It is never queued or leased: no minion can claim it,
//! and the lookup happens in this one place (the image indexer no longer looks addresses up).

use crate::engine::ParsedFinding;
use overlord_core::finding::Payload;
use overlord_core::finding::enrichment::{Leak, LeakSource};
use overlord_core::job::TaskSpec;
use overlord_enrich::LeakDb;
use serde_json::Value;

/// Most addresses one lookup may ask about.
pub const MAX_EMAILS: usize = 256;
/// Minion id recorded on findings of work the coordinator did itself.
pub const LOOKUP_MINION_ID: &str = "coordinator";
/// Provider recorded on those findings.
pub const LOOKUP_PROVIDER: &str = "coordinator";

/// Whether the coordinator runs tasks of `module` itself (never leased to a minion).
pub fn runs_here(module: &str) -> bool {
    module == overlord_core::finding::FindingKind::Leak.as_str()
}

/// The leak lookup over the image store's leak database.
#[derive(Clone)]
pub struct LeakLookup {
    db: LeakDb,
}

impl LeakLookup {
    pub fn new(db: LeakDb) -> Self {
        LeakLookup { db }
    }

    /// One `leak` finding per known address of `task.params.emails` (an OCR reading with typical
    /// confusions counts as the known address; two readings of one address give one finding).
    /// Bad params are an error (the task fails; retrying cannot help).
    pub fn run(&self, task: &TaskSpec) -> Result<Vec<ParsedFinding>, String> {
        let emails = task
            .params
            .get("emails")
            .and_then(Value::as_array)
            .ok_or("leak needs params.emails (array)")?;
        if emails.len() > MAX_EMAILS {
            return Err(format!(
                "{} addresses, over the cap of {MAX_EMAILS}",
                emails.len()
            ));
        }
        let image = task
            .params
            .get("image")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut out = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for e in emails {
            let e = e
                .as_str()
                .ok_or_else(|| format!("params.emails: not a string: {e}"))?;
            let key = e.trim().to_lowercase();
            if key.is_empty() || seen.contains(&key) {
                continue;
            }
            seen.push(key.clone());
            let Some((known, recs)) = self
                .db
                .lookup_read(&key)
                .map_err(|err| format!("leak database: {err}"))?
            else {
                continue;
            };
            let Some(first) = recs.first() else { continue };
            if seen.contains(&known) && known != key {
                continue; // two readings of one known address
            }
            seen.push(known.clone());
            tracing::info!(job = task.job_id, address = %known, source = %first.source, "leaked address on screen");
            let leak = Leak {
                // as read on the screen, when OCR confusions were undone to find it
                read_as: (known != key).then(|| key.clone()),
                email: known,
                source: first.source.clone(),
                date: first.date.clone(),
                leaks: recs
                    .iter()
                    .map(|r| LeakSource {
                        source: r.source.clone(),
                        date: r.date.clone(),
                    })
                    .collect(),
                image: image.clone(),
            };
            let payload = Payload::Leak(leak);
            let data = payload.to_data();
            let data_bytes = data.to_string().len();
            out.push(ParsedFinding {
                data_bytes,
                kind: payload.kind_name().to_string(),
                target: task.target,
                port: task.ports.first().copied(),
                parsed: overlord_core::finding::Parsed {
                    payload,
                    unknown_fields: Vec::new(),
                },
                data,
                blob: None,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(params: Value) -> TaskSpec {
        TaskSpec {
            job_id: 1,
            task_id: 3,
            parent: Some(2),
            module: "leak".into(),
            target: Some("127.0.0.1".parse().unwrap()),
            target_count: 1,
            ports: vec![5900],
            input: None,
            params,
            blob_sha256: None,
            ranges: Vec::new(),
        }
    }

    fn leaks(out: &[ParsedFinding]) -> Vec<Leak> {
        out.iter()
            .map(|f| match &f.parsed.payload {
                Payload::Leak(l) => l.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn one_finding_per_known_address_none_for_unknown() {
        let db = LeakDb::temporary().unwrap();
        db.import(
            "address,source,date\nAlice@Example.com,combo-2019,2019-01-07\nalice@example.com,forum,2021-03-01\nbob+shop@mx1.example.org,shop,2020-05-05\n"
                .as_bytes(),
        )
        .unwrap();
        let m = LeakLookup::new(db);
        let out = m
            .run(&task(json!({"emails": ["alice@example.com", "ALICE@example.com", "carol@example.net"], "image": "ab"})))
            .unwrap();
        let l = leaks(&out);
        assert_eq!(l.len(), 1, "{out:?}");
        assert_eq!(out[0].port, Some(5900));
        assert_eq!(out[0].kind, "leak");
        assert_eq!(l[0].email, "alice@example.com");
        assert_eq!(l[0].source, "combo-2019");
        assert_eq!(l[0].date, "2019-01-07");
        assert_eq!(l[0].leaks.len(), 2);
        assert_eq!(l[0].image.as_deref(), Some("ab"));
        assert_eq!(l[0].read_as, None);
        // the stored document is the typed payload's
        assert_eq!(
            Payload::parse(&out[0].kind, &out[0].data).payload,
            out[0].parsed.payload
        );
        // OCR read `+` as `t` and `1` as `l`: still the known address, with what was read
        let fuzzy = leaks(
            &m.run(&task(
                json!({"emails": ["bobtshop@mxl.example.org", "bob+shop@mx1.example.org"]}),
            ))
            .unwrap(),
        );
        assert_eq!(fuzzy.len(), 1, "two readings of one address: {fuzzy:?}");
        assert_eq!(fuzzy[0].email, "bob+shop@mx1.example.org");
        assert_eq!(
            fuzzy[0].read_as.as_deref(),
            Some("bobtshop@mxl.example.org")
        );
        assert!(
            m.run(&task(json!({"emails": ["carol@example.net"]})))
                .unwrap()
                .is_empty()
        );
        assert!(m.run(&task(json!({}))).is_err());
        assert!(m.run(&task(json!({"emails": [1]}))).is_err());
        let many: Vec<String> = (0..=MAX_EMAILS)
            .map(|i| format!("u{i}@x.example"))
            .collect();
        assert!(
            m.run(&task(json!({ "emails": many })))
                .unwrap_err()
                .contains("cap")
        );
    }

    #[test]
    fn only_leak_runs_here() {
        assert!(runs_here("leak"));
        assert!(!runs_here("enrich") && !runs_here("service"));
    }
}
