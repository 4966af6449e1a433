//! Follow-up rules: which findings spawn which tasks. A rule fires only if the spawned module is
//! enabled in the job.

use serde_json::{Value, json};
use std::net::IpAddr;

/// The parts of a finding the rules look at.
#[derive(Clone, Debug)]
pub struct FindingView<'a> {
    pub kind: &'a str,
    pub target: Option<IpAddr>,
    pub port: Option<u16>,
    pub data: &'a Value,
    pub blob_sha256: Option<&'a str>,
}

/// A task to spawn (its parent is the task that produced the finding).
#[derive(Clone, Debug, PartialEq)]
pub struct FollowUp {
    pub module: &'static str,
    pub target: Option<IpAddr>,
    pub ports: Vec<u16>,
    pub params: Value,
    pub blob_sha256: Option<String>,
}

pub fn follow_ups(enabled: &[String], f: &FindingView<'_>) -> Vec<FollowUp> {
    let on = |m: &str| enabled.iter().any(|e| e == m);
    let mut out = Vec::new();
    match f.kind {
        "open_port" => {
            if let (Some(ip), Some(port)) = (f.target, f.port) {
                let module = if on("service") {
                    Some("service")
                } else if on("banner") {
                    Some("banner")
                } else {
                    None
                };
                if let Some(module) = module {
                    out.push(FollowUp {
                        module,
                        target: Some(ip),
                        ports: vec![port],
                        params: Value::Null,
                        blob_sha256: None,
                    });
                }
            }
        }
        "service" => {
            let shot = f.data.get("screenshot").and_then(Value::as_str);
            if let (Some(proto @ ("vnc" | "x11")), Some(ip), Some(port), true) =
                (shot, f.target, f.port, on("screenshot"))
            {
                out.push(FollowUp {
                    module: "screenshot",
                    target: Some(ip),
                    ports: vec![port],
                    params: json!({ "protocol": proto }),
                    blob_sha256: None,
                });
            }
        }
        "screenshot" => {
            if let (Some(sha), true) = (f.blob_sha256, on("enrich")) {
                out.push(FollowUp {
                    module: "enrich",
                    target: f.target,
                    ports: f.port.into_iter().collect(),
                    params: Value::Null,
                    blob_sha256: Some(sha.to_string()),
                });
            }
        }
        "enrichment" => {
            let emails: Vec<Value> = f
                .data
                .get("emails")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter(|e| e.is_string()).cloned().collect())
                .unwrap_or_default();
            if !emails.is_empty() && on("leak") {
                out.push(FollowUp {
                    module: "leak",
                    target: f.target,
                    ports: f.port.into_iter().collect(),
                    params: json!({ "emails": emails, "image": f.blob_sha256 }),
                    blob_sha256: None,
                });
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn en(m: &[&str]) -> Vec<String> {
        m.iter().map(|s| s.to_string()).collect()
    }

    fn view<'a>(kind: &'a str, data: &'a Value, blob: Option<&'a str>) -> FindingView<'a> {
        FindingView {
            kind,
            target: Some("127.0.0.1".parse().unwrap()),
            port: Some(5900),
            data,
            blob_sha256: blob,
        }
    }

    #[test]
    fn open_port_spawns_service_else_banner() {
        let d = Value::Null;
        let f = view("open_port", &d, None);
        assert_eq!(
            follow_ups(&en(&["portscan", "service", "banner"]), &f)[0].module,
            "service"
        );
        assert_eq!(
            follow_ups(&en(&["portscan", "banner"]), &f)[0].module,
            "banner"
        );
        assert_eq!(
            follow_ups(&en(&["portscan", "banner"]), &f)[0].ports,
            vec![5900]
        );
        assert!(follow_ups(&en(&["portscan"]), &f).is_empty());
    }

    #[test]
    fn service_spawns_screenshot_and_screenshot_spawns_enrich() {
        let d = json!({"screenshot": "vnc"});
        let f = view("service", &d, None);
        let fu = follow_ups(&en(&["service", "screenshot"]), &f);
        assert_eq!(fu[0].module, "screenshot");
        assert_eq!(fu[0].params, json!({"protocol": "vnc"}));
        assert!(follow_ups(&en(&["service"]), &f).is_empty());
        let d2 = json!({"screenshot": "rdp"});
        assert!(
            follow_ups(&en(&["service", "screenshot"]), &view("service", &d2, None)).is_empty()
        );
        let n = Value::Null;
        let fu = follow_ups(
            &en(&["screenshot", "enrich"]),
            &view("screenshot", &n, Some("ab")),
        );
        assert_eq!(fu[0].blob_sha256.as_deref(), Some("ab"));
        assert!(
            follow_ups(
                &en(&["screenshot", "enrich"]),
                &view("screenshot", &n, None)
            )
            .is_empty()
        );
        assert!(follow_ups(&en(&["banner", "portscan"]), &view("banner", &n, None)).is_empty());
    }

    #[test]
    fn enrichment_with_emails_spawns_one_leak_lookup() {
        let d = json!({"emails": ["a@b.example", "c@d.example"], "text": "x"});
        let f = view("enrichment", &d, Some("ab"));
        let fu = follow_ups(&en(&["enrich", "leak"]), &f);
        assert_eq!(fu.len(), 1);
        assert_eq!(fu[0].module, "leak");
        assert_eq!(fu[0].ports, vec![5900]);
        assert_eq!(fu[0].blob_sha256, None, "the lookup needs no image bytes");
        assert_eq!(
            fu[0].params,
            json!({"emails": ["a@b.example", "c@d.example"], "image": "ab"})
        );
        assert!(
            follow_ups(&en(&["enrich"]), &f).is_empty(),
            "leak not enabled"
        );
        let none = json!({"emails": [], "text": "x"});
        assert!(
            follow_ups(
                &en(&["enrich", "leak"]),
                &view("enrichment", &none, Some("ab"))
            )
            .is_empty()
        );
    }
}
