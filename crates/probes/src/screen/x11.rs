//! X11 root-window screenshots over TCP (x11rb's pure-Rust connection).
//!
//! x11rb is blocking: the capture runs on a blocking thread, and the async side enforces the
//! overall deadline by shutting the socket down, which wakes the blocked thread. A byte-level
//! guard in front of x11rb refuses oversized replies before x11rb allocates them.

use std::io::IoSlice;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;
use x11rb::connection::Connection;
use x11rb::errors::ConnectError;
use x11rb::protocol::xproto::{self, ImageFormat, ImageOrder, VisualClass};
use x11rb::rust_connection::{DefaultStream, PollMode, RustConnection, Stream};
use x11rb::utils::RawFdContainer;

use super::{ScreenError, ScreenOptions, Screenshot, ms};

pub use overlord_core::finding::screen::X11Screen;

/// What an X11 probe learned, with the root window image when the server accepted us.
#[derive(Debug, Clone, Serialize)]
pub struct X11Capture {
    /// True when the connection setup succeeded without credentials.
    pub open: bool,
    /// Why the server refused the setup ("Failed" or "Authenticate" reason text).
    pub refused_reason: Option<String>,
    pub protocol_version: Option<String>,
    pub vendor: Option<String>,
    pub release: Option<u32>,
    pub screens: Vec<X11Screen>,
    pub screenshot: Option<Screenshot>,
    pub connect_ms: f64,
    pub total_ms: f64,
}

impl X11Capture {
    /// The finding schema's record of this capture (every field moved by name and type) and the
    /// screenshot, which travels as a blob.
    pub fn into_record(self) -> (overlord_core::finding::X11Capture, Option<Screenshot>) {
        let X11Capture {
            open,
            refused_reason,
            protocol_version,
            vendor,
            release,
            screens,
            screenshot,
            connect_ms,
            total_ms,
        } = self;
        let record = overlord_core::finding::X11Capture {
            open,
            refused_reason,
            protocol_version,
            vendor,
            release,
            screens,
            connect_ms,
            total_ms,
        };
        (record, screenshot)
    }
}

/// The TCP address of display `:n` on loopback (port 6000 + n).
pub fn display_addr(display: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 6000 + display))
}

/// Connects to the X server at `addr`, records its setup and captures screen 0's root window.
pub async fn x11_screenshot(
    addr: SocketAddr,
    opts: &ScreenOptions,
) -> Result<X11Capture, ScreenError> {
    let start = Instant::now();
    let stream = tokio::time::timeout(opts.connect_timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| ScreenError::Timeout {
            phase: "connect",
            limit: opts.connect_timeout,
            bytes_read: 0,
        })?
        .map_err(|e| ScreenError::Connect {
            addr: addr.to_string(),
            source: e,
        })?;
    super::rfb::reject_self_connect(&stream, addr)?;
    let connect_ms = ms(start.elapsed());
    let std_stream = stream.into_std().map_err(|e| ScreenError::Io {
        phase: "connect",
        source: e,
    })?;
    let killer = std_stream.try_clone().map_err(|e| ScreenError::Io {
        phase: "connect",
        source: e,
    })?;
    let opts2 = opts.clone();
    let guard = std::sync::Arc::new(Mutex::new(Guard::new(&opts2)));
    let guard2 = guard.clone();
    let job = tokio::task::spawn_blocking(move || capture_blocking(std_stream, &opts2, guard2));
    let left = opts.total_timeout.saturating_sub(start.elapsed());
    let mut cap = match tokio::time::timeout(left, job).await {
        Ok(joined) => {
            joined.map_err(|e| ScreenError::X11(format!("capture thread failed: {e}")))??
        }
        Err(_) => {
            // Wake the blocked x11rb thread; it ends with an I/O error we no longer wait for.
            let _ = killer.shutdown(std::net::Shutdown::Both);
            let bytes_read = guard.lock().map(|g| g.total).unwrap_or(0);
            return Err(ScreenError::Timeout {
                phase: "x11 capture",
                limit: opts.total_timeout,
                bytes_read,
            });
        }
    };
    cap.connect_ms = connect_ms;
    cap.total_ms = ms(start.elapsed());
    Ok(cap)
}

fn x11_err(e: impl std::fmt::Display) -> ScreenError {
    ScreenError::X11(e.to_string())
}

fn capture_blocking(
    tcp: TcpStream,
    opts: &ScreenOptions,
    guard: std::sync::Arc<Mutex<Guard>>,
) -> Result<X11Capture, ScreenError> {
    let (inner, _) = DefaultStream::from_tcp_stream(tcp).map_err(|e| ScreenError::Io {
        phase: "x11 setup",
        source: e,
    })?;
    let stream = GuardedStream { inner, guard };
    let mut cap = X11Capture {
        open: false,
        refused_reason: None,
        protocol_version: None,
        vendor: None,
        release: None,
        screens: Vec::new(),
        screenshot: None,
        connect_ms: 0.0,
        total_ms: 0.0,
    };
    let conn = match RustConnection::connect_to_stream(stream, 0) {
        Ok(c) => c,
        Err(ConnectError::SetupFailed(f)) => {
            cap.protocol_version = Some(format!(
                "{}.{}",
                f.protocol_major_version, f.protocol_minor_version
            ));
            cap.refused_reason = Some(
                String::from_utf8_lossy(&f.reason)
                    .trim_end_matches('\0')
                    .to_string(),
            );
            return Ok(cap);
        }
        Err(ConnectError::SetupAuthenticate(a)) => {
            cap.refused_reason = Some(
                String::from_utf8_lossy(&a.reason)
                    .trim_end_matches('\0')
                    .to_string(),
            );
            return Ok(cap);
        }
        Err(e) => return Err(x11_err(format!("connection setup: {e}"))),
    };
    let setup = conn.setup();
    cap.open = true;
    cap.protocol_version = Some(format!(
        "{}.{}",
        setup.protocol_major_version, setup.protocol_minor_version
    ));
    cap.vendor = Some(String::from_utf8_lossy(&setup.vendor).into_owned());
    cap.release = Some(setup.release_number);
    cap.screens = setup
        .roots
        .iter()
        .map(|s| X11Screen {
            width: s.width_in_pixels,
            height: s.height_in_pixels,
            width_mm: s.width_in_millimeters,
            height_mm: s.height_in_millimeters,
            root_depth: s.root_depth,
        })
        .collect();
    let screen = &setup.roots[0];
    let (w, h) = (screen.width_in_pixels, screen.height_in_pixels);
    opts.check_size(u32::from(w), u32::from(h))?;

    let visual = screen
        .allowed_depths
        .iter()
        .flat_map(|d| d.visuals.iter())
        .find(|v| v.visual_id == screen.root_visual)
        .ok_or_else(|| x11_err("root visual not found in setup"))?;
    if !matches!(
        visual.class,
        VisualClass::TRUE_COLOR | VisualClass::DIRECT_COLOR
    ) {
        return Err(x11_err(format!(
            "root visual class {:?} is not true colour",
            visual.class
        )));
    }
    let format = setup
        .pixmap_formats
        .iter()
        .find(|f| f.depth == screen.root_depth)
        .ok_or_else(|| x11_err(format!("no pixmap format for depth {}", screen.root_depth)))?;
    let bpp = usize::from(format.bits_per_pixel);
    if !matches!(bpp, 16 | 24 | 32) {
        return Err(x11_err(format!("{bpp} bits per pixel is unsupported")));
    }
    let pad = usize::from(format.scanline_pad).max(8);
    let stride = (usize::from(w) * bpp).div_ceil(pad) * pad / 8;
    let lsb = setup.image_byte_order == ImageOrder::LSB_FIRST;
    let chans = [visual.red_mask, visual.green_mask, visual.blue_mask].map(Channel::new);

    // Fetch in strips of at most 4 MiB so no single reply is huge.
    let strip_rows = ((4usize << 20) / stride.max(1)).clamp(1, usize::from(h.max(1)));
    let mut rgb = vec![0u8; usize::from(w) * usize::from(h) * 3];
    let root = screen.root;
    let mut y = 0usize;
    while y < usize::from(h) {
        let rows = strip_rows.min(usize::from(h) - y);
        let reply = xproto::get_image(
            &conn,
            ImageFormat::Z_PIXMAP,
            root,
            0,
            y as i16,
            w,
            rows as u16,
            !0,
        )
        .map_err(x11_err)?
        .reply()
        .map_err(|e| x11_err(format!("GetImage: {e}")))?;
        if reply.data.len() < stride * rows {
            return Err(x11_err(format!(
                "GetImage returned {} bytes, expected {}",
                reply.data.len(),
                stride * rows
            )));
        }
        for r in 0..rows {
            let src = &reply.data[r * stride..r * stride + usize::from(w) * bpp / 8];
            let dst = &mut rgb[(y + r) * usize::from(w) * 3..(y + r + 1) * usize::from(w) * 3];
            for (s, d) in src.chunks_exact(bpp / 8).zip(dst.chunks_exact_mut(3)) {
                let v = match (s.len(), lsb) {
                    (4, true) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
                    (4, false) => u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
                    (3, true) => u32::from_le_bytes([s[0], s[1], s[2], 0]),
                    (3, false) => u32::from_be_bytes([0, s[0], s[1], s[2]]),
                    (2, true) => u32::from(u16::from_le_bytes([s[0], s[1]])),
                    _ => u32::from(u16::from_be_bytes([s[0], s[1]])),
                };
                d[0] = chans[0].get(v);
                d[1] = chans[1].get(v);
                d[2] = chans[2].get(v);
            }
        }
        y += rows;
    }
    cap.screenshot = Some(Screenshot::from_rgb(
        u32::from(w),
        u32::from(h),
        &rgb,
        opts.png_compression,
    )?);
    Ok(cap)
}

/// Extracts one colour channel from a visual mask and scales it to 8 bits.
#[derive(Clone, Copy)]
struct Channel {
    shift: u32,
    max: u32,
}

impl Channel {
    fn new(mask: u32) -> Self {
        let shift = if mask == 0 { 0 } else { mask.trailing_zeros() };
        Self {
            shift,
            max: mask.checked_shr(shift).unwrap_or(0),
        }
    }

    #[inline]
    fn get(self, v: u32) -> u8 {
        if self.max == 0 {
            return 0;
        }
        let c = (v >> self.shift) & self.max;
        if self.max == 255 {
            c as u8
        } else {
            ((c * 255 + self.max / 2) / self.max) as u8
        }
    }
}

/// Tracks X11 packet framing on the bytes x11rb reads and refuses any packet whose announced
/// size exceeds the limit, before x11rb allocates a buffer for it.
struct Guard {
    in_setup: bool,
    header: [u8; 32],
    have: usize,
    skip: u64,
    total: u64,
    max_packet: u64,
    max_total: u64,
}

impl Guard {
    fn new(opts: &ScreenOptions) -> Self {
        Self {
            in_setup: true,
            header: [0; 32],
            have: 0,
            skip: 0,
            total: 0,
            max_packet: 16 << 20,
            max_total: opts.max_bytes,
        }
    }

    fn feed(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        self.total += data.len() as u64;
        if self.total > self.max_total {
            return Err(std::io::Error::other(format!(
                "X11 server sent more than {} bytes",
                self.max_total
            )));
        }
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len() as u64);
                self.skip -= n;
                data = &data[n as usize..];
                continue;
            }
            let hdr = if self.in_setup { 8 } else { 32 };
            let n = (hdr - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have < hdr {
                break;
            }
            self.have = 0;
            let h = &self.header;
            // x11rb speaks native byte order in its setup request.
            let extra = if self.in_setup {
                self.in_setup = false;
                u64::from(u16::from_ne_bytes([h[6], h[7]])) * 4
            } else if h[0] == 1 || h[0] & 0x7f == 35 {
                u64::from(u32::from_ne_bytes([h[4], h[5], h[6], h[7]])) * 4
            } else {
                0
            };
            if extra > self.max_packet {
                return Err(std::io::Error::other(format!(
                    "X11 packet announces {extra} bytes, limit {}",
                    self.max_packet
                )));
            }
            self.skip = extra;
        }
        Ok(())
    }
}

struct GuardedStream {
    inner: DefaultStream,
    guard: std::sync::Arc<Mutex<Guard>>,
}

impl Stream for GuardedStream {
    fn poll(&self, mode: PollMode) -> std::io::Result<()> {
        self.inner.poll(mode)
    }

    fn read(&self, buf: &mut [u8], fd_storage: &mut Vec<RawFdContainer>) -> std::io::Result<usize> {
        let n = self.inner.read(buf, fd_storage)?;
        let mut g = self
            .guard
            .lock()
            .map_err(|_| std::io::Error::other("guard poisoned"))?;
        g.feed(&buf[..n])?;
        Ok(n)
    }

    fn write(&self, buf: &[u8], fds: &mut Vec<RawFdContainer>) -> std::io::Result<usize> {
        self.inner.write(buf, fds)
    }

    fn write_vectored(
        &self,
        bufs: &[IoSlice<'_>],
        fds: &mut Vec<RawFdContainer>,
    ) -> std::io::Result<usize> {
        self.inner.write_vectored(bufs, fds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_scaling() {
        assert_eq!(Channel::new(0xff0000).get(0x123456), 0x12);
        assert_eq!(Channel::new(0xf800).get(0xf800), 255);
        assert_eq!(Channel::new(0x07e0).get(0x0400), 130);
        assert_eq!(Channel::new(0).get(0xffff_ffff), 0);
    }

    #[test]
    fn guard_refuses_huge_reply() {
        let mut g = Guard::new(&ScreenOptions::default());
        let mut setup = [0u8; 8];
        setup[0] = 1;
        setup[6..8].copy_from_slice(&2u16.to_ne_bytes());
        g.feed(&setup).unwrap();
        g.feed(&[0u8; 8]).unwrap(); // setup body
        let mut reply = [0u8; 32];
        reply[0] = 1;
        reply[4..8].copy_from_slice(&10u32.to_ne_bytes());
        g.feed(&reply[..5]).unwrap();
        g.feed(&reply[5..]).unwrap();
        g.feed(&[0u8; 40]).unwrap();
        let mut event = [0u8; 32];
        event[0] = 12; // Expose: no body
        g.feed(&event).unwrap();
        reply[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(g.feed(&reply).is_err());
    }
}
