//! TLS observation: complete the handshake without verifying anything (we observe, we do not
//! trust) and record the certificate chain, protocol version and cipher.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use x509_parser::prelude::*;

use super::io::{DialError, Recording, connect_tcp};

/// What the TLS handshake showed, and one certificate of its chain: the finding schema's records.
pub use overlord_core::finding::service::{Certificate, Tls};

#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The shared client configuration (ring provider, TLS 1.2 and 1.3, no verification).
pub fn client_config() -> Arc<ClientConfig> {
    static CFG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CFG.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
            .with_no_client_auth();
        Arc::new(cfg)
    })
    .clone()
}

/// Outcome of a TLS handshake attempt, with hints about the peer when it failed.
pub struct TlsAttempt {
    pub result: Result<(TlsStream<Recording<tokio::net::TcpStream>>, Tls), DialError>,
    /// The peer answered with something that looks like a TLS record (so it speaks TLS even if
    /// the handshake failed).
    pub peer_speaks_tls: bool,
    /// The peer sent back exactly what we sent (an echo service, not TLS).
    pub echoed: bool,
    pub byte_capped: bool,
}

/// Connects and runs a TLS handshake bounded by `limit` and `cap` bytes from the server.
pub async fn handshake(
    addr: SocketAddr,
    sni: Option<&str>,
    connect_limit: Duration,
    limit: Duration,
    cap: usize,
) -> TlsAttempt {
    let tcp = match connect_tcp(addr, connect_limit).await {
        Ok(s) => s,
        Err(e) => {
            return TlsAttempt {
                result: Err(e),
                peer_speaks_tls: false,
                echoed: false,
                byte_capped: false,
            };
        }
    };
    let rec_stream = Recording::new(tcp, cap);
    let rec = rec_stream.rec.clone();
    let name = match sni.and_then(|s| ServerName::try_from(s.to_string()).ok()) {
        Some(n) => n,
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let connector = TlsConnector::from(client_config());
    let res = timeout(limit, connector.connect(name, rec_stream)).await;
    let r = rec.lock().unwrap_or_else(|e| e.into_inner());
    let echoed = !r.first_read.is_empty() && r.first_written.starts_with(&r.first_read);
    let peer_speaks_tls = !echoed
        && r.first_read.len() >= 2
        && (0x14..=0x17).contains(&r.first_read[0])
        && r.first_read[1] == 3;
    let byte_capped = r.capped;
    let handshake_bytes = r.read;
    drop(r);
    let result = match res {
        Err(_) => Err(DialError::Tls(format!(
            "handshake timed out after {limit:?}"
        ))),
        Ok(Err(e)) if byte_capped => Err(DialError::Tls(format!(
            "handshake exceeded {cap} bytes (certificate chain too large?): {e}"
        ))),
        Ok(Err(e)) => Err(DialError::Tls(e.to_string())),
        Ok(Ok(stream)) => {
            let info = describe(&stream, handshake_bytes);
            Ok((stream, info))
        }
    };
    TlsAttempt {
        result,
        peer_speaks_tls,
        echoed,
        byte_capped,
    }
}

fn describe<S>(stream: &TlsStream<S>, handshake_bytes: usize) -> Tls {
    let (_, conn) = stream.get_ref();
    Tls {
        version: conn
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        cipher: conn
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default(),
        alpn: conn
            .alpn_protocol()
            .map(|a| String::from_utf8_lossy(a).into_owned()),
        chain: conn
            .peer_certificates()
            .unwrap_or(&[])
            .iter()
            .map(|c| cert_info(c.as_ref()))
            .collect(),
        handshake_bytes: handshake_bytes as u64,
    }
}

/// Describes one DER certificate.
pub fn cert_info(der: &[u8]) -> Certificate {
    let sha256 = hex(&Sha256::digest(der));
    match X509Certificate::from_der(der) {
        Ok((_, c)) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let not_after = c.validity().not_after.timestamp();
            let mut sans = Vec::new();
            if let Ok(Some(ext)) = c.subject_alternative_name() {
                for n in &ext.value.general_names {
                    match n {
                        GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                        GeneralName::IPAddress(ip) => sans.push(match ip.len() {
                            4 => format!(
                                "IP:{}",
                                std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])
                            ),
                            16 => {
                                let mut a = [0u8; 16];
                                a.copy_from_slice(ip);
                                format!("IP:{}", std::net::Ipv6Addr::from(a))
                            }
                            _ => format!("IP:{}", hex(ip)),
                        }),
                        GeneralName::RFC822Name(e) => sans.push(format!("email:{e}")),
                        GeneralName::URI(u) => sans.push(format!("URI:{u}")),
                        other => sans.push(format!("{other:?}")),
                    }
                }
            }
            let self_signed = c.subject() == c.issuer() && c.verify_signature(None).is_ok();
            Certificate {
                subject: c.subject().to_string(),
                issuer: c.issuer().to_string(),
                sans,
                serial: c.raw_serial_as_string(),
                not_before: c.validity().not_before.timestamp(),
                not_after,
                expired: not_after < now,
                self_signed,
                sha256,
                signature_algorithm: c.signature_algorithm.algorithm.to_id_string(),
                parse_error: None,
            }
        }
        Err(e) => Certificate {
            sha256,
            parse_error: Some(e.to_string()),
            ..Default::default()
        },
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}
