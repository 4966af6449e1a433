//! From a stored finding to what the index keeps: its provenance and an [`Observation`], read
//! from the typed payload ([`overlord_core::finding::Payload`]) — never from JSON by field name.
//! A kind this build does not know folds in as provenance only (module, minion, time).

use crate::state::{ExtValue, Http, Observation, Provenance, Screen, Ssh, Tls};
use overlord_core::finding::service::Grab;
use overlord_core::finding::{Payload, scan::Transport};
use overlord_core::job::FindingRecord;

pub fn provenance(f: &FindingRecord) -> Provenance {
    Provenance {
        job: f.job_id,
        cursor: f.cursor,
        ip: f.target,
        port: f.port.unwrap_or(0),
        module: f.module.clone(),
        minion: f.minion_id.clone(),
        provider: f.provider.clone(),
        at_ms: if f.finished_at_ms > 0 {
            f.finished_at_ms
        } else {
            f.stored_at_ms
        },
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// What a typed payload says about its service.
pub fn observe(p: &Payload) -> Observation {
    let mut o = Observation::default();
    match p {
        Payload::OpenPort(x) => {
            o.open = Some(true);
            o.transport = Some(match x.proto {
                Transport::Tcp => "tcp".into(),
                Transport::Udp => "udp".into(),
            });
        }
        Payload::Banner(b) => {
            o.open = Some(true);
            o.banner = non_empty(&b.banner);
        }
        Payload::Service(s) => {
            use overlord_core::finding::service::ServiceStatus as St;
            let answered = !matches!(s.status, St::Closed | St::Filtered);
            o.open = Some(answered);
            o.service = s.service.as_ref().map(|name| match &s.tunnel {
                Some(t) => format!("{t}/{name}"),
                None => name.clone(),
            });
            o.product = s.product.clone();
            o.version = s.version.clone();
            o.cpe = s.cpe.clone();
            o.banner = s.banner.as_ref().and_then(|b| non_empty(&b.text));
            if let Some(t) = &s.tls
                && let Some(leaf) = t.chain.first()
            {
                o.tls = Some(Tls {
                    subject: leaf.subject.clone(),
                    issuer: leaf.issuer.clone(),
                    expired: leaf.expired,
                    self_signed: leaf.self_signed,
                    sha256: leaf.sha256.clone(),
                    not_after: leaf.not_after,
                });
            }
            match &s.grab {
                Some(Grab::Http(h)) => {
                    o.http = Some(Http {
                        title: h.title.clone(),
                        status: Some(h.status),
                        server: h.server.clone(),
                    })
                }
                Some(Grab::Ssh(g)) => {
                    o.ssh = Some(Ssh {
                        hassh: non_empty(&g.hassh_server),
                        key: g.host_keys.first().map(|k| k.sha256.clone()),
                    });
                    if o.banner.is_none() {
                        o.banner = non_empty(&g.banner);
                    }
                }
                Some(Grab::Redis(r)) => {
                    o.ext
                        .insert("redis.auth".into(), ExtValue::Bool(r.auth_required));
                    if o.version.is_none() {
                        o.version = r.version.clone();
                    }
                }
                Some(Grab::Ftp(f)) => {
                    o.ext
                        .insert("ftp.anonymous".into(), ExtValue::Bool(f.anonymous_allowed));
                }
                Some(Grab::Vnc(v)) => {
                    o.ext
                        .insert("vnc.auth".into(), ExtValue::Bool(v.auth_required));
                }
                Some(Grab::X11(x)) => {
                    o.ext.insert("x11.open".into(), ExtValue::Bool(x.open));
                }
                Some(Grab::Mqtt(m)) => {
                    o.ext
                        .insert("mqtt.accepted".into(), ExtValue::Bool(m.accepted));
                }
                Some(Grab::Smtp(s)) => {
                    o.ext
                        .insert("smtp.starttls".into(), ExtValue::Bool(s.starttls));
                }
                Some(Grab::Dns(d)) => {
                    if let Some(i) = &d.info {
                        o.ext
                            .insert("dns.version_bind".into(), ExtValue::Str(i.clone()));
                    }
                }
                Some(Grab::Amqp(a)) => {
                    o.ext
                        .insert("amqp.protocol".into(), ExtValue::Str(a.protocol.clone()));
                    if let Some(c) = &a.cluster_name {
                        o.ext
                            .insert("amqp.cluster".into(), ExtValue::Str(c.clone()));
                    }
                }
                None => {}
            }
        }
        Payload::Udp(u) => {
            use overlord_core::finding::UdpState;
            // `open|filtered` is silence: not evidence of an open port
            o.open = Some(u.state == UdpState::Open);
            o.transport = Some("udp".into());
            o.service = u.service.clone();
            o.product = u.product.clone();
            o.version = u.version.clone();
            o.cpe = u.cpe.clone();
            o.ext
                .insert("udp.state".into(), ExtValue::Str(u.state.as_str().into()));
        }
        Payload::Screenshot(s) => {
            o.open = Some(true);
            o.screen = Some(Screen {
                image: non_empty(&s.sha256),
                ..Default::default()
            });
        }
        Payload::Enrichment(e) => {
            o.screen = Some(Screen {
                image: e.image.clone(),
                text: non_empty(e.text.trim()),
                faces: Some(e.faces.len() as u32),
                logos: e.logos.iter().map(|l| l.name.clone()).collect(),
                tags: e.tags.clone(),
                emails: e.emails.clone(),
            });
            o.leaks = e.leaks.iter().map(|l| l.address.clone()).collect();
        }
        Payload::Leak(l) => {
            o.leaks = vec![l.email.clone()];
        }
        Payload::Beacon(b) => {
            o.ext
                .insert("beacon.period".into(), ExtValue::F64(b.period_secs));
            o.ext
                .insert("beacon.score".into(), ExtValue::F64(b.combined as f64));
            o.ext
                .insert("beacon.dst".into(), ExtValue::Str(b.dst.clone()));
            o.ext
                .insert("beacon.is_beacon".into(), ExtValue::Bool(b.is_beacon));
        }
        _ => {}
    }
    o
}

/// Provenance and observation of a stored finding.
pub fn extract(f: &FindingRecord) -> (Provenance, Observation) {
    let parsed = Payload::parse(&f.kind, &f.data);
    let mut o = observe(&parsed.payload);
    // an enrichment of an input file names no screenshot: its image is the finding's blob (the
    // id the image service serves it under)
    if let (Payload::Enrichment(_), Some(sc)) = (&parsed.payload, o.screen.as_mut())
        && sc.image.is_none()
    {
        sc.image = f.blob_sha256.clone();
    }
    (provenance(f), o)
}
