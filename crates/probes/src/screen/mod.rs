//! Remote-desktop screenshots (VNC/RFB, X11) and RDP security probing.
//!
//! Everything here is a plain library: no cluster types. Each entry point is bounded in
//! time ([`ScreenOptions::total_timeout`]), in bytes read, in decompressed bytes and in pixels, so
//! a hostile server ends with a precise [`ScreenError`] instead of exhausting the host.
//!
//! - [`vnc_screenshot`]: RFB 3.3/3.7/3.8 client (security type None only; when the server wants
//!   authentication the offered types are recorded, no password is ever tried), Raw, CopyRect,
//!   ZRLE and Tight (without JPEG) encodings, any true-colour or colour-map pixel format.
//! - [`x11_screenshot`]: root-window image of an X server reachable over TCP that accepts us.
//! - [`rdp_probe`]: X.224 connection requests with RDP negotiation: supported security protocols
//!   and whether Network Level Authentication (CredSSP) is required.

mod error;
mod image;
pub mod pixel;
pub mod rdp;
pub mod rfb;
pub mod x11;

use std::time::Duration;

pub use error::ScreenError;
pub use image::{Screenshot, encode_png, sha256_hex};
pub use pixel::PixelFormat;
pub use rdp::{Rdp, RdpProtocol, rdp_probe};
pub use rfb::{Encoding, SettleUpdate, VncCapture, vnc_screenshot};
pub use x11::{X11Capture, X11Screen, x11_screenshot};

/// Whether an RFB capture waits for late updates after the first full frame.
///
/// x11vnc polls the X screen instead of being told about changes, and does not poll at all
/// while no client is connected: its framebuffer is a copy of the screen as it was when the
/// last client left. After a new client connects it resumes polling, one scanline in 32 per
/// tile row per pass (every 20 ms, 100 ms when idle): a change spanning many rows is caught by
/// the first pass, before the first frame is sent, while a thin change (a few pixel rows) can
/// take several passes and arrives as incremental updates after the first frame. When x11vnc
/// is busy (e.g. just started), even its first pass can come after the first frame, which is
/// then wholly stale; the settle rounds wait for its passes, however slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SettlePolicy {
    /// Settle only for servers known to poll: LibVNCServer-based servers (x11vnc and
    /// others), recognised by their answer to the ServerIdentity pseudo-encoding.
    Auto,
    /// Settle for every server.
    Always,
    /// Trust the first full frame.
    Never,
}

/// Limits and preferences shared by the screenshot clients.
#[derive(Debug, Clone)]
pub struct ScreenOptions {
    /// Time allowed to establish the TCP connection.
    pub connect_timeout: Duration,
    /// Longest silence tolerated while waiting for data from the server.
    pub io_timeout: Duration,
    /// Hard limit for the whole capture (connect, handshake, frames, PNG encoding excluded).
    pub total_timeout: Duration,
    /// Largest accepted framebuffer width or height.
    pub max_dimension: u32,
    /// Largest accepted number of pixels (width * height).
    pub max_pixels: u64,
    /// Largest number of bytes read from the server over the whole capture.
    pub max_bytes: u64,
    /// Largest number of bytes produced by zlib streams (ZRLE/Tight) over the whole capture.
    pub max_decompressed_bytes: u64,
    /// RFB encodings offered to the server, in order of preference.
    pub encodings: Vec<Encoding>,
    /// Pixel format requested from an RFB server; `None` keeps the server's native format.
    pub pixel_format: Option<PixelFormat>,
    /// How many full frames an RFB capture may fetch to get two identical consecutive ones
    /// (1 = trust the first frame). x11vnc may serve a stale first frame; see DESIGN.md.
    pub max_frames: u32,
    /// When to wait for late incremental updates after the full frame(s); see [`SettlePolicy`].
    pub settle_policy: SettlePolicy,
    /// Settle phase: stop after this many consecutive "ping" rounds brought nothing new. A
    /// round (an incremental request for the screen + a non-incremental one for one pixel)
    /// spans at least one scan pass of a polling server; x11vnc scans one row in 32 of each
    /// tile row per pass, so a change N rows tall is found within about 32/N passes.
    pub settle_passes: u32,
    /// Longest wait for the answer to one settle round (a server that does not answer has
    /// nothing to send). Zero disables settling.
    pub settle: Duration,
    /// Upper bound of the whole settle phase (measured from the end of the full frame).
    pub settle_max: Duration,
    /// PNG compression level.
    pub png_compression: png::Compression,
}

impl Default for ScreenOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(30),
            max_dimension: 16384,
            // 8K UHD; the RGB buffer is at most ~100 MB.
            max_pixels: 7680 * 4320,
            max_bytes: 512 * 1024 * 1024,
            max_decompressed_bytes: 1024 * 1024 * 1024,
            encodings: vec![
                Encoding::Zrle,
                Encoding::Tight,
                Encoding::CopyRect,
                Encoding::Raw,
            ],
            pixel_format: Some(PixelFormat::RGB888),
            max_frames: 1,
            settle_policy: SettlePolicy::Auto,
            settle_passes: 3,
            settle: Duration::from_millis(500),
            settle_max: Duration::from_millis(2000),
            png_compression: png::Compression::Fast,
        }
    }
}

impl ScreenOptions {
    pub(crate) fn check_size(&self, width: u32, height: u32) -> Result<(), ScreenError> {
        if width > self.max_dimension || height > self.max_dimension {
            return Err(ScreenError::Limit {
                what: "framebuffer dimension",
                value: u64::from(width.max(height)),
                limit: u64::from(self.max_dimension),
            });
        }
        let pixels = u64::from(width) * u64::from(height);
        if pixels > self.max_pixels {
            return Err(ScreenError::Limit {
                what: "framebuffer pixels",
                value: pixels,
                limit: self.max_pixels,
            });
        }
        Ok(())
    }
}

/// Milliseconds elapsed, as recorded in capture timings.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
