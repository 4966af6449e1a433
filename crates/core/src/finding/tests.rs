use super::enrichment::*;
use super::scan::*;
use super::screen::*;
use super::service::*;
use super::*;

fn service_sample() -> Service {
    Service {
        addr: "127.0.0.1:5900".into(),
        status: ServiceStatus::Identified,
        status_detail: None,
        service: Some("vnc".into()),
        tunnel: None,
        product: Some("x11vnc".into()),
        version: None,
        info: None,
        hostname: None,
        os: None,
        device: None,
        cpe: vec!["cpe:/a:x11vnc".into()],
        rule: Some(RuleRef {
            probe: "NULL".into(),
            file: "grabber:vnc".into(),
            line: 0,
            soft: false,
            service: "vnc".into(),
        }),
        softmatch: None,
        tls: Some(Tls {
            version: "TLSv1_3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
            alpn: None,
            chain: vec![Certificate {
                subject: "CN=a".into(),
                issuer: "CN=a".into(),
                sans: vec!["a".into()],
                serial: "01".into(),
                not_before: 1,
                not_after: 2,
                expired: true,
                self_signed: true,
                sha256: "ab".into(),
                signature_algorithm: "ed25519".into(),
                parse_error: None,
            }],
            handshake_bytes: 900,
        }),
        tls_error: None,
        grab: Some(Grab::Vnc(VncGrab {
            server_version: "RFB 003.008".into(),
            negotiated: "RFB 003.008".into(),
            security_types: vec![1],
            security_names: vec!["None".into()],
            auth_required: false,
            open: true,
            desktop_name: Some("lab".into()),
            width: Some(800),
            height: Some(600),
            failure_reason: None,
            product_guess: Some("x11vnc".into()),
        })),
        grab_error: None,
        screenshot: Some(ScreenProtocol::Vnc),
        banner: Some(ServiceBanner {
            probe: "NULL".into(),
            bytes: 12,
            truncated: false,
            text: "RFB 003.008\\n".into(),
        }),
        probes_sent: vec!["NULL".into()],
        timings: ServiceTimings {
            connect_ms: 0.1,
            banner_ms: Some(0.2),
            probes_ms: 1.0,
            grab_ms: 2.0,
            total_ms: 3.5,
        },
        budget_ms: 8000,
        budget_exhausted: false,
    }
}

fn enrichment_sample() -> Enrichment {
    Enrichment {
        version: 1,
        width: 640,
        height: 480,
        blank: false,
        entropy: 3.5,
        differing_pixels: 1000,
        phash64: "0123456789abcdef".into(),
        phash256: "0".repeat(64),
        text: "mail alice@example.com".into(),
        words: vec![Word {
            text: "mail".into(),
            conf: 91.5,
            bbox: [1, 2, 3, 4],
        }],
        emails: vec!["alice@example.com".into()],
        faces: vec![Face {
            bbox: [5, 6, 7, 8],
            neighbours: 4,
        }],
        logos: vec![LogoHit {
            name: "windows".into(),
            bbox: [0, 0, 10, 10],
            score: 0.75,
        }],
        tags: vec!["has_text".into()],
        leaks: vec![],
        timings: EnrichTimings {
            decode_ms: 1.0,
            blank_ms: 1.0,
            hash_ms: 1.0,
            faces_ms: 1.0,
            logos_ms: 1.0,
            ocr_ms: 1.0,
            total_ms: 6.0,
        },
        input: None,
        image: Some("ab".into()),
    }
}

/// One sample payload of every kind (the round-trip test covers each).
pub(crate) fn samples() -> Vec<Payload> {
    vec![
        Payload::OpenPort(OpenPort::tcp()),
        Payload::Banner(Banner {
            banner: "SSH-2.0-x\\r\\n".into(),
            bytes: 11,
            probed: false,
            truncated: false,
        }),
        Payload::Service(Box::new(service_sample())),
        Payload::Screenshot(Box::new(Screenshot {
            protocol: ScreenProtocol::X11,
            width: 2,
            height: 2,
            sha256: "ab".into(),
            png_bytes: 70,
            capture: Capture::X11(X11Capture {
                open: true,
                refused_reason: None,
                protocol_version: Some("11.0".into()),
                vendor: Some("The X.Org Foundation".into()),
                release: Some(12101007),
                screens: vec![X11Screen {
                    width: 2,
                    height: 2,
                    width_mm: 1,
                    height_mm: 1,
                    root_depth: 24,
                }],
                connect_ms: 0.5,
                total_ms: 3.0,
            }),
            blob_dropped: None,
        })),
        Payload::VncAuth(Box::new(VncCapture {
            server_version: "RFB 003.008".into(),
            protocol_version: "3.8".into(),
            security_types: vec![2],
            security_type_names: vec!["VNC Authentication".into()],
            auth_required: true,
            security_failure: None,
            desktop_name: None,
            server_identity: None,
            width: 0,
            height: 0,
            server_pixel_format: Some(PixelFormat {
                bits_per_pixel: 32,
                depth: 24,
                big_endian: false,
                true_colour: true,
                red_max: 255,
                green_max: 255,
                blue_max: 255,
                red_shift: 16,
                green_shift: 8,
                blue_shift: 0,
            }),
            encodings_used: vec![],
            frames: 0,
            stable: false,
            settled: false,
            settle_rounds: 0,
            settle_updates: 0,
            settle_log: vec![SettleUpdate {
                at_ms: 1.0,
                rects: 1,
                pixels: 4,
            }],
            bytes_read: 14,
            timings: VncTimings {
                connect_ms: 0.1,
                handshake_ms: 0.2,
                first_frame_ms: 0.0,
                last_settle_update_ms: None,
                settle_ms: 0.0,
                frames_ms: 0.0,
                total_ms: 0.3,
            },
        })),
        Payload::X11Refused(Box::new(X11Capture {
            open: false,
            refused_reason: Some("No protocol specified".into()),
            protocol_version: None,
            vendor: None,
            release: None,
            screens: vec![],
            connect_ms: 0.1,
            total_ms: 0.2,
        })),
        Payload::Rdp(Box::new(Rdp {
            preferred: Some(RdpProtocol::Hybrid),
            supported: vec![RdpProtocol::Tls, RdpProtocol::Hybrid],
            nla_required: true,
            flags: Some(1),
            attempts: vec![
                RdpAttempt {
                    requested: vec![RdpProtocol::Rdp],
                    outcome: RdpOutcome::Failure {
                        code: 5,
                        reason: "HYBRID_REQUIRED_BY_SERVER".into(),
                    },
                },
                RdpAttempt {
                    requested: vec![RdpProtocol::Tls],
                    outcome: RdpOutcome::Selected {
                        protocol: RdpProtocol::Tls,
                        flags: 1,
                    },
                },
                RdpAttempt {
                    requested: vec![RdpProtocol::HybridEx],
                    outcome: RdpOutcome::NoNegotiation,
                },
            ],
            total_ms: 4.0,
        })),
        Payload::ScreenshotError(ScreenshotError {
            protocol: ScreenProtocol::Vnc,
            error: "frame larger than the cap".into(),
        }),
        Payload::Enrichment(Box::new(enrichment_sample())),
        Payload::Leak(Leak {
            email: "alice@example.com".into(),
            read_as: None,
            source: "combo".into(),
            date: "2019-01-07".into(),
            leaks: vec![LeakSource {
                source: "combo".into(),
                date: "2019-01-07".into(),
            }],
            image: Some("ab".into()),
        }),
        Payload::Beacon(Box::new(Beacon {
            rank: 1,
            kind: beacon::BeaconLog::Conn,
            src: "10.0.0.5".into(),
            dst: "203.0.113.7".into(),
            dst_port: 443,
            window: 0,
            cnn_score: 0.9,
            jitter_score: 0.1,
            stat_score: 0.8,
            combined: 0.875,
            is_beacon: true,
            period_secs: 60.0,
            jitter: 0.05,
            events: 1000,
            checkins: 900,
            max_burst: 2,
            first_seen: 1.0,
            last_seen: 86000.0,
            failed_fraction: 0.0,
            fan_in: 1,
            benign_hint: false,
            popularity: 0,
            active_hours: 24,
            period_stability: 0.97,
            hints: vec![super::beacon::BeaconHint::PopularName],
            fan_in_needed: 5,
            popularity_needed: 5,
            group: vec![],
            group_period_secs: None,
            truncated: false,
        })),
        Payload::BeaconSummary(BeaconSummary {
            input: "conn.log".into(),
            lines: 10,
            records: 9,
            bad_lines: 1,
            bad_examples: vec![beacon::BadLine {
                line: 3,
                reason: "short".into(),
            }],
            keys: 4,
            scored: 2,
            beacons: 1,
            threshold: 0.5,
            seconds: 0.25,
        }),
        Payload::Udp(Box::new(UdpPort {
            addr: "127.0.0.1:53".into(),
            state: UdpState::Open,
            reason: "udp-response".into(),
            service: Some("domain".into()),
            product: Some("Unbound".into()),
            version: Some("1.17.1".into()),
            info: None,
            hostname: None,
            os: None,
            cpe: vec![],
            probe: Some("dns".into()),
            evidence: Some("dns id 0x1a2b, QR set".into()),
            soft: false,
            validated: true,
            reply: None,
            reply_bytes: 60,
            probes_sent: vec!["dns".into()],
            tries: 1,
            rtt_ms: Some(0.4),
            budget_ms: 3000,
            spent_ms: 1.2,
        })),
        Payload::Noop(Noop { task: 7 }),
    ]
}

#[test]
fn every_kind_round_trips_through_its_wire_form() {
    let samples = samples();
    let kinds: Vec<FindingKind> = samples.iter().filter_map(Payload::kind).collect();
    assert_eq!(kinds, FindingKind::ALL, "one sample per kind, in order");
    for p in samples {
        let wire = p.to_json();
        let data: Value = serde_json::from_str(&wire).unwrap();
        let parsed = Payload::parse(p.kind_name(), &data);
        assert!(
            parsed.unknown_fields.is_empty(),
            "{}: {:?}",
            p.kind_name(),
            parsed.unknown_fields
        );
        assert_eq!(parsed.payload, p, "{}", p.kind_name());
        assert!(!parsed.is_partial());
        assert_eq!(FindingKind::from_name(p.kind_name()), p.kind());
    }
}

#[test]
fn an_unknown_kind_is_kept_as_sent() {
    let data = json!({"ja4": "t13d1516h2_8daaf6152771", "nested": {"x": [1, 2]}});
    let parsed = Payload::parse("tls_fingerprint", &data);
    assert!(parsed.is_partial());
    match &parsed.payload {
        Payload::Unknown(u) => {
            assert_eq!(u.kind, "tls_fingerprint");
            assert_eq!(u.data, data);
            assert_eq!(u.mismatch, None);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(parsed.payload.kind_name(), "tls_fingerprint");
    assert_eq!(parsed.payload.to_data(), data, "served exactly as sent");
    assert_eq!(parsed.payload.kind(), None);
}

#[test]
fn unknown_fields_are_reported_by_path_and_the_rest_is_typed() {
    let mut data = Payload::Service(Box::new(service_sample())).to_data();
    data["ja4s"] = json!("t130200_1301_234ea6891581");
    data["grab"]["rfb_extensions"] = json!(["tight"]);
    data["timings"]["queue_ms"] = json!(1.5);
    // a null is an absent optional field, not an unknown one
    data["later_optional"] = Value::Null;
    let parsed = Payload::parse("service", &data);
    let mut u = parsed.unknown_fields.clone();
    u.sort();
    assert_eq!(u, vec!["grab.rfb_extensions", "ja4s", "timings.queue_ms"]);
    assert!(parsed.is_partial());
    let Payload::Service(s) = parsed.payload else {
        panic!("typed")
    };
    assert_eq!(s.screenshot, Some(ScreenProtocol::Vnc));
}

#[test]
fn a_document_that_does_not_fit_its_kind_is_unknown_with_the_reason() {
    let data = json!({"state": "open", "proto": "sctp"});
    let parsed = Payload::parse("open_port", &data);
    match parsed.payload {
        Payload::Unknown(u) => {
            assert_eq!(u.kind, "open_port");
            assert_eq!(u.data, data);
            assert!(u.mismatch.unwrap().contains("sctp"));
        }
        other => panic!("{other:?}"),
    }
    let parsed = Payload::parse("screenshot", &Value::Null);
    assert!(matches!(
        parsed.payload,
        Payload::Unknown(UnknownFinding {
            mismatch: Some(_),
            ..
        })
    ));
}

#[test]
fn the_wire_names_of_kinds_are_frozen() {
    // Renaming a kind breaks every stored finding and every external consumer.
    let names: Vec<&str> = FindingKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "open_port",
            "banner",
            "service",
            "screenshot",
            "vnc_auth",
            "x11_refused",
            "rdp",
            "screenshot_error",
            "enrichment",
            "leak",
            "beacon",
            "beacon_summary",
            "udp",
            "noop"
        ]
    );
    for k in FindingKind::ALL {
        assert_eq!(serde_json::to_value(k).unwrap(), json!(k.as_str()));
        assert!(!k.description().is_empty());
    }
}

#[test]
fn frozen_documents_of_version_1_still_parse() {
    // Bytes as the version-1 producers wrote them (minion modules before the schema existed).
    let open = r#"{"state":"open","proto":"tcp"}"#;
    let p = Payload::parse("open_port", &serde_json::from_str(open).unwrap());
    assert_eq!(p.payload, Payload::OpenPort(OpenPort::tcp()));
    let leak = r#"{"email":"a@b.example","read_as":null,"source":"s","date":"d","leaks":[{"source":"s","date":"d"}],"image":"ab"}"#;
    let p = Payload::parse("leak", &serde_json::from_str(leak).unwrap());
    assert!(!p.is_partial(), "{p:?}");
    let noop = r#"{"task":3}"#;
    assert_eq!(
        Payload::parse("noop", &serde_json::from_str(noop).unwrap()).payload,
        Payload::Noop(Noop { task: 3 })
    );
}

#[test]
fn the_json_schema_names_every_kind_and_documents_fields() {
    let s = json_schema();
    assert_eq!(s["x-schema-version"], SCHEMA_VERSION);
    assert_eq!(s["oneOf"].as_array().unwrap().len(), FindingKind::ALL.len());
    let service = &s["$defs"]["Service"];
    assert!(
        service["properties"]["screenshot"]["description"]
            .as_str()
            .unwrap()
            .contains("screenshot")
    );
    assert!(s["$defs"]["SshGrab"].is_object());
    assert!(s["$defs"]["Tls"].is_object());
}

#[test]
fn docs_schema_md_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/SCHEMA.md");
    let want = markdown();
    if std::env::var_os("UPDATE_SCHEMA_DOC").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/SCHEMA.md is stale: run `UPDATE_SCHEMA_DOC=1 cargo test -p overlord-core docs_schema_md` \
         (or `overlord schema --markdown > docs/SCHEMA.md`)"
    );
}
