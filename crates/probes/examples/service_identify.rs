//! Identify services on loopback ports and print the reports as JSON.
//!
//! `cargo run -p overlord-probes --example service_identify -- 127.0.0.1:22 127.0.0.1:6379`
//! `cargo run -p overlord-probes --example service_identify -- --coverage [FILE]`

use std::net::SocketAddr;
use std::path::Path;

use overlord_probes::service::{IdentifyOptions, ProbeDb, identify};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--coverage") {
        let t = std::time::Instant::now();
        let mut db = ProbeDb::default();
        let path = args
            .get(1)
            .map(String::as_str)
            .unwrap_or(overlord_probes::service::probefile::NMAP_PROBES_PATH);
        let r = db.add_file(Path::new(path))?.clone();
        println!(
            "{}: {} lines, {} probes, {} matches, {} softmatches, {} regex failures, {} lines rejected, match coverage {:.2}% (loaded in {:?})",
            r.source,
            r.lines,
            r.probes,
            r.matches,
            r.softmatches,
            r.regex_failures,
            r.rejected.len(),
            100.0 * r.match_coverage(),
            t.elapsed()
        );
        for x in r.rejected.iter().take(40) {
            println!("  line {}: {} | {}", x.line, x.reason, x.text);
        }
        return Ok(());
    }
    let db = ProbeDb::load_default()?;
    let opts = IdentifyOptions::default();
    for a in args {
        let addr: SocketAddr = a.parse()?;
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "only loopback targets are allowed here: {addr}"
        );
        let r = identify(addr, &opts, &db).await;
        println!("{}", serde_json::to_string_pretty(&r)?);
    }
    Ok(())
}
