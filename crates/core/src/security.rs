//! Security decisions, pure and unit-tested: what an API role may do and see, whether a minion
//! session may start (identity reserved? an id already live?), whether a file input stays inside
//! a minion's input directory, and how much of an untrusted string an error may echo.
//!
//! The coordinator's gRPC layer (`crates/coordinator/src/security/`) and the minion's input
//! reader (`crates/minion/src/inputs.rs`) call these; they only do the I/O around them.

use std::path::{Component, Path, PathBuf};

/// A client API token's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads jobs, results and images of its owner.
    Viewer,
    /// Viewer + submits and cancels jobs of its owner.
    Operator,
    /// Everything, every owner's jobs.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// What a client call does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Read,
    Submit,
    Cancel,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Submit => "submit",
            Action::Cancel => "cancel",
        }
    }
}

/// Whether `role` may perform `action` at all (ownership is checked separately by [`may_access`]).
pub fn permits(role: Role, action: Action) -> bool {
    match action {
        Action::Read => true,
        Action::Submit | Action::Cancel => role >= Role::Operator,
    }
}

/// Whether a caller (`role`, `owner`) may touch an object owned by `object_owner`: admins see
/// everything; everyone else only their owner's objects. Objects made without tokens (empty
/// owner) belong to admins only once tokens are on.
pub fn may_access(role: Role, owner: &str, object_owner: &str) -> bool {
    role == Role::Admin || (!object_owner.is_empty() && owner == object_owner)
}

/// The jobs a caller (`role`, `owner`) may see among `jobs` (job id, its owner): `None` means
/// every job (admins), otherwise exactly the jobs [`may_access`] allows. Query answers and image
/// listings are restricted to this set; an image is visible when its job is.
pub fn visible_jobs<'a>(
    role: Role,
    owner: &str,
    jobs: impl IntoIterator<Item = (u64, &'a str)>,
) -> Option<std::collections::BTreeSet<u64>> {
    if role == Role::Admin {
        return None;
    }
    Some(
        jobs.into_iter()
            .filter(|(_, o)| may_access(role, owner, o))
            .map(|(j, _)| j)
            .collect(),
    )
}

/// Metadata key carrying the coordinator's in-process secret on its own lookup minion's session
/// (plaintext mode only; with TLS the reserved identity is in a certificate only the coordinator
/// issues).
pub const INTERNAL_HEADER: &str = "x-overlord-internal";

/// Minion ids no certificate is ever issued for and no session may claim: the coordinator's own
/// lookup work runs under them.
pub const RESERVED_MINION_IDS: &[&str] = &["coordinator-lookup", "coordinator"];
/// Modules only the coordinator runs (they read the coordinator's own data).
pub const RESERVED_MODULES: &[&str] = &["leak"];

/// Refuses a minion identity or module list that claims the coordinator's own work, unless the
/// session is the coordinator's internal one.
pub fn check_reserved(minion_id: &str, modules: &[String], internal: bool) -> Result<(), String> {
    if internal {
        return Ok(());
    }
    if RESERVED_MINION_IDS.contains(&minion_id) {
        return Err(format!(
            "minion id {minion_id:?} is reserved for the coordinator"
        ));
    }
    if let Some(m) = modules
        .iter()
        .find(|m| RESERVED_MODULES.contains(&m.as_str()))
    {
        return Err(format!(
            "module {m:?} runs only inside the coordinator; remove it from this minion's modules"
        ));
    }
    Ok(())
}

/// A minion id or provider name: 1-64 chars of `[A-Za-z0-9._-]` (it goes into certificates,
/// logs and metric labels).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What to do with a new session for a minion id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// No session for this id: admit.
    Admit,
    /// A session for this id was heard from within the liveness window: refuse the newcomer
    /// (a stolen key must not take over a working minion).
    RefuseLive,
    /// A session exists but has been silent longer than the window (the minion lost its
    /// connection and is back): close the old one, admit the new one.
    Displace,
}

/// `last_seen_ms`: when the existing session for this id last sent anything (None: no session).
pub fn admit_session(last_seen_ms: Option<u64>, now_ms: u64, live_within_ms: u64) -> Admission {
    match last_seen_ms {
        None => Admission::Admit,
        Some(t) if now_ms.saturating_sub(t) <= live_within_ms => Admission::RefuseLive,
        Some(_) => Admission::Displace,
    }
}

/// Why a file input is refused (never with the file's content).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("file inputs are disabled on this minion (set `input_dir` in its config)")]
    Disabled,
    #[error("input {0:?} is not a relative path inside the minion's input directory")]
    NotRelative(String),
    #[error("input {0:?} leaves the minion's input directory")]
    Escapes(String),
    #[error("input {0:?} is not a regular file")]
    NotRegular(String),
    #[error("input {name:?} is {size} bytes, over this module's limit of {limit}")]
    TooLarge { name: String, size: u64, limit: u64 },
    #[error("input {0:?} cannot be opened: {1}")]
    Unreadable(String, String),
}

/// Lexical check of an input name before touching the file system: relative, no `..`, no root,
/// no NUL, bounded length. `Ok` gives the name joined to `root`.
pub fn input_candidate(root: &Path, name: &str) -> Result<PathBuf, InputError> {
    let shown = clip(name, 128);
    if name.is_empty() || name.len() > 4096 || name.contains('\0') {
        return Err(InputError::NotRelative(shown));
    }
    let p = Path::new(name);
    let mut out = root.to_path_buf();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir => return Err(InputError::Escapes(shown)),
            Component::RootDir | Component::Prefix(_) => {
                // An absolute path is accepted only if it already lies under the root.
                match p.strip_prefix(root) {
                    Ok(rest) => return input_candidate(root, &rest.to_string_lossy()),
                    Err(_) => return Err(InputError::NotRelative(shown)),
                }
            }
        }
    }
    if out == root {
        return Err(InputError::NotRelative(shown));
    }
    Ok(out)
}

/// After canonicalisation (symlinks resolved): the file must still lie under the canonical root.
pub fn within(canon_root: &Path, canon_file: &Path) -> bool {
    canon_file.starts_with(canon_root) && canon_file != canon_root
}

/// Whether a retried submission (same request id) asks for the same job as the stored one:
/// everything the client chose must match (resolved ranges may differ with DNS, so they are not
/// compared), and the owner too — a request id never hands one owner another owner's job.
pub fn same_submission(stored: &crate::job::JobSpec, new: &crate::job::JobSpec) -> bool {
    stored.name == new.name
        && stored.targets == new.targets
        && stored.ports == new.ports
        && stored.modules == new.modules
        && stored.rate_limit == new.rate_limit
        && stored.inputs == new.inputs
        && stored.params == new.params
        && stored.owner == new.owner
}

/// At most `max` bytes of an untrusted string for an error message, cut at a char boundary,
/// with the total size named when cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…({} bytes)", &s[..end], s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_jobs_by_owner() {
        let jobs = [(1, "alice"), (2, "bob"), (3, ""), (4, "alice")];
        assert_eq!(visible_jobs(Role::Admin, "x", jobs), None);
        let v = |r, o| {
            visible_jobs(r, o, jobs)
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(v(Role::Viewer, "alice"), vec![1, 4]);
        assert_eq!(v(Role::Operator, "bob"), vec![2]);
        // ownerless jobs (made before tokens) are admin-only; an empty owner sees nothing
        assert_eq!(v(Role::Viewer, ""), Vec::<u64>::new());
        assert_eq!(v(Role::Viewer, "carol"), Vec::<u64>::new());
    }

    #[test]
    fn roles_permit_exactly_their_actions() {
        use Action::*;
        use Role::*;
        for (role, read, submit, cancel) in [
            (Viewer, true, false, false),
            (Operator, true, true, true),
            (Admin, true, true, true),
        ] {
            assert_eq!(permits(role, Read), read, "{role:?}");
            assert_eq!(permits(role, Submit), submit, "{role:?}");
            assert_eq!(permits(role, Cancel), cancel, "{role:?}");
        }
        assert_eq!(Role::parse("operator"), Some(Operator));
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn only_admins_see_other_owners_objects() {
        assert!(may_access(Role::Viewer, "team-a", "team-a"));
        assert!(!may_access(Role::Operator, "team-a", "team-b"));
        assert!(
            !may_access(Role::Operator, "", ""),
            "ownerless: admins only"
        );
        assert!(may_access(Role::Admin, "ops", "team-b"));
        assert!(may_access(Role::Admin, "ops", ""));
    }

    #[test]
    fn reserved_ids_and_modules_are_refused_outside_the_coordinator() {
        let m = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_reserved("coordinator-lookup", &m(&["noop"]), false).is_err());
        assert!(check_reserved("minion-a", &m(&["portscan", "leak"]), false).is_err());
        assert!(check_reserved("minion-a", &m(&["portscan"]), false).is_ok());
        assert!(check_reserved("coordinator-lookup", &m(&["leak"]), true).is_ok());
    }

    #[test]
    fn names_are_short_and_plain() {
        assert!(valid_name("minion-a.lab_1"));
        assert!(!valid_name(""));
        assert!(!valid_name("a:b"));
        assert!(!valid_name(&"a".repeat(65)));
    }

    #[test]
    fn a_live_id_is_refused_and_a_silent_one_displaced() {
        assert_eq!(admit_session(None, 10_000, 1000), Admission::Admit);
        assert_eq!(
            admit_session(Some(9_500), 10_000, 1000),
            Admission::RefuseLive
        );
        assert_eq!(
            admit_session(Some(9_000), 10_000, 1000),
            Admission::RefuseLive
        );
        assert_eq!(
            admit_session(Some(8_999), 10_000, 1000),
            Admission::Displace
        );
        // A clock step backwards counts as live, not as displaceable.
        assert_eq!(
            admit_session(Some(20_000), 10_000, 1000),
            Admission::RefuseLive
        );
    }

    #[test]
    fn input_names_stay_inside_the_root() {
        let root = Path::new("/srv/inputs");
        assert_eq!(
            input_candidate(root, "logs/conn.log").unwrap(),
            Path::new("/srv/inputs/logs/conn.log")
        );
        assert_eq!(
            input_candidate(root, "/srv/inputs/a.png").unwrap(),
            Path::new("/srv/inputs/a.png")
        );
        assert!(matches!(
            input_candidate(root, "../etc/shadow"),
            Err(InputError::Escapes(_))
        ));
        assert!(matches!(
            input_candidate(root, "a/../../b"),
            Err(InputError::Escapes(_))
        ));
        assert!(matches!(
            input_candidate(root, "/etc/shadow"),
            Err(InputError::NotRelative(_))
        ));
        assert!(matches!(
            input_candidate(root, "/srv/inputs-evil/x"),
            Err(InputError::NotRelative(_))
        ));
        assert!(input_candidate(root, "").is_err());
        assert!(input_candidate(root, ".").is_err());
        assert!(input_candidate(root, "a\0b").is_err());
        assert!(within(Path::new("/srv/in"), Path::new("/srv/in/a")));
        assert!(!within(Path::new("/srv/in"), Path::new("/srv/inx/a")));
        assert!(!within(Path::new("/srv/in"), Path::new("/srv/in")));
    }

    #[test]
    fn a_reused_request_id_must_carry_the_same_spec_and_owner() {
        let scope = crate::scope::Scope::loopback();
        let no_dns = |_: &str| -> Result<Vec<std::net::IpAddr>, String> { Err("no".into()) };
        let raw = |ports: &str| crate::job::RawSpec {
            targets: vec!["127.0.0.1".into()],
            ports: ports.into(),
            modules: vec!["portscan".into()],
            ..Default::default()
        };
        let a = crate::job::prepare(&raw("80"), &scope, &no_dns).unwrap();
        assert!(same_submission(&a, &a.clone()));
        let b = crate::job::prepare(&raw("81"), &scope, &no_dns).unwrap();
        assert!(!same_submission(&a, &b));
        let mut c = a.clone();
        c.owner = "other".into();
        assert!(!same_submission(&a, &c));
    }

    #[test]
    fn clip_cuts_at_a_char_boundary_and_names_the_size() {
        assert_eq!(clip("short", 10), "short");
        let s = "é".repeat(100);
        let c = clip(&s, 11);
        assert!(c.starts_with("ééééé…"), "{c}");
        assert!(c.ends_with("(200 bytes)"), "{c}");
    }
}
