//! Transport security and identity: the cluster CA and minion enrollment ([`pki`]), client API
//! tokens ([`tokens`]), minion session identity and revocation ([`sessions`]), connection
//! deadlines below gRPC ([`conn`]), and the TLS/listener settings ([`TlsSettings`]).

pub mod conn;
pub mod enroll;
pub mod pki;
pub mod sessions;
pub mod tokens;

use std::path::PathBuf;

/// `[tls]` of the coordinator config, validated.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// The CA directory made by `overlord ca init` (CA, server identity, join tokens, revocations).
    pub ca_dir: PathBuf,
}

impl TlsSettings {
    /// tonic's server TLS config: the server identity; client certificates verified against the
    /// CA and optional at the TLS layer (clients use tokens; enrollment has no certificate yet),
    /// required by the minion service itself.
    pub fn server_config(
        &self,
        handshake: std::time::Duration,
    ) -> Result<tonic::transport::ServerTlsConfig, String> {
        let d = pki::CaDir(self.ca_dir.clone());
        let read = |p: PathBuf| {
            std::fs::read(&p).map_err(|e| {
                format!(
                    "{}: {e} (make the CA with `overlord ca init --dir {}`)",
                    p.display(),
                    self.ca_dir.display()
                )
            })
        };
        let cert = read(d.server_pem())?;
        let key = read(d.server_key())?;
        let ca = read(d.ca_pem())?;
        Ok(tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert, key))
            .client_ca_root(tonic::transport::Certificate::from_pem(ca))
            .client_auth_optional(true)
            .timeout(handshake))
    }
}
