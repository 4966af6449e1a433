//! `overlord minion enroll`: a key made here, a CSR sent with the one-time join token over TLS
//! (the coordinator verified against the cluster CA), the certificate written beside the key.

use anyhow::{Context, Result, anyhow, bail};
use overlord_proto::v1;
use std::path::Path;
use std::time::Duration;

/// Enrolls; returns a human summary naming the files and the `[tls]` section to add.
pub async fn enroll(coordinator: &str, join_token: &str, ca: &Path, out: &Path) -> Result<String> {
    if !coordinator.starts_with("https://") {
        bail!("enrollment only over TLS: the coordinator URL must be https:// (got {coordinator})");
    }
    let ca_pem = std::fs::read_to_string(ca)
        .with_context(|| format!("cannot read CA certificate {}", ca.display()))?;
    let ch = tonic::transport::Endpoint::from_shared(coordinator.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&ca_pem)),
        )?
        .connect()
        .await
        .with_context(|| format!("cannot reach coordinator at {coordinator}"))?;
    let csr = overlord_coordinator::security::pki::make_csr()?;
    let r = v1::enroll_service_client::EnrollServiceClient::new(ch)
        .enroll(v1::EnrollRequest {
            join_token: join_token.trim().to_string(),
            csr_pem: csr.cert_pem,
        })
        .await
        .map_err(|s| anyhow!("enrollment refused: {} ({:?})", s.message(), s.code()))?
        .into_inner();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let write = |name: &str, text: &str, secret: bool| -> Result<()> {
        use std::io::Write;
        let p = out.join(name);
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        o.open(&p)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .with_context(|| format!("cannot write {}", p.display()))
    };
    write("minion.key", &csr.key_pem, true)?;
    write("minion.pem", &r.cert_pem, false)?;
    write("ca.pem", &r.ca_pem, false)?;
    Ok(format!(
        "enrolled minion {} (provider {}); add to its config:\nid = \"{}\"\nprovider = \"{}\"\ncoordinator = \"{coordinator}\"\n[tls]\nca = \"{d}/ca.pem\"\ncert = \"{d}/minion.pem\"\nkey = \"{d}/minion.key\"",
        r.minion_id,
        r.provider,
        r.minion_id,
        r.provider,
        d = out.display()
    ))
}
