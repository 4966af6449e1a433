//! What the screenshot tests do with real X and VNC servers on loopback: the servers themselves
//! come from the shared launcher (`testsupport::XServer`); here are the test-side helpers
//! (x11vnc with whole-screen polling, painting, xterm, xwd captures, pixel comparison).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
pub use overlord_probes::service::testsupport::{
    Daemon, XAccess, XServer, XSpec, stop_child, tcp_listeners_of, tcp_listeners_on,
};

/// A client program (xterm) stopped on drop (SIGTERM first, then SIGKILL; reaped).
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Spawns with stdout and stderr written to `log` (read back when it fails to start).
    pub fn spawn_logged(cmd: &mut Command, name: &str, log: &Path) -> Result<Proc> {
        let f =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdout(f.try_clone()?)
            .stderr(f)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        Ok(Proc { child })
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first: a SIGKILLed X server leaves its lock file and socket, x11vnc its shm.
        stop_child(&mut self.child);
    }
}

/// The last `n` lines of a log file (for failure messages).
pub fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Panics with the Debian package to install when a binary is missing (tests never skip).
pub fn need(bin: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{bin}` not found: install the Debian package `{package}` (scripts/install-deps.sh)"
    );
}

/// The shared blocking wait (backs off 5 → 100 ms), as this harness's `anyhow` result.
pub fn wait_until(timeout: Duration, what: &str, cond: impl FnMut() -> bool) -> Result<()> {
    overlord_testkit::wait::wait_until_sync(timeout, what, cond)?;
    Ok(())
}

/// Xvfb of `w`×`h`; with `tcp`, reachable at 127.0.0.1:6000+N (the shared launcher's loopback
/// relay) with access control off.
pub fn xvfb(w: u32, h: u32, tcp: bool) -> Result<XServer> {
    Ok(XServer::start(&XSpec {
        tcp,
        ..XSpec::xvfb(w, h)
    })?)
}

/// Xvfb reachable over TCP (loopback relay) with access control on: only clients presenting the
/// fresh MIT cookie in `x.auth` may connect.
pub fn xvfb_auth(w: u32, h: u32) -> Result<XServer> {
    Ok(XServer::start(&XSpec {
        tcp: true,
        access: XAccess::Cookie,
        ..XSpec::xvfb(w, h)
    })?)
}

/// TigerVNC's Xvnc serving RFB on a free loopback port; `security` e.g. "None" or "VncAuth".
pub fn xvnc(w: u32, h: u32, security: &str) -> Result<XServer> {
    Ok(XServer::start(&XSpec {
        vnc_security: Some(security.to_string()),
        ..XSpec::xvfb(w, h)
    })?)
}

/// Fails unless the X server process holds no TCP listener at all and every listener on its
/// TCP port (the relay) is bound to loopback — nothing on 0.0.0.0 or ::.
pub fn assert_loopback_only(x: &XServer) {
    let own = tcp_listeners_of(x.pid()).expect("/proc/<pid>/fd");
    assert!(
        own.is_empty(),
        "the X server itself listens on TCP: {own:?}"
    );
    if let Some(relay) = x.relay() {
        let on_port = tcp_listeners_on(relay.port()).expect("/proc/net/tcp");
        assert!(!on_port.is_empty(), "no listener on the relay port {relay}");
        assert!(
            on_port.iter().all(|a| a.ip().is_loopback()),
            "a listener on the X port beyond loopback: {on_port:?}"
        );
    }
}

/// Fails unless every TCP listener of process `pid` is on a loopback address (none on 0.0.0.0/::)
/// and it has at least one.
pub fn assert_listeners_loopback(pid: u32, what: &str) {
    let l = tcp_listeners_of(pid).expect("/proc/<pid>/fd");
    assert!(!l.is_empty(), "{what} has no TCP listener");
    assert!(
        l.iter().all(|a| a.ip().is_loopback()),
        "{what} listens beyond loopback: {l:?}"
    );
}

/// x11vnc serving an X display on a free loopback port, without password: the shared launcher
/// (`testsupport::x11vnc_on`: `-noipv6`, `-noshm`, ready when its own pid holds the port, retried
/// on a new port), plus `-noxdamage -nowf` (whole-screen polling, what these tests compare).
pub fn x11vnc(x: &XServer) -> Result<(Daemon, u16)> {
    need("x11vnc", "x11vnc");
    let d = overlord_probes::service::testsupport::x11vnc_on(&x.name(), &["-noxdamage", "-nowf"])
        .with_context(|| format!("x11vnc on {}", x.name()))?;
    let port = d.addr.port();
    Ok((d, port))
}

/// Paints a many-coloured pattern as the root window background (via x11rb, over the local
/// socket) and returns when the server has processed it.
pub fn paint_pattern(x: &XServer, seed: u32) -> Result<()> {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{self, ConnectionExt as _};
    use x11rb::wrapper::ConnectionExt as _;
    let (conn, screen_num) =
        x11rb::connect(Some(&x.name())).map_err(|e| anyhow!("x11 connect: {e}"))?;
    let screen = &conn.setup().roots[screen_num];
    let (w, h) = (screen.width_in_pixels, screen.height_in_pixels);
    let pix = conn.generate_id()?;
    conn.create_pixmap(screen.root_depth, pix, screen.root, w, h)?;
    let gc = conn.generate_id()?;
    conn.create_gc(gc, pix, &xproto::CreateGCAux::new())?;
    let rows = 32u16;
    for y0 in (0..h).step_by(rows as usize) {
        let n = rows.min(h - y0);
        let mut data = Vec::with_capacity(usize::from(w) * usize::from(n) * 4);
        for y in y0..y0 + n {
            for xx in 0..w {
                let (xx, y) = (u32::from(xx), u32::from(y));
                let r = (xx * 255 / u32::from(w)) as u8;
                let g = (y * 255 / u32::from(h)) as u8;
                let b = ((xx ^ y).wrapping_mul(seed) >> 2) as u8;
                data.extend_from_slice(&[b, g, r, 0]);
            }
        }
        conn.put_image(
            xproto::ImageFormat::Z_PIXMAP,
            pix,
            gc,
            w,
            n,
            0,
            y0 as i16,
            0,
            screen.root_depth,
            &data,
        )?;
    }
    conn.change_window_attributes(
        screen.root,
        &xproto::ChangeWindowAttributesAux::new().background_pixmap(pix),
    )?;
    conn.clear_area(false, screen.root, 0, 0, 0, 0)?;
    conn.set_close_down_mode(xproto::CloseDown::RETAIN_PERMANENT)?;
    conn.sync()?;
    Ok(())
}

/// An xterm showing `text`, waited for until the text is on the screen.
///
/// A mapped window is not enough: xterm draws what its shell printed a moment later. Tests that
/// compare two captures (e.g. `xwd`, then an X11 or VNC screenshot) failed under load with the
/// text drawn between them ("305 pixels differ, box (43, 43, 131, 68)": the 15 characters of
/// `X11 ROOT WINDOW`). So the shell marks when the text is in the pty, and then the screen must
/// stay unchanged over three captures.
pub fn xterm(x: &XServer, text: &str) -> Result<Proc> {
    need("xterm", "xterm");
    need("xwininfo", "x11-utils");
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let printed = x.daemon.dir.path().join(format!("xterm-{n}.printed"));
    let script = format!(
        "printf '%s\\n' '{text}'; : > '{}'; exec sleep 600",
        printed.display()
    );
    let log = x.daemon.dir.path().join(format!("xterm-{n}.log"));
    let mut p = Proc::spawn_logged(
        Command::new("xterm")
            .args([
                "-display",
                &x.name(),
                "-geometry",
                "60x8+40+40",
                "-title",
                "overlord-test",
            ])
            .args(["-e", "sh", "-c", &script]),
        "xterm",
        &log,
    )?;
    let mut died = false;
    wait_until(
        Duration::from_secs(20),
        "xterm window with its text",
        || {
            died = p.exited();
            died || (printed.exists()
                && Command::new("xwininfo")
                    .args(["-display", &x.name(), "-name", "overlord-test"])
                    .output()
                    .map(|o| {
                        o.status.success()
                            && String::from_utf8_lossy(&o.stdout).contains("IsViewable")
                    })
                    .unwrap_or(false))
        },
    )?;
    if died {
        bail!("xterm exited; log:\n{}", log_tail(&log, 8));
    }
    let mut last: Option<Vec<u8>> = None;
    let mut same = 0;
    wait_until(
        Duration::from_secs(20),
        "xterm drawn (screen unchanged)",
        || {
            let now = xwd_rgb(x).map(|(_, _, px)| px).ok();
            same = if now.is_some() && now == last {
                same + 1
            } else {
                0
            };
            last = now;
            if same < 2 {
                std::thread::sleep(Duration::from_millis(100));
            }
            same >= 2
        },
    )?;
    Ok(p)
}

/// The X server's own image of its root window: `xwd -root`, parsed here (XWD version 7).
pub fn xwd_rgb(x: &XServer) -> Result<(u32, u32, Vec<u8>)> {
    need("xwd", "x11-apps");
    let out = Command::new("xwd")
        .args(["-root", "-silent", "-display", &x.name()])
        .output()?;
    if !out.status.success() {
        bail!("xwd failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_xwd(&out.stdout)
}

pub fn parse_xwd(d: &[u8]) -> Result<(u32, u32, Vec<u8>)> {
    let f = |i: usize| u32::from_be_bytes(d[i * 4..i * 4 + 4].try_into().unwrap());
    let header_size = f(0) as usize;
    if f(1) != 7 {
        bail!("XWD version {}", f(1));
    }
    let (w, h) = (f(4), f(5));
    let byte_order = f(7); // 0 = LSBFirst
    let bpp = f(11) as usize;
    let bpl = f(12) as usize;
    let masks = [f(14), f(15), f(16)];
    let ncolors = f(19) as usize;
    if bpp != 32 {
        bail!("XWD with {bpp} bits per pixel");
    }
    let data = &d[header_size + ncolors * 12..];
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h as usize {
        for x in 0..w as usize {
            let p = &data[y * bpl + x * 4..y * bpl + x * 4 + 4];
            let v = if byte_order == 0 {
                u32::from_le_bytes(p.try_into().unwrap())
            } else {
                u32::from_be_bytes(p.try_into().unwrap())
            };
            for m in masks {
                rgb.push(((v & m) >> m.trailing_zeros()) as u8);
            }
        }
    }
    Ok((w, h, rgb))
}

/// Decodes a PNG into 8-bit RGB.
pub fn png_rgb(png_bytes: &[u8]) -> Result<(u32, u32, Vec<u8>)> {
    let dec = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = dec.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().context("png size")?];
    let info = reader.next_frame(&mut buf)?;
    if info.color_type != png::ColorType::Rgb || info.bit_depth != png::BitDepth::Eight {
        bail!("unexpected PNG {:?} {:?}", info.color_type, info.bit_depth);
    }
    buf.truncate(info.buffer_size());
    Ok((info.width, info.height, buf))
}

/// Pixels that differ, as (count, bounding box).
pub fn diff(a: &[u8], b: &[u8], w: u32) -> (usize, Option<(u32, u32, u32, u32)>) {
    let mut n = 0;
    let mut bb: Option<(u32, u32, u32, u32)> = None;
    for (i, (pa, pb)) in a.chunks_exact(3).zip(b.chunks_exact(3)).enumerate() {
        if pa != pb {
            n += 1;
            let (x, y) = (i as u32 % w, i as u32 / w);
            bb = Some(match bb {
                None => (x, y, x, y),
                Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
            });
        }
    }
    (n, bb)
}
