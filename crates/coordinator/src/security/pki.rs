//! The cluster CA: `overlord ca init` makes it, `overlord ca join-token` adds one-time join
//! tokens, the coordinator's `EnrollService` turns a token + CSR into a minion certificate, and
//! `overlord ca revoke` lists a minion's certificates as revoked (the coordinator re-reads the list
//! every [`REVOCATION_POLL`] and closes their sessions).
//!
//! Files in the CA directory (all written by this module):
//! - `ca.pem`, `ca.key` (0600): the CA.
//! - `server.pem`, `server.key` (0600): the coordinator's TLS identity (SANs from `ca init --san`).
//! - `join-tokens.json`: `[{id, sha256, minion_id, provider, expires_ms, used}]` (secrets hashed).
//! - `issued.jsonl`: one `{serial, minion_id, provider, issued_ms}` per certificate issued.
//! - `revoked.txt`: one revoked serial (hex) per line.
//!
//! A minion's identity is in its certificate as the SAN URI `urn:overlord:minion:<provider>:<id>`
//! (CN = id for people); the coordinator reads it from the verified client certificate and never
//! from the Register message.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// How often the coordinator re-reads `revoked.txt`.
pub const REVOCATION_POLL: Duration = Duration::from_millis(500);
const URI_PREFIX: &str = "urn:overlord:minion:";
/// Validity of a minion certificate.
const MINION_CERT_DAYS: i64 = 365;
/// Largest CSR accepted (a P-256 CSR is ~400 bytes).
pub const MAX_CSR_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("join token refused: {0}")]
    Token(&'static str),
    #[error("certificate: {0}")]
    Cert(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn cert_err(e: impl std::fmt::Display) -> PkiError {
    PkiError::Cert(e.to_string())
}

/// Writes `bytes` to `path` atomically (temp file + rename), mode 0600 when `secret`.
fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), PkiError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(io(path))
}

fn now_ms() -> u64 {
    overlord_core::now_ms()
}

fn random_serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    b[0] &= 0x7f; // positive
    b[0] |= 0x01; // no leading zero byte
    SerialNumber::from_slice(&b)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha256_hex(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes()))
}

/// The paths of a CA directory.
#[derive(Clone, Debug)]
pub struct CaDir(pub PathBuf);

impl CaDir {
    pub fn ca_pem(&self) -> PathBuf {
        self.0.join("ca.pem")
    }
    fn ca_key(&self) -> PathBuf {
        self.0.join("ca.key")
    }
    pub fn server_pem(&self) -> PathBuf {
        self.0.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.0.join("server.key")
    }
    fn tokens(&self) -> PathBuf {
        self.0.join("join-tokens.json")
    }
    fn issued(&self) -> PathBuf {
        self.0.join("issued.jsonl")
    }
    pub fn revoked(&self) -> PathBuf {
        self.0.join("revoked.txt")
    }
}

/// `overlord ca init`: a new CA and a server certificate for `sans` (IPs and DNS names the
/// coordinator is reached at). Refuses to overwrite an existing CA.
pub fn init(dir: &Path, sans: &[String]) -> Result<(), PkiError> {
    let d = CaDir(dir.to_path_buf());
    if d.ca_key().exists() {
        return Err(PkiError::Invalid(format!(
            "{} already holds a CA; remove it first to make a new one (every minion must then re-enroll)",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let ca_key = KeyPair::generate().map_err(cert_err)?;
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Overlord cluster CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.serial_number = Some(random_serial());
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(3650);
    let ca = p.self_signed(&ca_key).map_err(cert_err)?;
    let sans = if sans.is_empty() {
        vec!["127.0.0.1".into(), "::1".into(), "localhost".into()]
    } else {
        sans.to_vec()
    };
    let skey = KeyPair::generate().map_err(cert_err)?;
    let mut sp = CertificateParams::new(sans).map_err(cert_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "overlord-coordinator");
    sp.distinguished_name = dn;
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sp.serial_number = Some(random_serial());
    sp.not_before = now - time::Duration::hours(1);
    sp.not_after = now + time::Duration::days(825);
    let server = sp.signed_by(&skey, &ca, &ca_key).map_err(cert_err)?;
    write_file(&d.ca_key(), ca_key.serialize_pem().as_bytes(), true)?;
    write_file(&d.ca_pem(), ca.pem().as_bytes(), false)?;
    write_file(&d.server_key(), skey.serialize_pem().as_bytes(), true)?;
    write_file(&d.server_pem(), server.pem().as_bytes(), false)?;
    write_file(&d.tokens(), b"[]", true)?;
    write_file(&d.revoked(), b"", false)?;
    Ok(())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRecord {
    id: String,
    sha256: String,
    minion_id: String,
    provider: String,
    expires_ms: u64,
    used: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuedRecord {
    serial: String,
    minion_id: String,
    provider: String,
    issued_ms: u64,
}

fn load_tokens(d: &CaDir) -> Result<Vec<TokenRecord>, PkiError> {
    let path = d.tokens();
    let text = read(&path)?;
    serde_json::from_str(&text).map_err(|e| PkiError::Invalid(format!("{}: {e}", path.display())))
}

fn save_tokens(d: &CaDir, t: &[TokenRecord]) -> Result<(), PkiError> {
    let bytes = serde_json::to_vec_pretty(t).map_err(|e| PkiError::Invalid(e.to_string()))?;
    write_file(&d.tokens(), &bytes, true)
}

/// `overlord ca join-token`: a one-time token for enrolling minion `minion_id` of `provider`,
/// valid for `ttl`. Returns the token (`<id>.<secret>`); only its hash is kept.
pub fn new_join_token(
    dir: &Path,
    minion_id: &str,
    provider: &str,
    ttl: Duration,
) -> Result<String, PkiError> {
    use overlord_core::security::{RESERVED_MINION_IDS, valid_name};
    for (what, v) in [("minion id", minion_id), ("provider", provider)] {
        if !valid_name(v) {
            return Err(PkiError::Invalid(format!(
                "{what} {v:?} must be 1-64 chars of A-Z a-z 0-9 . _ -"
            )));
        }
    }
    if RESERVED_MINION_IDS.contains(&minion_id) {
        return Err(PkiError::Invalid(format!(
            "minion id {minion_id:?} is reserved for the coordinator"
        )));
    }
    let d = CaDir(dir.to_path_buf());
    let mut tokens = load_tokens(&d)?;
    let id = hex(&rand::random::<[u8; 6]>());
    let secret = hex(&rand::random::<[u8; 24]>());
    tokens.push(TokenRecord {
        id: id.clone(),
        sha256: sha256_hex(&secret),
        minion_id: minion_id.into(),
        provider: provider.into(),
        expires_ms: now_ms() + ttl.as_millis() as u64,
        used: false,
    });
    save_tokens(&d, &tokens)?;
    Ok(format!("{id}.{secret}"))
}

/// `overlord ca revoke`: revokes every certificate issued to `minion_id`. Returns how many.
pub fn revoke(dir: &Path, minion_id: &str) -> Result<usize, PkiError> {
    let d = CaDir(dir.to_path_buf());
    let issued = read(&d.issued()).unwrap_or_default();
    let mut revoked: Vec<String> = read(&d.revoked())
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let mut n = 0;
    for line in issued.lines().filter(|l| !l.trim().is_empty()) {
        let r: IssuedRecord = serde_json::from_str(line)
            .map_err(|e| PkiError::Invalid(format!("{}: {e}", d.issued().display())))?;
        if r.minion_id == minion_id && !revoked.contains(&r.serial) {
            revoked.push(r.serial);
            n += 1;
        }
    }
    let mut text = revoked.join("\n");
    text.push('\n');
    write_file(&d.revoked(), text.as_bytes(), false)?;
    Ok(n)
}

/// The revoked serials (hex), read from `revoked.txt`.
pub fn load_revoked(dir: &Path) -> HashSet<String> {
    read(&CaDir(dir.to_path_buf()).revoked())
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_ascii_lowercase())
        .filter(|l| !l.is_empty())
        .collect()
}

/// A minion's identity, as its certificate states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinionIdentity {
    pub minion_id: String,
    pub provider: String,
    /// Certificate serial (hex), for revocation.
    pub serial: String,
}

/// Reads the identity out of a (TLS-verified) client certificate.
pub fn identity(der: &[u8]) -> Result<MinionIdentity, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(cert_err)?;
    let serial = hex(cert.raw_serial()).trim_start_matches("00").to_string();
    let san = cert
        .subject_alternative_name()
        .map_err(cert_err)?
        .ok_or_else(|| PkiError::Cert("client certificate has no subjectAltName".into()))?;
    for n in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(u) = n
            && let Some(rest) = u.strip_prefix(URI_PREFIX)
            && let Some((provider, id)) = rest.split_once(':')
        {
            return Ok(MinionIdentity {
                minion_id: id.to_string(),
                provider: provider.to_string(),
                serial,
            });
        }
    }
    Err(PkiError::Cert(
        "client certificate names no Overlord minion (no urn:overlord:minion: SAN)".into(),
    ))
}

/// The DER bytes of the first PEM block.
pub fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .ok()
        .map(|(_, p)| p.contents)
}

/// A certificate and its key, PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Makes a key pair and a CSR for `overlord minion enroll` (the key stays with the minion).
pub fn make_csr() -> Result<Issued, PkiError> {
    let key = KeyPair::generate().map_err(cert_err)?;
    let csr = CertificateParams::new(Vec::<String>::new())
        .map_err(cert_err)?
        .serialize_request(&key)
        .map_err(cert_err)?
        .pem()
        .map_err(cert_err)?;
    Ok(Issued {
        cert_pem: csr,
        key_pem: key.serialize_pem(),
    })
}

/// The loaded CA, held by a coordinator that enrolls minions.
pub struct Ca {
    dir: CaDir,
    pub ca_pem: String,
    ca: rcgen::Certificate,
    key: KeyPair,
    /// Serialises token use (one-time) and the issued log.
    lock: Mutex<()>,
}

impl Ca {
    pub fn load(dir: &Path) -> Result<Ca, PkiError> {
        let d = CaDir(dir.to_path_buf());
        let ca_pem = read(&d.ca_pem())?;
        let key = KeyPair::from_pem(&read(&d.ca_key())?).map_err(cert_err)?;
        let ca = CertificateParams::from_ca_cert_pem(&ca_pem)
            .map_err(cert_err)?
            .self_signed(&key)
            .map_err(cert_err)?;
        Ok(Ca {
            dir: d,
            ca_pem,
            ca,
            key,
            lock: Mutex::new(()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    fn minion_params(
        &self,
        minion_id: &str,
        provider: &str,
    ) -> Result<CertificateParams, PkiError> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, minion_id);
        dn.push(DnType::OrganizationalUnitName, provider);
        p.distinguished_name = dn;
        p.subject_alt_names = vec![SanType::URI(
            format!("{URI_PREFIX}{provider}:{minion_id}")
                .try_into()
                .map_err(cert_err)?,
        )];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.serial_number = Some(random_serial());
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(MINION_CERT_DAYS);
        Ok(p)
    }

    fn log_issued(&self, serial: &[u8], minion_id: &str, provider: &str) -> Result<(), PkiError> {
        use std::io::Write;
        let path = self.dir.issued();
        let rec = IssuedRecord {
            serial: hex(serial).trim_start_matches("00").to_string(),
            minion_id: minion_id.into(),
            provider: provider.into(),
            issued_ms: now_ms(),
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let line = serde_json::to_string(&rec).map_err(|e| PkiError::Invalid(e.to_string()))?;
        writeln!(f, "{line}")
            .and_then(|_| f.sync_all())
            .map_err(io(&path))
    }

    /// Enrollment: checks and consumes `token`, signs the CSR's key into a certificate for the
    /// token's minion id and provider. Returns (cert PEM, minion id, provider).
    pub fn enroll(&self, token: &str, csr_pem: &str) -> Result<(String, String, String), PkiError> {
        if csr_pem.len() > MAX_CSR_BYTES {
            return Err(PkiError::Invalid(format!(
                "CSR is {} bytes; at most {MAX_CSR_BYTES}",
                csr_pem.len()
            )));
        }
        let (id, secret) = token
            .split_once('.')
            .ok_or(PkiError::Token("malformed (expected <id>.<secret>)"))?;
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::Invalid(format!("bad CSR: {e}")))?;
        let _g = self.lock.lock().expect("ca lock");
        let mut tokens = load_tokens(&self.dir)?;
        let t = tokens
            .iter_mut()
            .find(|t| t.id == id)
            .ok_or(PkiError::Token("unknown token"))?;
        if t.sha256 != sha256_hex(secret) {
            return Err(PkiError::Token("unknown token"));
        }
        if t.used {
            return Err(PkiError::Token("already used (join tokens are one-time)"));
        }
        if now_ms() > t.expires_ms {
            return Err(PkiError::Token("expired"));
        }
        t.used = true;
        let (minion_id, provider) = (t.minion_id.clone(), t.provider.clone());
        save_tokens(&self.dir, &tokens)?;
        // The identity comes from the token; whatever the CSR asked for is replaced.
        csr.params = self.minion_params(&minion_id, &provider)?;
        let serial = csr.params.serial_number.clone().expect("set").to_bytes();
        let cert = csr.signed_by(&self.ca, &self.key).map_err(cert_err)?;
        self.log_issued(&serial, &minion_id, &provider)?;
        Ok((cert.pem(), minion_id, provider))
    }

    /// A certificate for the coordinator's own in-process minion (reserved id; never logged as
    /// enrollable, never revocable by `ca revoke` of an ordinary id).
    pub fn issue_internal(&self, minion_id: &str, provider: &str) -> Result<Issued, PkiError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = self
            .minion_params(minion_id, provider)?
            .signed_by(&key, &self.ca, &self.key)
            .map_err(cert_err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enroll_consumes_the_token_and_the_certificate_names_the_token_identity() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &[]).unwrap();
        assert!(init(dir.path(), &[]).is_err(), "no silent overwrite");
        let tok = new_join_token(dir.path(), "minion-a", "lab-a", Duration::from_secs(60)).unwrap();
        assert!(
            new_join_token(
                dir.path(),
                "coordinator-lookup",
                "x",
                Duration::from_secs(60)
            )
            .is_err()
        );
        let ca = Ca::load(dir.path()).unwrap();
        let csr = make_csr().unwrap();
        let (pem, id, provider) = ca.enroll(&tok, &csr.cert_pem).unwrap();
        assert_eq!((id.as_str(), provider.as_str()), ("minion-a", "lab-a"));
        let der = pem_to_der(&pem).unwrap();
        let ident = identity(&der).unwrap();
        assert_eq!(ident.minion_id, "minion-a");
        assert_eq!(ident.provider, "lab-a");
        // One-time.
        let e = ca.enroll(&tok, &make_csr().unwrap().cert_pem).unwrap_err();
        assert!(e.to_string().contains("already used"), "{e}");
        // A forged secret for a known id.
        let (tid, _) = tok.split_once('.').unwrap();
        let e = ca
            .enroll(&format!("{tid}.00"), &make_csr().unwrap().cert_pem)
            .unwrap_err();
        assert!(e.to_string().contains("unknown token"), "{e}");
        // Revocation lists this certificate's serial.
        assert!(load_revoked(dir.path()).is_empty());
        assert_eq!(revoke(dir.path(), "minion-a").unwrap(), 1);
        assert!(load_revoked(dir.path()).contains(&ident.serial));
        assert_eq!(revoke(dir.path(), "minion-a").unwrap(), 0, "idempotent");
    }

    #[test]
    fn expired_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &[]).unwrap();
        let tok = new_join_token(dir.path(), "m", "p", Duration::ZERO).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let ca = Ca::load(dir.path()).unwrap();
        let e = ca.enroll(&tok, &make_csr().unwrap().cert_pem).unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
    }
}
