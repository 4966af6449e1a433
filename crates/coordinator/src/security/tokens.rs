//! Client API tokens: a TOML file of hashed tokens with roles and owners (`overlord token add`
//! writes it), and [`Authn`], the wrapper that checks every client call's `authorization: Bearer`
//! header against it before the handler runs. The role decision is
//! `overlord_core::security::permits`; ownership checks happen in the handlers
//! (`overlord_core::security::may_access`) with the [`Principal`] this layer puts in the request.

use overlord_core::security::{Action, Role, permits};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use tonic::Status;
use tonic::codegen::http;

/// Who is calling (put in the request's extensions by [`Authn`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// Jobs it submits belong to this owner; it sees only this owner's objects unless admin.
    pub owner: String,
}

impl Principal {
    /// The caller when no tokens are configured (a loopback-only coordinator): full rights,
    /// owner "" (jobs stay ownerless).
    pub fn anonymous() -> Self {
        Principal {
            name: "anonymous".into(),
            role: Role::Admin,
            owner: String::new(),
        }
    }
}

/// The caller of a request that went through [`Authn`] (anonymous admin when the layer is off).
pub fn principal<T>(req: &tonic::Request<T>) -> Principal {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(Principal::anonymous)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    /// Format version; must be 1.
    pub version: u32,
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    /// admin | operator | viewer
    pub role: String,
    /// Owner of the jobs this token submits (default: the token's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// sha256 of the token, hex.
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("token file {path}: {reason}")]
    Invalid { path: String, reason: String },
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The loaded tokens, by hash.
#[derive(Clone, Debug, Default)]
pub struct Tokens(Arc<HashMap<String, Principal>>);

impl Tokens {
    pub fn load(path: &Path) -> Result<Tokens, TokenError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: shown.clone(),
            source,
        })?;
        let f: TokenFile = toml::from_str(&text).map_err(|e| TokenError::Invalid {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        Self::from_file(&f).map_err(|reason| TokenError::Invalid {
            path: shown,
            reason,
        })
    }

    pub fn from_file(f: &TokenFile) -> Result<Tokens, String> {
        if f.version != 1 {
            return Err(format!("unsupported version {} (expected 1)", f.version));
        }
        let mut m = HashMap::new();
        for t in &f.tokens {
            let role = Role::parse(&t.role).ok_or_else(|| {
                format!(
                    "token {:?}: role {:?} must be admin, operator or viewer",
                    t.name, t.role
                )
            })?;
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("token {:?}: sha256 must be 64 hex digits", t.name));
            }
            let p = Principal {
                name: t.name.clone(),
                role,
                owner: t.owner.clone().unwrap_or_else(|| t.name.clone()),
            };
            if m.insert(t.sha256.to_ascii_lowercase(), p).is_some() {
                return Err(format!("token {:?} appears twice", t.name));
            }
        }
        if m.is_empty() {
            return Err("no [[token]] entries (add one with `overlord token add`)".into());
        }
        Ok(Tokens(Arc::new(m)))
    }

    pub fn find(&self, token: &str) -> Option<&Principal> {
        self.0.get(&sha256_hex(token))
    }
}

/// `overlord token add`: appends a new token to `path` (created if missing) and returns it.
pub fn add_token(
    path: &Path,
    name: &str,
    role: Role,
    owner: Option<&str>,
) -> Result<String, TokenError> {
    let shown = path.display().to_string();
    let mut f = if path.exists() {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: shown.clone(),
            source,
        })?;
        toml::from_str::<TokenFile>(&text).map_err(|e| TokenError::Invalid {
            path: shown.clone(),
            reason: e.to_string(),
        })?
    } else {
        TokenFile {
            version: 1,
            tokens: vec![],
        }
    };
    if f.tokens.iter().any(|t| t.name == name) {
        return Err(TokenError::Invalid {
            path: shown,
            reason: format!("a token named {name:?} exists already"),
        });
    }
    let token = format!(
        "ovl_{}",
        rand::random::<[u8; 24]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    f.tokens.push(TokenEntry {
        name: name.into(),
        role: role.name().into(),
        owner: owner.map(str::to_string),
        sha256: sha256_hex(&token),
    });
    let text = toml::to_string(&f).map_err(|e| TokenError::Invalid {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut fh = o.open(&tmp)?;
        fh.write_all(text.as_bytes())?;
        fh.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| TokenError::Read {
        path: shown,
        source,
    })?;
    Ok(token)
}

/// What a client-API method does: `None` for a method this table does not know (admins only,
/// so a new mutating RPC is never open to viewers by accident).
pub fn action_of(path: &str) -> Option<Action> {
    let method = path.rsplit('/').next().unwrap_or("");
    match method {
        "SubmitJob" => Some(Action::Submit),
        "CancelJob" => Some(Action::Cancel),
        m if [
            "Get", "List", "Watch", "Search", "Similar", "Stats", "Host", "Diff", "Query",
        ]
        .iter()
        .any(|p| m.starts_with(p)) =>
        {
            Some(Action::Read)
        }
        "ServerReflectionInfo" => Some(Action::Read),
        _ => None,
    }
}

/// The status for a call that `tokens` refuses, or the caller. `header`: the `authorization`
/// header's value.
pub fn authenticate(
    tokens: &Tokens,
    header: Option<&str>,
    path: &str,
) -> Result<Principal, Status> {
    let token = match header.and_then(|h| h.strip_prefix("Bearer ")) {
        Some(t) => t.trim(),
        None => {
            return Err(Status::unauthenticated(
                "this coordinator requires an API token: pass --token-file FILE or set OVERLORD_TOKEN (tokens come from `overlord token add`)",
            ));
        }
    };
    let p = tokens
        .find(token)
        .ok_or_else(|| Status::unauthenticated("unknown API token"))?;
    let ok = match action_of(path) {
        Some(a) => permits(p.role, a),
        None => p.role == Role::Admin,
    };
    if !ok {
        let what = action_of(path)
            .map(Action::name)
            .unwrap_or("call this method");
        return Err(Status::permission_denied(format!(
            "token {:?} (role {}) may not {what}",
            p.name,
            p.role.name()
        )));
    }
    Ok(p.clone())
}

/// Wraps a client-API service: every request must carry a valid token whose role permits the
/// method; the caller goes into the request's extensions. `tokens: None` → anonymous admin.
#[derive(Clone)]
pub struct Authn<S> {
    inner: S,
    tokens: Option<Tokens>,
}

impl<S> Authn<S> {
    pub fn new(inner: S, tokens: Option<Tokens>) -> Self {
        Authn { inner, tokens }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Authn<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tonic::codegen::Service<http::Request<B>> for Authn<S>
where
    S: tonic::codegen::Service<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let who = match &self.tokens {
            None => Ok(Principal::anonymous()),
            Some(t) => authenticate(
                t,
                req.headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok()),
                req.uri().path(),
            ),
        };
        match who {
            Ok(p) => {
                req.extensions_mut().insert(p);
                let fut = self.inner.call(req);
                Box::pin(fut)
            }
            Err(st) => Box::pin(async move { Ok(st.into_http()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_role_and_method() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tokens.toml");
        let admin = add_token(&f, "root", Role::Admin, None).unwrap();
        let op = add_token(&f, "alice", Role::Operator, Some("team-a")).unwrap();
        let view = add_token(&f, "bob", Role::Viewer, Some("team-a")).unwrap();
        assert!(
            add_token(&f, "bob", Role::Viewer, None).is_err(),
            "duplicate name"
        );
        let t = Tokens::load(&f).unwrap();
        let submit = "/overlord.v1.JobService/SubmitJob";
        let list = "/overlord.v1.JobService/ListJobs";
        let bearer = |s: &str| format!("Bearer {s}");
        let code =
            |r: Result<Principal, Status>| r.map(|_| tonic::Code::Ok).unwrap_or_else(|s| s.code());
        assert_eq!(
            code(authenticate(&t, None, list)),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            code(authenticate(&t, Some("Bearer nope"), list)),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            code(authenticate(&t, Some(&bearer(&view)), submit)),
            tonic::Code::PermissionDenied
        );
        let p = authenticate(&t, Some(&bearer(&view)), list).unwrap();
        assert_eq!((p.role, p.owner.as_str()), (Role::Viewer, "team-a"));
        let p = authenticate(&t, Some(&bearer(&op)), submit).unwrap();
        assert_eq!((p.name.as_str(), p.owner.as_str()), ("alice", "team-a"));
        let p = authenticate(&t, Some(&bearer(&admin)), "/x.Y/DeleteEverything").unwrap();
        assert_eq!(p.owner, "root");
        assert_eq!(
            code(authenticate(
                &t,
                Some(&bearer(&op)),
                "/x.Y/DeleteEverything"
            )),
            tonic::Code::PermissionDenied,
            "unknown methods are admin-only"
        );
        // Only hashes are stored.
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(!text.contains(&op[4..]), "{text}");
    }

    #[test]
    fn a_bad_token_file_is_refused_precisely() {
        let bad = |s: &str| {
            let f: TokenFile = toml::from_str(s).unwrap();
            Tokens::from_file(&f).unwrap_err()
        };
        assert!(bad("version = 2\n").contains("version 2"));
        assert!(bad("version = 1\n").contains("no [[token]]"));
        let e = bad("version = 1\n[[token]]\nname = \"a\"\nrole = \"root\"\nsha256 = \"00\"\n");
        assert!(e.contains("role \"root\""), "{e}");
        assert!(toml::from_str::<TokenFile>("version = 1\nbogus = 1\n").is_err());
    }
}
