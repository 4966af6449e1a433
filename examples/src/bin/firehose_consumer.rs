//! `firehose-consumer URL STREAM [SUBJECT] [--max N]`: prints each finding of the Overlord firehose
//! as one line `<job>:<cursor> <subject> <finding JSON>` (docs/FIREHOSE.md).
//!
//! ```sh
//! cargo run -p overlord-examples --bin firehose-consumer -- nats://127.0.0.1:4222 OVERLORD 'overlord.findings.screenshot'
//! ```

use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut max = usize::MAX;
    if let Some(i) = args.iter().position(|a| a == "--max") {
        max = args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("--max needs a number"))?;
        args.drain(i..i + 2);
    }
    let [url, stream, rest @ ..] = &args[..] else {
        anyhow::bail!("usage: firehose-consumer URL STREAM [SUBJECT] [--max N]");
    };
    let subject = rest
        .first()
        .map(String::as_str)
        .unwrap_or("overlord.findings.>");
    // One durable consumer per filter: a restart resumes after the last acknowledged finding.
    let durable = format!("example-{}", subject.replace(['.', '*', '>'], "_"));
    let n = overlord_examples::firehose::consume(
        url,
        stream,
        &durable,
        subject,
        max,
        Duration::from_secs(5),
        |r| println!("{} {} {}", r.id, r.subject, r.finding),
    )
    .await?;
    eprintln!("{n} findings");
    Ok(())
}
