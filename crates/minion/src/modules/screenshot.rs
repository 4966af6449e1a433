//! `screenshot`: a VNC (RFB) or X11 screenshot, or an RDP security probe, of the task's target
//! port(s) via `overlord_probes::screen`.
//!
//! Params: `protocol` ("vnc" | "x11" | "rdp"; default from the port: 6000–6063 → x11,
//! 3389 → rdp, else vnc), `settle_ms` (500: settle round timeout, 0 disables; see the
//! probes' `SettlePolicy`), `total_ms` (30000), `max_pixels` (7680*4320).
//!
//! Findings:
//! - `screenshot` (blob = PNG, ≤ 16 MiB): protocol, width, height, sha256, png_bytes and the
//!   capture's metadata (server version, desktop name, vendor, encodings, timings);
//! - `vnc_auth` / `x11_refused`: the server wants credentials (offered security types, reason);
//! - `rdp`: negotiated protocols and whether NLA is required;
//! - `screenshot_error`: the server answered but broke the protocol or a cap (hostile or odd
//!   servers are data too; not retried). Timeouts and resets are transient (retried).

use crate::module::{FindingOut, Module, ModuleCtx, ModuleError, TaskInput};
use bytes::Bytes;
use futures::future::BoxFuture;
use overlord_core::finding::Payload;
use overlord_core::finding::screen::{
    Capture, ScreenProtocol, Screenshot as ShotFinding, ScreenshotError,
};
use overlord_probes::screen::{
    ScreenError, ScreenOptions, rdp_probe, vnc_screenshot, x11_screenshot,
};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Largest blob a finding may carry (the coordinator's limit).
const MAX_BLOB: usize = 16 << 20;

pub struct Screenshot;

fn protocol_for(task: &TaskInput, port: u16) -> Result<ScreenProtocol, ModuleError> {
    match task.params.get("protocol") {
        Some(v) if !v.is_null() => serde_json::from_value(v.clone()).map_err(|_| {
            ModuleError::Invalid(format!("unknown screenshot protocol {v} (vnc, x11, rdp)"))
        }),
        _ => Ok(match port {
            6000..=6063 => ScreenProtocol::X11,
            3389 => ScreenProtocol::Rdp,
            _ => ScreenProtocol::Vnc,
        }),
    }
}

fn options(task: &TaskInput) -> ScreenOptions {
    let d = ScreenOptions::default();
    ScreenOptions {
        settle: task
            .param_u64("settle_ms")
            .map(|v| Duration::from_millis(v.min(10_000)))
            .unwrap_or(d.settle),
        total_timeout: task
            .param_u64("total_ms")
            .map(|v| Duration::from_millis(v.clamp(100, 300_000)))
            .unwrap_or(d.total_timeout),
        max_pixels: task
            .param_u64("max_pixels")
            .map(|v| v.min(d.max_pixels))
            .unwrap_or(d.max_pixels),
        ..d
    }
}

/// Turns a capture's typed record plus its PNG into a `screenshot` finding.
fn shot_finding(
    ip: IpAddr,
    port: u16,
    protocol: ScreenProtocol,
    capture: Capture,
    shot: overlord_probes::screen::Screenshot,
) -> FindingOut {
    let png_bytes = shot.png.len();
    let (blob, blob_dropped) = if png_bytes <= MAX_BLOB {
        (Some(Bytes::from(shot.png)), None)
    } else {
        (None, Some(format!("PNG larger than {MAX_BLOB} bytes")))
    };
    let payload = ShotFinding {
        protocol,
        width: shot.width,
        height: shot.height,
        sha256: shot.sha256,
        png_bytes: png_bytes as u64,
        capture,
        blob_dropped,
    };
    let mut f = FindingOut::new(Some(ip), Some(port), Payload::Screenshot(Box::new(payload)));
    f.blob = blob;
    f
}

fn error_finding(ip: IpAddr, port: u16, protocol: ScreenProtocol, e: &ScreenError) -> FindingOut {
    FindingOut::new(
        Some(ip),
        Some(port),
        ScreenshotError {
            protocol,
            error: e.to_string(),
        },
    )
}

async fn one(
    ip: IpAddr,
    port: u16,
    protocol: ScreenProtocol,
    opts: &ScreenOptions,
) -> Result<Vec<FindingOut>, ModuleError> {
    let addr = SocketAddr::new(ip, port);
    let res: Result<Result<Vec<FindingOut>, ModuleError>, ScreenError> = match protocol {
        ScreenProtocol::Vnc => vnc_screenshot(addr, opts).await.map(|cap| {
            let (record, shot) = cap.into_record();
            Ok(match shot {
                Some(s) => vec![shot_finding(ip, port, protocol, Capture::Vnc(record), s)],
                None => vec![FindingOut::new(
                    Some(ip),
                    Some(port),
                    Payload::VncAuth(Box::new(record)),
                )],
            })
        }),
        ScreenProtocol::X11 => x11_screenshot(addr, opts).await.map(|cap| {
            let (record, shot) = cap.into_record();
            Ok(match shot {
                Some(s) => vec![shot_finding(ip, port, protocol, Capture::X11(record), s)],
                None => vec![FindingOut::new(
                    Some(ip),
                    Some(port),
                    Payload::X11Refused(Box::new(record)),
                )],
            })
        }),
        ScreenProtocol::Rdp => rdp_probe(addr, opts).await.map(|record| {
            Ok(vec![FindingOut::new(
                Some(ip),
                Some(port),
                Payload::Rdp(Box::new(record)),
            )])
        }),
    };
    let p = protocol.as_str();
    match res {
        Ok(f) => f,
        // Closed since the scan (or a self-connect): nothing to report.
        Err(ScreenError::Connect { .. }) => Ok(Vec::new()),
        // Transient: let the coordinator retry.
        Err(
            e @ (ScreenError::Timeout { .. } | ScreenError::Io { .. } | ScreenError::Closed { .. }),
        ) => Err(ModuleError::Failed(format!("{p} {addr}: {e}"))),
        Err(e) => Ok(vec![error_finding(ip, port, protocol, &e)]),
    }
}

impl Module for Screenshot {
    fn name(&self) -> &'static str {
        "screenshot"
    }
    fn capability(&self) -> &'static str {
        "screenshot"
    }
    fn run<'a>(
        &'a self,
        task: &'a TaskInput,
        _ctx: &'a ModuleCtx,
    ) -> BoxFuture<'a, Result<Vec<FindingOut>, ModuleError>> {
        Box::pin(async move {
            let ip = task.require_target("screenshot")?;
            if task.ports.is_empty() {
                return Err(ModuleError::Invalid("screenshot needs a port".into()));
            }
            let opts = options(task);
            let mut out = Vec::new();
            for &port in &task.ports {
                let protocol = protocol_for(task, port)?;
                out.extend(one(ip, port, protocol, &opts).await?);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlord_core::scope::Scope;
    use serde_json::{Value, json};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn task(port: u16, params: Value) -> TaskInput {
        TaskInput {
            job_id: 1,
            task_id: 2,
            parent_task_id: Some(1),
            module: "screenshot".into(),
            target: Some("127.0.0.1".parse().unwrap()),
            target_count: 1,
            ports: vec![port],
            params,
            blob: None,
            input: None,
            ranges: Vec::new(),
        }
    }

    fn ctx() -> ModuleCtx {
        ModuleCtx {
            minion_id: "m".into(),
            provider: "p".into(),
            scope: Scope::loopback(),
            input_dir: None,
        }
    }

    /// A real RFB 3.8 server on loopback serving a 2x2 Raw frame (no auth), or demanding VNC auth.
    async fn rfb_server(auth: bool) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    tokio::spawn(async move {
                        let mut b = [0u8; 1024];
                        while matches!(r.read(&mut b).await, Ok(n) if n > 0) {}
                    });
                    let mut m = b"RFB 003.008\n".to_vec();
                    if auth {
                        m.extend([1, 2]);
                    } else {
                        m.extend([1, 1, 0, 0, 0, 0]);
                        m.extend([0, 2, 0, 2]);
                        m.extend([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
                        m.extend([0, 0, 0, 4]);
                        m.extend(b"demo");
                        m.extend([0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0, 2, 0, 0, 0, 0]);
                        for px in [
                            [0u8, 0, 255, 0],
                            [0, 255, 0, 0],
                            [255, 0, 0, 0],
                            [255, 255, 255, 0],
                        ] {
                            m.extend(px);
                        }
                    }
                    let _ = w.write_all(&m).await;
                    tokio::time::sleep(Duration::from_secs(5)).await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn vnc_screenshot_finding_carries_png() {
        let port = rfb_server(false).await;
        let t = task(port, json!({"protocol": "vnc", "settle_ms": 0}));
        let out = Screenshot.run(&t, &ctx()).await.unwrap();
        assert_eq!(out.len(), 1);
        let f = &out[0];
        assert_eq!(f.port, Some(port));
        let Payload::Screenshot(shot) = &f.payload else {
            panic!("{f:?}")
        };
        let png = f.blob.as_ref().unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert_eq!(shot.sha256, overlord_probes::screen::sha256_hex(png));
        assert_eq!(shot.width, 2);
        let Capture::Vnc(cap) = &shot.capture else {
            panic!("{shot:?}")
        };
        assert_eq!(cap.desktop_name.as_deref(), Some("demo"));
    }

    #[tokio::test]
    async fn vnc_auth_and_closed_port() {
        let port = rfb_server(true).await;
        let out = Screenshot
            .run(&task(port, json!({})), &ctx())
            .await
            .unwrap();
        let Payload::VncAuth(cap) = &out[0].payload else {
            panic!("{out:?}")
        };
        assert!(cap.auth_required);
        assert!(out[0].blob.is_none());

        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(
            Screenshot
                .run(&task(closed, json!({})), &ctx())
                .await
                .unwrap()
                .is_empty()
        );
        let bad = task(closed, json!({"protocol": "spice"}));
        assert!(matches!(
            Screenshot.run(&bad, &ctx()).await,
            Err(ModuleError::Invalid(_))
        ));
    }
}
