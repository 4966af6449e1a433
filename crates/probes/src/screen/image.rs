use serde::Serialize;
use sha2::{Digest, Sha256};

use super::ScreenError;

/// A captured screen: the PNG bytes and their content address.
#[derive(Debug, Clone, Serialize)]
pub struct Screenshot {
    pub width: u32,
    pub height: u32,
    /// Lowercase hex SHA-256 of `png` (the content address used for storage).
    pub sha256: String,
    /// PNG, 8-bit RGB. Not serialized: it travels as a blob beside the metadata.
    #[serde(skip)]
    pub png: Vec<u8>,
    /// Time spent encoding the PNG, in milliseconds.
    pub encode_ms: f64,
}

impl Screenshot {
    /// Encodes an RGB buffer (`width * height * 3` bytes) as PNG and hashes it.
    pub fn from_rgb(
        width: u32,
        height: u32,
        rgb: &[u8],
        compression: png::Compression,
    ) -> Result<Self, ScreenError> {
        let t = std::time::Instant::now();
        let png = encode_png(width, height, rgb, compression)?;
        let encode_ms = super::ms(t.elapsed());
        Ok(Self {
            width,
            height,
            sha256: sha256_hex(&png),
            png,
            encode_ms,
        })
    }
}

/// Encodes 8-bit RGB pixels as PNG.
pub fn encode_png(
    width: u32,
    height: u32,
    rgb: &[u8],
    compression: png::Compression,
) -> Result<Vec<u8>, ScreenError> {
    let expected = width as usize * height as usize * 3;
    if rgb.len() != expected {
        return Err(ScreenError::Png(format!(
            "buffer has {} bytes, expected {expected}",
            rgb.len()
        )));
    }
    let mut out = Vec::with_capacity(expected / 4 + 1024);
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(compression);
    let mut w = enc
        .write_header()
        .map_err(|e| ScreenError::Png(e.to_string()))?;
    w.write_image_data(rgb)
        .map_err(|e| ScreenError::Png(e.to_string()))?;
    w.finish().map_err(|e| ScreenError::Png(e.to_string()))?;
    Ok(out)
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut s = String::with_capacity(64);
    for b in digest {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
    }
    s
}
