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
            seen += 1;
        } else if name.starts_with("minion") && name.ends_with(".toml") {
            let s = overlord_cli::files::minion(&p).unwrap_or_else(|e| panic!("{name}: {e:#}"));
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
}
