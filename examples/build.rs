//! Generates the gRPC client of the Rust client example straight from `proto/` (client stubs
//! only), the way a program outside this workspace would: it does not use `overlord-proto`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let files = ["overlord/v1/job.proto", "overlord/v1/query.proto"];
    println!("cargo:rerun-if-changed={}", root.display());
    for f in ["common.proto", "job.proto", "query.proto"] {
        println!(
            "cargo:rerun-if-changed={}",
            root.join("overlord/v1").join(f).display()
        );
    }
    let fds = protox::compile(files, [&root])?;
    tonic_prost_build::configure()
        .build_server(false)
        .skip_protoc_run()
        .compile_fds(fds)?;
    Ok(())
}
