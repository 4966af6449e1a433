use std::time::Duration;

/// Why a screenshot or probe failed. Each variant names the phase or limit involved.
#[derive(Debug, thiserror::Error)]
pub enum ScreenError {
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out during {phase} (limit {limit:?}, {bytes_read} bytes read)")]
    Timeout {
        phase: &'static str,
        limit: Duration,
        bytes_read: u64,
    },
    #[error("server closed the connection during {phase} after {bytes_read} bytes")]
    Closed {
        phase: &'static str,
        bytes_read: u64,
    },
    #[error("i/o error during {phase}: {source}")]
    Io {
        phase: &'static str,
        source: std::io::Error,
    },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("unsupported RFB version {0:?}")]
    UnsupportedVersion(String),
    #[error("{what} {value} exceeds the limit {limit}")]
    Limit {
        what: &'static str,
        value: u64,
        limit: u64,
    },
    #[error("rectangle {w}x{h}+{x}+{y} lies outside the {fb_w}x{fb_h} framebuffer")]
    RectOutOfBounds {
        x: u32,
        y: u32,
        w: u32,
        h: u32,
        fb_w: u32,
        fb_h: u32,
    },
    #[error("server sent encoding {0}, which was not requested or is unsupported")]
    UnsupportedEncoding(i32),
    #[error("corrupt compressed data: {0}")]
    Zlib(String),
    #[error("unsupported pixel format: {0}")]
    PixelFormat(String),
    #[error("PNG encoding failed: {0}")]
    Png(String),
    #[error("X11: {0}")]
    X11(String),
    #[error("no complete frame: {0}")]
    Incomplete(String),
}
