//! `cargo run --release -p overlord-enrich --example analyze -- FILE...`: one JSON object per file
//! (what `overlord images analyze FILE...` prints).
fn main() -> anyhow::Result<()> {
    let paths: Vec<std::path::PathBuf> = std::env::args_os().skip(1).map(Into::into).collect();
    for v in overlord_enrich::analyze_files(&paths, Default::default(), None)? {
        println!("{}", serde_json::to_string(&v)?);
    }
    Ok(())
}
