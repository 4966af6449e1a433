//! Every file in cluster-config/ parses and validates, so the documented cluster cannot rot.

use std::path::Path;

#[test]
fn every_cluster_config_file_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cluster-config");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).expect("cluster-config/ exists") {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("coordinator") && name.ends_with(".toml") {
            let s =
                overlord_cli::files::coordinator(&p).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert!(s.scope.permits("127.0.0.1".parse().unwrap()));
            assert!(
                !s.scope.permits("127.255.255.1".parse().unwrap()),
                "blocklist applied"
            );
            assert!(!s.scope.permits("10.0.0.1".parse().unwrap()));
            if name.contains("secure") {
                assert!(s.tls.is_some() && s.tokens.is_some() && s.minion_listen.is_some());
            }
            s.check_exposure().unwrap_or_else(|e| panic!("{name}: {e}"));
            seen += 1;
        } else if name.starts_with("tokens") && name.ends_with(".toml") {
            overlord_coordinator::security::tokens::Tokens::load(&p)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            seen += 1;
        } else if name.starts_with("minion") && name.ends_with(".toml") {
            // A secured minion's files (certificate, key, input dir) are made by enrollment:
            // parse it beside freshly made ones.
            let tmp = tempfile::tempdir().unwrap();
            let p = if name.contains("secure") {
                let q = tmp.path().join(&name);
                std::fs::copy(&p, &q).unwrap();
                std::fs::copy(dir.join("blocklist.txt"), tmp.path().join("blocklist.txt")).unwrap();
                let pki = tmp.path().join("pki");
                overlord_coordinator::security::pki::init(&pki, &[]).unwrap();
                let ca = overlord_coordinator::security::pki::Ca::load(&pki).unwrap();
                let id = ca.issue_internal("minion-c", "lab-c").unwrap();
                let out = tmp.path().join("minion-c");
                std::fs::create_dir(&out).unwrap();
                std::fs::write(out.join("ca.pem"), &ca.ca_pem).unwrap();
                std::fs::write(out.join("minion.pem"), &id.cert_pem).unwrap();
                std::fs::write(out.join("minion.key"), &id.key_pem).unwrap();
                std::fs::create_dir(tmp.path().join("inputs")).unwrap();
                q
            } else {
                p.clone()
            };
            let s = overlord_cli::files::minion(&p).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            if name.contains("secure") {
                assert!(s.tls.is_some() && s.input_dir.is_some(), "{name}");
                assert!(s.coordinator.starts_with("https://"));
            }
            assert!(
                !s.scope.permits("127.255.255.1".parse().unwrap()),
                "blocklist applied"
            );
            seen += 1;
        } else if name.ends_with(".txt") {
            let text = std::fs::read_to_string(&p).unwrap();
            overlord_core::scope::parse_blocklist(&text)
                .unwrap_or_else(|(l, e)| panic!("{name}:{l}: {e}"));
            seen += 1;
        } else {
            panic!("unexpected file {name} in cluster-config/: add a parse check for it");
        }
    }
    assert!(seen >= 4);
}

#[test]
fn bad_configs_give_precise_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(
        &p,
        "version = 1\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\nbogus = 1\n",
    )
    .unwrap();
    let e = format!("{:#}", overlord_cli::files::coordinator(&p).unwrap_err());
    assert!(e.contains("bogus"), "{e}");
    std::fs::write(
        &p,
        "version = 2\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\n",
    )
    .unwrap();
    let e = format!("{:#}", overlord_cli::files::coordinator(&p).unwrap_err());
    assert!(e.contains("version 2"), "{e}");
    std::fs::write(&p, "version = 1\nlisten = \"nowhere\"\ndata_dir = \"d\"\n").unwrap();
    let e = format!("{:#}", overlord_cli::files::coordinator(&p).unwrap_err());
    assert!(e.contains("nowhere"), "{e}");
    let m = dir.path().join("m.toml");
    std::fs::write(&m, "version = 1\nid = \"x\"\nprovider = \"p\"\ncoordinator = \"http://127.0.0.1:1\"\nmodules = [\"warp\"]\n").unwrap();
    let e = format!("{:#}", overlord_cli::files::minion(&m).unwrap_err());
    assert!(e.contains("warp") && e.contains("portscan"), "{e}");

    // Not loopback, without TLS and tokens: refused, saying how to enable them.
    std::fs::write(
        &p,
        "version = 1\nlisten = \"0.0.0.0:50051\"\ndata_dir = \"d\"\n",
    )
    .unwrap();
    let s = overlord_cli::files::coordinator(&p).unwrap();
    let e = s.check_exposure().unwrap_err().to_string();
    assert!(
        e.contains("0.0.0.0:50051") && e.contains("ca init") && e.contains("token add"),
        "{e}"
    );
    // An https:// minion without [tls] is refused (never plaintext).
    std::fs::write(
        &m,
        "version = 1\nid = \"x\"\nprovider = \"p\"\ncoordinator = \"https://127.0.0.1:1\"\n",
    )
    .unwrap();
    let e = format!("{:#}", overlord_cli::files::minion(&m).unwrap_err());
    assert!(e.contains("https") && e.contains("[tls]"), "{e}");
}
