//! Long soak (placeholder until the cluster driver lands).
fn main() {
    eprintln!("overlord-soak: not wired to a cluster yet");
    std::process::exit(2);
}
