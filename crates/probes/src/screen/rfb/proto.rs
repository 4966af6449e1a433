//! RFB wire constants, handshake parsing and client message encoding (RFC 6143).

use serde::Serialize;

use crate::screen::{PixelFormat, ScreenError};

/// Negotiated protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum RfbVersion {
    #[serde(rename = "3.3")]
    V3_3,
    #[serde(rename = "3.7")]
    V3_7,
    #[serde(rename = "3.8")]
    V3_8,
}

impl RfbVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            RfbVersion::V3_3 => "3.3",
            RfbVersion::V3_7 => "3.7",
            RfbVersion::V3_8 => "3.8",
        }
    }

    /// The 12-byte ProtocolVersion message we answer with.
    pub fn banner(self) -> &'static [u8; 12] {
        match self {
            RfbVersion::V3_3 => b"RFB 003.003\n",
            RfbVersion::V3_7 => b"RFB 003.007\n",
            RfbVersion::V3_8 => b"RFB 003.008\n",
        }
    }
}

/// Parses the server's ProtocolVersion and picks the version we speak.
///
/// Servers announcing more than 3.8 (RealVNC 4+/5, Apple's 3.889) accept 3.8; the odd minor
/// versions 3.4–3.6 (UltraVNC, some embedded servers) are treated as 3.3, as the RFC advises.
pub fn parse_version(b: &[u8; 12]) -> Result<RfbVersion, ScreenError> {
    let shown = String::from_utf8_lossy(b).escape_debug().to_string();
    if &b[0..4] != b"RFB " || b[7] != b'.' || b[11] != b'\n' {
        return Err(ScreenError::Protocol(format!(
            "not an RFB server: banner {shown:?}"
        )));
    }
    let num = |s: &[u8]| -> Option<u32> {
        s.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let (Some(major), Some(minor)) = (num(&b[4..7]), num(&b[8..11])) else {
        return Err(ScreenError::Protocol(format!(
            "not an RFB server: banner {shown:?}"
        )));
    };
    match (major, minor) {
        (3, m) if m >= 8 => Ok(RfbVersion::V3_8),
        (3, 7) => Ok(RfbVersion::V3_7),
        (3, 3..=6) => Ok(RfbVersion::V3_3),
        (m, _) if m > 3 => Ok(RfbVersion::V3_8),
        _ => Err(ScreenError::UnsupportedVersion(shown)),
    }
}

/// Human name of an RFB security type (IANA registry).
pub fn security_type_name(t: u8) -> &'static str {
    match t {
        0 => "Invalid",
        1 => "None",
        2 => "VNC Authentication",
        5 => "RA2",
        6 => "RA2ne",
        16 => "Tight",
        17 => "Ultra",
        18 => "TLS",
        19 => "VeNCrypt",
        20 => "GTK-VNC SASL",
        21 => "MD5 hash authentication",
        22 => "Colin Dean xvp",
        30 => "Apple Remote Desktop (Diffie-Hellman)",
        113 | 117 => "MSLogon II",
        129 => "Unix Login (Tight)",
        _ => "unknown",
    }
}

/// Encodings this client implements (plus the pseudo-encodings it always announces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Encoding {
    Raw,
    CopyRect,
    Rre,
    Hextile,
    Tight,
    Zrle,
}

pub const ENC_RAW: i32 = 0;
pub const ENC_COPYRECT: i32 = 1;
pub const ENC_RRE: i32 = 2;
pub const ENC_HEXTILE: i32 = 5;
pub const ENC_TIGHT: i32 = 7;
pub const ENC_ZRLE: i32 = 16;
pub const ENC_CURSOR: i32 = -239;
pub const ENC_DESKTOP_SIZE: i32 = -223;
pub const ENC_LAST_RECT: i32 = -224;
/// LibVNCServer's ServerIdentity pseudo-encoding (0xFFFE0003): the server answers with one
/// rectangle carrying its version string ("x11vnc: ... (LibVNCServer 0.9.14)").
pub const ENC_SERVER_IDENTITY: i32 = 0xFFFE_0003_u32 as i32;

impl Encoding {
    pub fn code(self) -> i32 {
        match self {
            Encoding::Raw => ENC_RAW,
            Encoding::CopyRect => ENC_COPYRECT,
            Encoding::Rre => ENC_RRE,
            Encoding::Hextile => ENC_HEXTILE,
            Encoding::Tight => ENC_TIGHT,
            Encoding::Zrle => ENC_ZRLE,
        }
    }
}

pub fn encoding_name(code: i32) -> String {
    match code {
        ENC_RAW => "Raw".into(),
        ENC_COPYRECT => "CopyRect".into(),
        ENC_RRE => "RRE".into(),
        ENC_HEXTILE => "Hextile".into(),
        ENC_TIGHT => "Tight".into(),
        ENC_ZRLE => "ZRLE".into(),
        ENC_CURSOR => "Cursor".into(),
        ENC_DESKTOP_SIZE => "DesktopSize".into(),
        ENC_LAST_RECT => "LastRect".into(),
        ENC_SERVER_IDENTITY => "ServerIdentity".into(),
        c => format!("{c}"),
    }
}

/// SetPixelFormat (type 0).
pub fn set_pixel_format(pf: &PixelFormat) -> [u8; 20] {
    let mut m = [0u8; 20];
    m[4..20].copy_from_slice(&pf.to_bytes());
    m
}

/// SetEncodings (type 2).
pub fn set_encodings(codes: &[i32]) -> Vec<u8> {
    let mut m = vec![2u8, 0];
    m.extend_from_slice(&(codes.len() as u16).to_be_bytes());
    for c in codes {
        m.extend_from_slice(&c.to_be_bytes());
    }
    m
}

/// FramebufferUpdateRequest (type 3).
pub fn update_request(incremental: bool, x: u16, y: u16, w: u16, h: u16) -> [u8; 10] {
    let mut m = [0u8; 10];
    m[0] = 3;
    m[1] = u8::from(incremental);
    m[2..4].copy_from_slice(&x.to_be_bytes());
    m[4..6].copy_from_slice(&y.to_be_bytes());
    m[6..8].copy_from_slice(&w.to_be_bytes());
    m[8..10].copy_from_slice(&h.to_be_bytes());
    m
}

/// A rectangle header of a FramebufferUpdate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RectHeader {
    pub x: u16,
    pub y: u16,
    pub w: u16,
    pub h: u16,
    pub encoding: i32,
}

impl RectHeader {
    pub fn parse(b: &[u8; 12]) -> RectHeader {
        RectHeader {
            x: u16::from_be_bytes([b[0], b[1]]),
            y: u16::from_be_bytes([b[2], b[3]]),
            w: u16::from_be_bytes([b[4], b[5]]),
            h: u16::from_be_bytes([b[6], b[7]]),
            encoding: i32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version(b"RFB 003.008\n").unwrap(), RfbVersion::V3_8);
        assert_eq!(parse_version(b"RFB 003.889\n").unwrap(), RfbVersion::V3_8);
        assert_eq!(parse_version(b"RFB 005.000\n").unwrap(), RfbVersion::V3_8);
        assert_eq!(parse_version(b"RFB 003.007\n").unwrap(), RfbVersion::V3_7);
        assert_eq!(parse_version(b"RFB 003.005\n").unwrap(), RfbVersion::V3_3);
        assert_eq!(parse_version(b"RFB 003.003\n").unwrap(), RfbVersion::V3_3);
        assert!(matches!(
            parse_version(b"RFB 002.000\n"),
            Err(ScreenError::UnsupportedVersion(_))
        ));
        assert!(matches!(
            parse_version(b"SSH-2.0-Open"),
            Err(ScreenError::Protocol(_))
        ));
        assert!(matches!(
            parse_version(b"RFB 0x3.008\n"),
            Err(ScreenError::Protocol(_))
        ));
    }

    #[test]
    fn version_serializes_as_number() {
        assert_eq!(serde_json::to_string(&RfbVersion::V3_8).unwrap(), "\"3.8\"");
    }

    #[test]
    fn messages() {
        assert_eq!(
            update_request(false, 0, 0, 1024, 768),
            [3, 0, 0, 0, 0, 0, 4, 0, 3, 0]
        );
        assert_eq!(
            set_encodings(&[16, -239]),
            vec![2, 0, 0, 2, 0, 0, 0, 16, 0xff, 0xff, 0xff, 0x11]
        );
        let m = set_pixel_format(&PixelFormat::RGB888);
        assert_eq!(m[0], 0);
        assert_eq!(
            PixelFormat::parse(m[4..20].try_into().unwrap()),
            PixelFormat::RGB888
        );
        let r = RectHeader::parse(&[0, 1, 0, 2, 0, 3, 0, 4, 0, 0, 0, 16]);
        assert_eq!(
            r,
            RectHeader {
                x: 1,
                y: 2,
                w: 3,
                h: 4,
                encoding: 16
            }
        );
    }
}
