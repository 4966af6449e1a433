//! RFB (VNC) screenshot client, RFC 6143.
//!
//! Flow: ProtocolVersion → security (None only; offered types recorded) → ClientInit (shared,
//! so other viewers stay connected) → ServerInit → SetPixelFormat/SetEncodings → non-incremental
//! FramebufferUpdateRequest until a frame covers the whole screen (optionally more full frames
//! until two are identical, [`ScreenOptions::max_frames`]), then, for servers that poll the
//! screen (x11vnc), "ping" rounds until [`ScreenOptions::settle_passes`] consecutive scans of
//! the server found nothing new (see [`SettlePolicy`]).

mod decode;
mod io;
pub mod proto;

use std::net::SocketAddr;
use std::time::Instant;

use flate2::Decompress;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::pixel::Converter;
use super::{PixelFormat, ScreenError, ScreenOptions, Screenshot, SettlePolicy, ms};
pub use decode::{
    Framebuffer, Rect, TightFilter, decode_tight_basic, decode_zrle, inflate_bounded,
};
use io::Conn;
use proto::*;
pub use proto::{Encoding, RfbVersion, encoding_name, parse_version, security_type_name};

pub use overlord_core::finding::screen::{SettleUpdate, VncTimings};

/// What an RFB capture learned, with the screenshot when the server let us in.
#[derive(Debug, Clone, Serialize)]
pub struct VncCapture {
    /// The server's ProtocolVersion banner, e.g. "RFB 003.008".
    pub server_version: String,
    /// The version we spoke.
    pub protocol_version: RfbVersion,
    /// Security types offered (3.7+) or imposed (3.3) by the server.
    pub security_types: Vec<u8>,
    pub security_type_names: Vec<String>,
    /// True when the server offers no "None" security type: no screenshot was attempted.
    pub auth_required: bool,
    /// Reason string sent by the server when it refused the connection.
    pub security_failure: Option<String>,
    pub desktop_name: Option<String>,
    /// Version string sent in answer to the ServerIdentity pseudo-encoding (LibVNCServer).
    pub server_identity: Option<String>,
    pub width: u32,
    pub height: u32,
    /// The server's native pixel format (from ServerInit).
    pub server_pixel_format: Option<PixelFormat>,
    /// Encodings the server used for the captured frames.
    pub encodings_used: Vec<String>,
    /// Full frames fetched, and whether the last two were identical.
    pub frames: u32,
    pub stable: bool,
    /// Whether the settle phase ran (policy and server kind, see [`SettlePolicy`]).
    pub settled: bool,
    /// Settle rounds (each spans at least one scan pass of a polling server).
    pub settle_rounds: u32,
    /// Updates received while settling that changed something (beyond the pinged pixel).
    pub settle_updates: u32,
    /// The first of those updates (at most 32): when and how much they painted.
    pub settle_log: Vec<SettleUpdate>,
    pub bytes_read: u64,
    pub screenshot: Option<Screenshot>,
    pub timings: VncTimings,
}

impl VncCapture {
    /// The finding schema's record of this capture (every field moved by name and type: a field
    /// added on one side only does not compile) and the screenshot, which travels as a blob.
    pub fn into_record(self) -> (overlord_core::finding::VncCapture, Option<Screenshot>) {
        let VncCapture {
            server_version,
            protocol_version,
            security_types,
            security_type_names,
            auth_required,
            security_failure,
            desktop_name,
            server_identity,
            width,
            height,
            server_pixel_format,
            encodings_used,
            frames,
            stable,
            settled,
            settle_rounds,
            settle_updates,
            settle_log,
            bytes_read,
            screenshot,
            timings,
        } = self;
        let record = overlord_core::finding::VncCapture {
            server_version,
            protocol_version: protocol_version.as_str().to_string(),
            security_types,
            security_type_names,
            auth_required,
            security_failure,
            desktop_name,
            server_identity,
            width,
            height,
            server_pixel_format: server_pixel_format.map(Into::into),
            encodings_used,
            frames,
            stable,
            settled,
            settle_rounds,
            settle_updates,
            settle_log,
            bytes_read,
            timings,
        };
        (record, screenshot)
    }
}

/// Connects to `addr` and captures the screen of an RFB server that needs no authentication.
///
/// Returns `Ok` with `auth_required = true` and no screenshot when the server demands a
/// password (no password is ever tried).
pub async fn vnc_screenshot(
    addr: SocketAddr,
    opts: &ScreenOptions,
) -> Result<VncCapture, ScreenError> {
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
    reject_self_connect(&stream, addr)?;
    let _ = stream.set_nodelay(true);
    let connect_ms = ms(start.elapsed());
    let mut cap = vnc_session(stream, opts).await?;
    cap.timings.connect_ms = connect_ms;
    cap.timings.total_ms = ms(start.elapsed());
    Ok(cap)
}

/// A loopback connect whose source equals its destination talks to itself, not to a server.
pub(crate) fn reject_self_connect(
    s: &tokio::net::TcpStream,
    addr: SocketAddr,
) -> Result<(), ScreenError> {
    if s.local_addr().ok() == Some(addr) {
        return Err(ScreenError::Connect {
            addr: addr.to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "self-connect (no listener)",
            ),
        });
    }
    Ok(())
}

/// Runs the RFB client over an established stream (a socket, or bytes in a test/fuzzer).
pub async fn vnc_session<S>(stream: S, opts: &ScreenOptions) -> Result<VncCapture, ScreenError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + opts.total_timeout;
    let mut conn = Conn::new(
        stream,
        opts.max_bytes,
        opts.io_timeout,
        deadline,
        opts.total_timeout,
    );

    conn.phase = "protocol version";
    let banner: [u8; 12] = conn.read_array().await?;
    let version = parse_version(&banner)?;
    let mut cap = VncCapture {
        server_version: String::from_utf8_lossy(&banner[..11]).into_owned(),
        protocol_version: version,
        security_types: Vec::new(),
        security_type_names: Vec::new(),
        auth_required: false,
        security_failure: None,
        desktop_name: None,
        server_identity: None,
        width: 0,
        height: 0,
        server_pixel_format: None,
        encodings_used: Vec::new(),
        frames: 0,
        stable: false,
        settled: false,
        settle_rounds: 0,
        settle_updates: 0,
        settle_log: Vec::new(),
        bytes_read: 0,
        screenshot: None,
        timings: VncTimings::default(),
    };
    conn.write_all(version.banner()).await?;

    conn.phase = "security handshake";
    if !security(&mut conn, version, &mut cap).await? {
        cap.bytes_read = conn.bytes_read;
        cap.timings.handshake_ms = ms(start.elapsed());
        return Ok(cap);
    }

    // ClientInit: shared = 1, never kick other viewers off.
    conn.phase = "server init";
    conn.write_all(&[1]).await?;
    let width = u32::from(conn.u16().await?);
    let height = u32::from(conn.u16().await?);
    let server_pf = PixelFormat::parse(&conn.read_array().await?);
    let name_len = conn.u32().await?;
    const MAX_NAME: u32 = 64 * 1024;
    if name_len > MAX_NAME {
        return Err(ScreenError::Limit {
            what: "desktop name length",
            value: name_len.into(),
            limit: MAX_NAME.into(),
        });
    }
    let name = conn.read_vec(name_len as usize).await?;
    cap.desktop_name = Some(String::from_utf8_lossy(&name).into_owned());
    cap.width = width;
    cap.height = height;
    cap.server_pixel_format = Some(server_pf);
    cap.timings.handshake_ms = ms(start.elapsed());
    opts.check_size(width, height)?;

    let pf = opts.pixel_format.unwrap_or(server_pf);
    let conv = Converter::new(pf)?;
    if opts.pixel_format.is_some() {
        conn.write_all(&set_pixel_format(&pf)).await?;
    }
    let mut codes: Vec<i32> = opts.encodings.iter().map(|e| e.code()).collect();
    codes.extend([
        ENC_CURSOR,
        ENC_DESKTOP_SIZE,
        ENC_LAST_RECT,
        ENC_SERVER_IDENTITY,
    ]);
    conn.write_all(&set_encodings(&codes)).await?;

    let mut st = Session {
        fb: Framebuffer::new(width, height),
        conv,
        zrle: Decompress::new(true),
        tight: [
            Decompress::new(true),
            Decompress::new(true),
            Decompress::new(true),
            Decompress::new(true),
        ],
        zbuf: Vec::new(),
        rbuf: Vec::new(),
        decompressed: 0,
        max_decompressed: opts.max_decompressed_bytes,
        // Every client must accept Raw (RFC 6143 7.7.1), even unrequested: TigerVNC sends
        // small rectangles Raw when Hextile or RRE would be larger.
        allowed: [codes.as_slice(), &[ENC_RAW]].concat(),
        used: Vec::new(),
        identity: None,
        update_rects: 0,
        update_pixels: 0,
        opts,
    };

    let frames_start = Instant::now();
    let mut previous: Option<Vec<u8>> = None;
    let max_frames = opts.max_frames.max(1);
    loop {
        conn.phase = "framebuffer update";
        st.read_frame(&mut conn).await?;
        cap.frames += 1;
        if cap.frames == 1 {
            cap.timings.first_frame_ms = ms(frames_start.elapsed());
        }
        if let Some(prev) = &previous {
            if *prev == st.fb.rgb {
                cap.stable = true;
                break;
            }
            debug!(frame = cap.frames, "frame differs from the previous one");
        }
        if cap.frames >= max_frames {
            break;
        }
        previous = Some(st.fb.rgb.clone());
    }
    cap.server_identity = st.identity.clone();
    let polls = st.identity.as_deref().is_some_and(polling_server);
    cap.settled = !opts.settle.is_zero()
        && match opts.settle_policy {
            SettlePolicy::Never => false,
            SettlePolicy::Always => true,
            SettlePolicy::Auto => polls,
        };
    if cap.settled {
        conn.phase = "settle (incremental updates)";
        let settle_start = Instant::now();
        let max = opts.settle_max.max(opts.settle);
        // A first frame slower than BUSY means a busy poller (x11vnc right after it started:
        // ~1.2 s, wholly stale, the fresh picture ~0.8 s later) whose loop answers requests
        // without scanning for a while: keep settling 1.5x that long (measured: the fresh
        // picture came 0.54-0.94x the first frame's time after it). A normal 1024x768 first
        // frame takes 3-120 ms on loopback.
        const BUSY: std::time::Duration = std::time::Duration::from_millis(300);
        let first = std::time::Duration::from_secs_f64(cap.timings.first_frame_ms / 1000.0);
        let min = if first >= BUSY {
            (first * 3 / 2).min(max)
        } else {
            std::time::Duration::ZERO
        };
        let (rounds, log) = st
            .settle(&mut conn, opts.settle_passes.max(1), min, opts.settle, max)
            .await?;
        cap.settle_rounds = rounds;
        cap.settle_updates = log.len() as u32;
        cap.timings.last_settle_update_ms = log.last().map(|u| u.at_ms);
        cap.timings.settle_ms = ms(settle_start.elapsed());
        cap.settle_log = log.into_iter().take(32).collect();
        debug!(
            updates = cap.settle_updates,
            settle_ms = ms(settle_start.elapsed()),
            "settled"
        );
    }
    cap.timings.frames_ms = ms(frames_start.elapsed());
    cap.width = st.fb.width;
    cap.height = st.fb.height;
    cap.encodings_used = st
        .used
        .iter()
        .filter(|&&c| c >= 0)
        .map(|&c| encoding_name(c))
        .collect();
    cap.bytes_read = conn.bytes_read;
    cap.screenshot = Some(Screenshot::from_rgb(
        st.fb.width,
        st.fb.height,
        &st.fb.rgb,
        opts.png_compression,
    )?);
    Ok(cap)
}

/// Security handshake. Returns `false` when authentication would be needed (recorded in `cap`).
async fn security<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    version: RfbVersion,
    cap: &mut VncCapture,
) -> Result<bool, ScreenError> {
    let types = if version == RfbVersion::V3_3 {
        let t = conn.u32().await?;
        if t > 255 {
            return Err(ScreenError::Protocol(format!(
                "RFB 3.3 security type {t} out of range"
            )));
        }
        vec![t as u8]
    } else {
        let n = conn.u8().await?;
        if n == 0 {
            vec![0]
        } else {
            conn.read_vec(usize::from(n)).await?
        }
    };
    cap.security_type_names = types
        .iter()
        .map(|&t| security_type_name(t).to_string())
        .collect();
    cap.security_types = types.clone();
    if types == [0] {
        // Connection refused, with a reason string.
        cap.security_failure = Some(read_reason(conn).await?);
        cap.auth_required = true;
        return Ok(false);
    }
    if !types.contains(&1) {
        cap.auth_required = true;
        return Ok(false);
    }
    if version != RfbVersion::V3_3 {
        conn.write_all(&[1]).await?;
    }
    if version == RfbVersion::V3_8 {
        let result = conn.u32().await?;
        if result != 0 {
            cap.security_failure = Some(read_reason(conn).await?);
            cap.auth_required = true;
            return Ok(false);
        }
    }
    Ok(true)
}

/// Servers that poll the screen rather than being told about changes, by their
/// ServerIdentity string: every LibVNCServer-based server answers it (x11vnc leaves the version
/// part "unknown"; the library name is always there).
fn polling_server(identity: &str) -> bool {
    identity.contains("LibVNCServer") || identity.starts_with("x11vnc")
}

async fn read_reason<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
) -> Result<String, ScreenError> {
    let len = conn.u32().await?;
    // Keep at most 4 KiB of the reason; a longer one is still consumed within the byte budget.
    let keep = len.min(4096) as usize;
    let text = conn.read_vec(keep).await?;
    conn.skip(u64::from(len) - keep as u64).await?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

struct Session<'o> {
    fb: Framebuffer,
    conv: Converter,
    zrle: Decompress,
    tight: [Decompress; 4],
    zbuf: Vec<u8>,
    rbuf: Vec<u8>,
    decompressed: u64,
    max_decompressed: u64,
    allowed: Vec<i32>,
    used: Vec<i32>,
    identity: Option<String>,
    /// Rectangles and pixels painted by the last FramebufferUpdate.
    update_rects: u32,
    update_pixels: u64,
    opts: &'o ScreenOptions,
}

impl Session<'_> {
    fn request_full(&self) -> [u8; 10] {
        update_request(false, 0, 0, self.fb.width as u16, self.fb.height as u16)
    }

    /// Requests a full update and reads messages until the whole screen has been painted.
    async fn read_frame<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
    ) -> Result<(), ScreenError> {
        conn.write_all(&self.request_full()).await?;
        self.fb.reset_coverage();
        loop {
            let msg = conn.u8().await?;
            match self.handle_message(conn, msg).await? {
                Some(true) => conn.write_all(&self.request_full()).await?,
                Some(false) => {
                    let covered = self.fb.covered_pixels();
                    if covered == self.fb.pixels() {
                        return Ok(());
                    }
                    conn.phase = "framebuffer update (partial screen so far)";
                    debug!(
                        covered,
                        total = self.fb.pixels(),
                        "partial update, waiting for more"
                    );
                }
                None => {}
            }
        }
    }

    /// Settle phase: "ping" rounds until `passes` consecutive rounds bring no change (or
    /// `max` has elapsed). A round sends an incremental request for the whole screen plus a
    /// non-incremental one for the pixel at (0, 0), which the server must answer: a
    /// LibVNCServer poller (x11vnc) answers in a later turn of the loop that also scans the
    /// screen, merging every change found so far into that answer. Each round therefore spans
    /// at least one scan pass of the server, whatever its speed, and `passes` quiet rounds mean
    /// that many scans found nothing new. A round unanswered within `quiet` counts as quiet.
    /// Rounds go on for at least `min`.
    /// Returns the rounds and the updates that changed something.
    async fn settle<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        passes: u32,
        min: std::time::Duration,
        quiet: std::time::Duration,
        max: std::time::Duration,
    ) -> Result<(u32, Vec<SettleUpdate>), ScreenError> {
        let start = Instant::now();
        let end = start + max;
        let mut log = Vec::new();
        let (mut rounds, mut quiet_rounds) = (0u32, 0u32);
        'rounds: while (quiet_rounds < passes || start.elapsed() < min) && Instant::now() < end {
            let (w, h) = (self.fb.width as u16, self.fb.height as u16);
            let mut ping = update_request(true, 0, 0, w, h).to_vec();
            ping.extend(update_request(false, 0, 0, 1, 1));
            conn.write_all(&ping).await?;
            rounds += 1;
            loop {
                let wait = quiet.min(end.saturating_duration_since(Instant::now()));
                // Reading one byte is cancel-safe: it is either consumed or left in the buffer.
                let msg = match tokio::time::timeout(wait, conn.u8()).await {
                    Err(_) if Instant::now() >= end => break 'rounds,
                    Err(_) => {
                        quiet_rounds += 1;
                        continue 'rounds;
                    }
                    Ok(m) => m?,
                };
                match self.handle_message(conn, msg).await? {
                    Some(true) => {
                        // Resized: fetch the new screen in full, then start counting again.
                        self.read_frame(conn).await?;
                        quiet_rounds = 0;
                        continue 'rounds;
                    }
                    Some(false) => {
                        // only the (0, 0) pixel we asked for: this scan found nothing new
                        if self.update_pixels <= 1 {
                            quiet_rounds += 1;
                        } else {
                            quiet_rounds = 0;
                            log.push(SettleUpdate {
                                at_ms: ms(start.elapsed()),
                                rects: self.update_rects,
                                pixels: self.update_pixels,
                            });
                        }
                        continue 'rounds;
                    }
                    None => {}
                }
            }
        }
        Ok((rounds, log))
    }

    /// Handles one server message whose type byte was read. Returns `Some(resized)` for a
    /// FramebufferUpdate, `None` for other messages.
    async fn handle_message<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        msg: u8,
    ) -> Result<Option<bool>, ScreenError> {
        match msg {
            0 => return Ok(Some(self.read_update(conn).await?)),
            1 => {
                let _pad = conn.u8().await?;
                let first = conn.u16().await?;
                let n = conn.u16().await?;
                let raw = conn.read_vec(usize::from(n) * 6).await?;
                let colours: Vec<[u16; 3]> = raw
                    .chunks_exact(6)
                    .map(|c| {
                        [
                            u16::from_be_bytes([c[0], c[1]]),
                            u16::from_be_bytes([c[2], c[3]]),
                            u16::from_be_bytes([c[4], c[5]]),
                        ]
                    })
                    .collect();
                self.conv.set_colours(first, &colours);
            }
            2 => {}
            3 => {
                let _pad: [u8; 3] = conn.read_array().await?;
                let len = conn.u32().await?;
                const MAX_CUT: u32 = 1 << 20;
                if len > MAX_CUT {
                    return Err(ScreenError::Limit {
                        what: "cut text length",
                        value: len.into(),
                        limit: MAX_CUT.into(),
                    });
                }
                conn.skip(u64::from(len)).await?;
            }
            t => {
                return Err(ScreenError::Protocol(format!(
                    "unknown server message type {t}"
                )));
            }
        }
        Ok(None)
    }

    /// Reads one FramebufferUpdate (after its type byte). Returns true on a DesktopSize change.
    async fn read_update<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
    ) -> Result<bool, ScreenError> {
        let _pad = conn.u8().await?;
        let n = conn.u16().await?;
        let mut resized = false;
        self.update_rects = 0;
        self.update_pixels = 0;
        for _ in 0..n {
            let h = RectHeader::parse(&conn.read_array().await?);
            if !self.allowed.contains(&h.encoding) {
                return Err(ScreenError::UnsupportedEncoding(h.encoding));
            }
            if !self.used.contains(&h.encoding) {
                self.used.push(h.encoding);
            }
            if h.encoding >= 0 {
                self.update_rects += 1;
                self.update_pixels += u64::from(h.w) * u64::from(h.h);
            }
            match h.encoding {
                ENC_LAST_RECT => break,
                ENC_SERVER_IDENTITY => {
                    // x = y = h = 0, w = length of the NUL-terminated string that follows.
                    let text = conn.read_vec(usize::from(h.w)).await?;
                    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
                    self.identity = Some(String::from_utf8_lossy(&text[..end]).into_owned());
                }
                ENC_CURSOR => {
                    let bpp = self.conv.format().bytes_per_pixel() as u64;
                    let (w, hh) = (u64::from(h.w), u64::from(h.h));
                    const MAX_CURSOR: u64 = 1024 * 1024;
                    if w * hh > MAX_CURSOR {
                        return Err(ScreenError::Limit {
                            what: "cursor pixels",
                            value: w * hh,
                            limit: MAX_CURSOR,
                        });
                    }
                    conn.skip(w * hh * bpp + w.div_ceil(8) * hh).await?;
                }
                ENC_DESKTOP_SIZE => {
                    self.opts.check_size(u32::from(h.w), u32::from(h.h))?;
                    self.fb = Framebuffer::new(u32::from(h.w), u32::from(h.h));
                    resized = true;
                }
                ENC_RAW => {
                    let r = self.fb.rect(h.x, h.y, h.w, h.h)?;
                    self.read_raw(conn, r).await?;
                    self.fb.mark(r);
                }
                ENC_COPYRECT => {
                    let r = self.fb.rect(h.x, h.y, h.w, h.h)?;
                    let sx = conn.u16().await?;
                    let sy = conn.u16().await?;
                    self.fb.copy_rect(r, sx, sy)?;
                    self.fb.mark(r);
                }
                ENC_ZRLE => {
                    let r = self.fb.rect(h.x, h.y, h.w, h.h)?;
                    let cp = self.conv.format().cpixel_len();
                    let bound = decode::zrle_bound(r.w, r.h, cp);
                    let len = conn.u32().await? as usize;
                    // deflate never expands by more than ~0.1% plus a few bytes per flush.
                    let max_len = bound + bound / 64 + 4096;
                    if len > max_len {
                        return Err(ScreenError::Limit {
                            what: "ZRLE compressed length",
                            value: len as u64,
                            limit: max_len as u64,
                        });
                    }
                    conn.read_into(&mut self.rbuf, len).await?;
                    let limit = self.inflate_limit(bound);
                    inflate_bounded(&mut self.zrle, &self.rbuf, limit, &mut self.zbuf)?;
                    self.decompressed += self.zbuf.len() as u64;
                    decode_zrle(&self.zbuf, r, &self.conv, &mut self.fb)?;
                    self.fb.mark(r);
                }
                ENC_TIGHT => {
                    let r = self.fb.rect(h.x, h.y, h.w, h.h)?;
                    self.read_tight(conn, r).await?;
                    self.fb.mark(r);
                }
                ENC_RRE => {
                    let r = self.fb.rect(h.x, h.y, h.w, h.h)?;
                    self.read_rre(conn, r).await?;
                    self.fb.mark(r);
                }
                ENC_HEXTILE => {
                    let r = self.fb.rect(h.x, h.y, h.w, h.h)?;
                    self.read_hextile(conn, r).await?;
                    self.fb.mark(r);
                }
                e => return Err(ScreenError::UnsupportedEncoding(e)),
            }
        }
        Ok(resized)
    }

    /// Per-rectangle inflate limit: the rectangle's own bound, capped by what is left of the
    /// session's decompression budget.
    fn inflate_limit(&self, bound: usize) -> usize {
        let left = self.max_decompressed.saturating_sub(self.decompressed);
        (bound as u64).min(left) as usize
    }

    async fn read_raw<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        r: Rect,
    ) -> Result<(), ScreenError> {
        let row_bytes = r.w * self.conv.format().bytes_per_pixel();
        if row_bytes == 0 || r.h == 0 {
            return Ok(());
        }
        let rows_per_chunk = (1usize << 20).div_ceil(row_bytes).max(1);
        let mut row = 0;
        while row < r.h {
            let rows = rows_per_chunk.min(r.h - row);
            conn.read_into(&mut self.rbuf, rows * row_bytes).await?;
            for i in 0..rows {
                let src = &self.rbuf[i * row_bytes..(i + 1) * row_bytes];
                self.conv.convert_row(src, self.fb.row_mut(r, row + i));
            }
            row += rows;
        }
        Ok(())
    }

    /// Reads one pixel of the session's pixel format as RGB.
    async fn read_pixel<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
    ) -> Result<[u8; 3], ScreenError> {
        let bpp = self.conv.format().bytes_per_pixel();
        let mut p = [0u8; 4];
        for b in p.iter_mut().take(bpp) {
            *b = conn.u8().await?;
        }
        Ok(self.conv.rgb(self.conv.read_value(&p[..bpp])))
    }

    /// RRE (encoding 2): subrectangle count, background pixel, then the subrectangles. At most
    /// one subrectangle per pixel of the rectangle, and their total area at most 4x the
    /// rectangle's (plus 64 Ki): the work done is bounded by the rectangle size.
    async fn read_rre<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        r: Rect,
    ) -> Result<(), ScreenError> {
        let n = u64::from(conn.u32().await?);
        let area = (r.w * r.h) as u64;
        if n > area {
            return Err(ScreenError::Limit {
                what: "RRE subrectangle count",
                value: n,
                limit: area,
            });
        }
        let bg = self.read_pixel(conn).await?;
        self.fb.fill(r, bg);
        let rec = self.conv.format().bytes_per_pixel() + 8;
        let (mut painted, max_painted) = (0u64, area * 4 + 65536);
        let mut left = n as usize;
        while left > 0 {
            let k = left.min(65536);
            conn.read_into(&mut self.rbuf, k * rec).await?;
            decode::paint_rre_subrects(
                &self.rbuf[..k * rec],
                r,
                &self.conv,
                &mut self.fb,
                &mut painted,
                max_painted,
            )?;
            left -= k;
        }
        Ok(())
    }

    /// Hextile (encoding 5): 16x16 tiles, left to right, top to bottom; each Raw, or a
    /// background (kept from the previous tile unless given) plus up to 255 subrectangles.
    /// A tile costs at most 16x16 + 255x256 pixel writes.
    async fn read_hextile<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        r: Rect,
    ) -> Result<(), ScreenError> {
        const RAW: u8 = 1;
        const BG: u8 = 2;
        const FG: u8 = 4;
        const ANY_SUBRECTS: u8 = 8;
        const COLOURED: u8 = 16;
        let bpp = self.conv.format().bytes_per_pixel();
        let (mut bg, mut fg): (Option<[u8; 3]>, Option<[u8; 3]>) = (None, None);
        for ty in (0..r.h).step_by(16) {
            for tx in (0..r.w).step_by(16) {
                let tile = Rect {
                    x: r.x + tx,
                    y: r.y + ty,
                    w: (r.w - tx).min(16),
                    h: (r.h - ty).min(16),
                };
                let sub = conn.u8().await?;
                if sub & !(RAW | BG | FG | ANY_SUBRECTS | COLOURED) != 0 {
                    return Err(ScreenError::Protocol(format!(
                        "Hextile tile at +{}+{}: undefined subencoding bits {sub:#04x}",
                        tile.x, tile.y
                    )));
                }
                if sub & RAW != 0 {
                    let row = tile.w * bpp;
                    conn.read_into(&mut self.rbuf, row * tile.h).await?;
                    for i in 0..tile.h {
                        let src = &self.rbuf[i * row..(i + 1) * row];
                        self.conv.convert_row(src, self.fb.row_mut(tile, i));
                    }
                    continue;
                }
                if sub & BG != 0 {
                    bg = Some(self.read_pixel(conn).await?);
                }
                let Some(b) = bg else {
                    return Err(ScreenError::Protocol(format!(
                        "Hextile tile at +{}+{} has no background (the first non-raw tile of a \
                         rectangle must specify one)",
                        tile.x, tile.y
                    )));
                };
                self.fb.fill(tile, b);
                if sub & FG != 0 {
                    fg = Some(self.read_pixel(conn).await?);
                }
                if sub & ANY_SUBRECTS != 0 {
                    let n = usize::from(conn.u8().await?);
                    let coloured = sub & COLOURED != 0;
                    let rec = if coloured { bpp + 2 } else { 2 };
                    conn.read_into(&mut self.rbuf, n * rec).await?;
                    decode::paint_hextile_subrects(
                        &self.rbuf[..n * rec],
                        coloured,
                        fg,
                        tile,
                        &self.conv,
                        &mut self.fb,
                    )?;
                }
            }
        }
        Ok(())
    }

    async fn read_tight<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        r: Rect,
    ) -> Result<(), ScreenError> {
        let ctl = conn.u8().await?;
        for i in 0..4 {
            if ctl & (1 << i) != 0 {
                self.tight[i] = Decompress::new(true);
            }
        }
        let tp = decode::tight_pixel_len(&self.conv);
        let kind = ctl >> 4;
        match kind {
            8 => {
                let p = conn.read_vec(tp).await?;
                let c = decode::tight_rgb(&self.conv, &p);
                self.fb.fill(r, c);
                return Ok(());
            }
            9 => {
                return Err(ScreenError::Protocol(
                    "Tight JPEG rectangle, but no JPEG quality was requested".into(),
                ));
            }
            k if k > 7 => {
                return Err(ScreenError::Protocol(format!(
                    "Tight compression type {k:#x} is invalid"
                )));
            }
            _ => {}
        }
        let stream = usize::from(kind & 3);
        let filter = if kind & 4 != 0 {
            match conn.u8().await? {
                0 => TightFilter::Copy,
                1 => {
                    let n = usize::from(conn.u8().await?) + 1;
                    let raw = conn.read_vec(n * tp).await?;
                    TightFilter::Palette(
                        raw.chunks_exact(tp)
                            .map(|p| decode::tight_rgb(&self.conv, p))
                            .collect(),
                    )
                }
                2 => TightFilter::Gradient,
                f => {
                    return Err(ScreenError::Protocol(format!(
                        "Tight filter {f} is invalid"
                    )));
                }
            }
        } else {
            TightFilter::Copy
        };
        let expected = filter.data_len(r.w, r.h, tp);
        if expected < 12 {
            let data = conn.read_vec(expected).await?;
            return decode_tight_basic(&data, &filter, r, &self.conv, &mut self.fb);
        }
        // compact length: 7 bits per byte, up to 3 bytes (22 bits)
        let mut len = 0usize;
        for i in 0..3 {
            let b = conn.u8().await?;
            if i == 2 {
                len |= usize::from(b) << 14;
                break;
            }
            len |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                break;
            }
        }
        let max_len = expected + expected / 64 + 4096;
        if len > max_len {
            return Err(ScreenError::Limit {
                what: "Tight compressed length",
                value: len as u64,
                limit: max_len as u64,
            });
        }
        conn.read_into(&mut self.rbuf, len).await?;
        let limit = self.inflate_limit(expected);
        inflate_bounded(&mut self.tight[stream], &self.rbuf, limit, &mut self.zbuf)?;
        self.decompressed += self.zbuf.len() as u64;
        decode_tight_basic(&self.zbuf, &filter, r, &self.conv, &mut self.fb)
    }
}
