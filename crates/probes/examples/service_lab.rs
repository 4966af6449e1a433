//! Starts the benchmark's loopback services and keeps them running until Ctrl-C (for demos:
//! `overlord scan 127.0.0.1 -p <ports> --modules portscan,service`).
//!
//! `cargo run -p overlord-probes --example service_lab`

use overlord_probes::service::testsupport::{self as ts, Behaviour};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sshd = ts::sshd()?;
    let redis = ts::redis(None)?;
    let mosq = ts::mosquitto()?;
    let nginx = ts::nginx(false)?;
    let nginx_tls = ts::nginx(true)?;
    let ftp = ts::vsftpd()?;
    let smtp = ts::smtpd()?;
    let xvfb = ts::xvfb(true)?;
    let x11vnc = ts::x11vnc(xvfb.display.expect("display"))?;
    let xvnc = ts::xvnc(true)?;
    let echo = ts::serve(Behaviour::Echo).await?;
    let all = [
        ("sshd", sshd.addr),
        ("redis", redis.addr),
        ("mosquitto", mosq.addr),
        ("nginx", nginx.addr),
        ("nginx+tls", nginx_tls.addr),
        ("vsftpd", ftp.addr),
        ("aiosmtpd", smtp.addr),
        ("Xvfb", xvfb.addr),
        ("x11vnc", x11vnc.addr),
        ("Xvnc", xvnc.addr),
        ("echo", echo.addr),
    ];
    for (n, a) in &all {
        println!("{n:<10} {a}");
    }
    let ports: Vec<String> = all.iter().map(|(_, a)| a.port().to_string()).collect();
    println!("PORTS {}", ports.join(","));
    tokio::signal::ctrl_c().await?;
    Ok(())
}
