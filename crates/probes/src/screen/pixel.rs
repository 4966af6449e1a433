//! RFB pixel formats (RFC 6143 §7.4) and their conversion to 8-bit RGB.

use serde::{Deserialize, Serialize};

use super::ScreenError;

/// An RFB PIXEL_FORMAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PixelFormat {
    pub bits_per_pixel: u8,
    pub depth: u8,
    pub big_endian: bool,
    pub true_colour: bool,
    pub red_max: u16,
    pub green_max: u16,
    pub blue_max: u16,
    pub red_shift: u8,
    pub green_shift: u8,
    pub blue_shift: u8,
}

/// The finding schema's record of a pixel format.
impl From<PixelFormat> for overlord_core::finding::screen::PixelFormat {
    fn from(p: PixelFormat) -> Self {
        let PixelFormat {
            bits_per_pixel,
            depth,
            big_endian,
            true_colour,
            red_max,
            green_max,
            blue_max,
            red_shift,
            green_shift,
            blue_shift,
        } = p;
        Self {
            bits_per_pixel,
            depth,
            big_endian,
            true_colour,
            red_max,
            green_max,
            blue_max,
            red_shift,
            green_shift,
            blue_shift,
        }
    }
}

impl PixelFormat {
    /// 32 bits per pixel, depth 24, little-endian, red at bit 16: the cheapest format to convert.
    pub const RGB888: PixelFormat = PixelFormat {
        bits_per_pixel: 32,
        depth: 24,
        big_endian: false,
        true_colour: true,
        red_max: 255,
        green_max: 255,
        blue_max: 255,
        red_shift: 16,
        green_shift: 8,
        blue_shift: 0,
    };

    /// 16 bits per pixel, RGB565 little-endian.
    pub const RGB565: PixelFormat = PixelFormat {
        bits_per_pixel: 16,
        depth: 16,
        big_endian: false,
        true_colour: true,
        red_max: 31,
        green_max: 63,
        blue_max: 31,
        red_shift: 11,
        green_shift: 5,
        blue_shift: 0,
    };

    /// Parses the 16-byte wire form.
    pub fn parse(b: &[u8; 16]) -> PixelFormat {
        PixelFormat {
            bits_per_pixel: b[0],
            depth: b[1],
            big_endian: b[2] != 0,
            true_colour: b[3] != 0,
            red_max: u16::from_be_bytes([b[4], b[5]]),
            green_max: u16::from_be_bytes([b[6], b[7]]),
            blue_max: u16::from_be_bytes([b[8], b[9]]),
            red_shift: b[10],
            green_shift: b[11],
            blue_shift: b[12],
        }
    }

    /// The 16-byte wire form.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = self.bits_per_pixel;
        b[1] = self.depth;
        b[2] = u8::from(self.big_endian);
        b[3] = u8::from(self.true_colour);
        b[4..6].copy_from_slice(&self.red_max.to_be_bytes());
        b[6..8].copy_from_slice(&self.green_max.to_be_bytes());
        b[8..10].copy_from_slice(&self.blue_max.to_be_bytes());
        b[10] = self.red_shift;
        b[11] = self.green_shift;
        b[12] = self.blue_shift;
        b
    }

    /// Bytes per pixel on the wire.
    pub fn bytes_per_pixel(&self) -> usize {
        usize::from(self.bits_per_pixel / 8)
    }

    /// Checks that we can decode this format.
    pub fn validate(&self) -> Result<(), ScreenError> {
        if !matches!(self.bits_per_pixel, 8 | 16 | 32) {
            return Err(ScreenError::PixelFormat(format!(
                "{} bits per pixel",
                self.bits_per_pixel
            )));
        }
        if self.true_colour {
            for (name, max, shift) in [
                ("red", self.red_max, self.red_shift),
                ("green", self.green_max, self.green_shift),
                ("blue", self.blue_max, self.blue_shift),
            ] {
                if max == 0 || u32::from(shift) >= u32::from(self.bits_per_pixel) {
                    return Err(ScreenError::PixelFormat(format!(
                        "{name} max {max} shift {shift} at {} bpp",
                        self.bits_per_pixel
                    )));
                }
            }
        }
        Ok(())
    }

    /// ZRLE's CPIXEL size (RFC 6143 §7.7.6): 3 bytes when a 32-bit true-colour pixel with
    /// depth <= 24 keeps all colour bits in its low or high three bytes.
    pub fn cpixel_len(&self) -> usize {
        if self.true_colour && self.bits_per_pixel == 32 && self.depth <= 24 {
            let mask = self.colour_mask();
            if mask & 0xff00_0000 == 0 || mask & 0x0000_00ff == 0 {
                return 3;
            }
        }
        self.bytes_per_pixel()
    }

    /// Whether a 3-byte CPIXEL holds the high three bytes of the pixel value.
    fn cpixel_high(&self) -> bool {
        self.colour_mask() & 0xff00_0000 != 0
    }

    fn colour_mask(&self) -> u32 {
        let m = |max: u16, shift: u8| u32::from(max).checked_shl(u32::from(shift)).unwrap_or(0);
        m(self.red_max, self.red_shift)
            | m(self.green_max, self.green_shift)
            | m(self.blue_max, self.blue_shift)
    }
}

/// Converts pixel values of one [`PixelFormat`] to RGB with lookup tables.
#[derive(Debug, Clone)]
pub struct Converter {
    pf: PixelFormat,
    red: Vec<u8>,
    green: Vec<u8>,
    blue: Vec<u8>,
    /// Colour map (index → RGB) for non-true-colour formats.
    palette: Vec<[u8; 3]>,
    fast_rgb888: bool,
}

fn scale_table(max: u16) -> Vec<u8> {
    (0..=u32::from(max))
        .map(|v| ((v * 255 + u32::from(max) / 2) / u32::from(max)) as u8)
        .collect()
}

impl Converter {
    pub fn new(pf: PixelFormat) -> Result<Self, ScreenError> {
        pf.validate()?;
        let (red, green, blue) = if pf.true_colour {
            (
                scale_table(pf.red_max),
                scale_table(pf.green_max),
                scale_table(pf.blue_max),
            )
        } else {
            (Vec::new(), Vec::new(), Vec::new())
        };
        let fast_rgb888 = pf.true_colour
            && pf.bits_per_pixel == 32
            && (pf.red_max, pf.green_max, pf.blue_max) == (255, 255, 255)
            && (pf.red_shift, pf.green_shift, pf.blue_shift) == (16, 8, 0);
        Ok(Self {
            pf,
            red,
            green,
            blue,
            palette: vec![[0, 0, 0]; 256],
            fast_rgb888,
        })
    }

    pub fn format(&self) -> &PixelFormat {
        &self.pf
    }

    /// Applies SetColourMapEntries (16-bit channel values).
    pub fn set_colours(&mut self, first: u16, colours: &[[u16; 3]]) {
        for (i, c) in colours.iter().enumerate() {
            let idx = usize::from(first) + i;
            if idx >= self.palette.len() {
                if idx >= 65536 {
                    break;
                }
                self.palette.resize(idx + 1, [0, 0, 0]);
            }
            self.palette[idx] = [(c[0] >> 8) as u8, (c[1] >> 8) as u8, (c[2] >> 8) as u8];
        }
    }

    /// Reads one pixel value of `bytes_per_pixel` bytes.
    #[inline]
    pub fn read_value(&self, b: &[u8]) -> u32 {
        match (b.len(), self.pf.big_endian) {
            (1, _) => u32::from(b[0]),
            (2, false) => u32::from(u16::from_le_bytes([b[0], b[1]])),
            (2, true) => u32::from(u16::from_be_bytes([b[0], b[1]])),
            (4, false) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            (4, true) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            _ => 0,
        }
    }

    /// Reads one ZRLE CPIXEL (3 bytes or a full pixel).
    #[inline]
    pub fn read_cvalue(&self, b: &[u8]) -> u32 {
        if b.len() == 3 {
            // The three bytes are the low or high bytes of the pixel in its byte order.
            let v = if self.pf.big_endian {
                u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2])
            } else {
                u32::from(b[2]) << 16 | u32::from(b[1]) << 8 | u32::from(b[0])
            };
            if self.pf.cpixel_high() { v << 8 } else { v }
        } else {
            self.read_value(b)
        }
    }

    /// Pixel value → RGB.
    #[inline]
    pub fn rgb(&self, v: u32) -> [u8; 3] {
        if self.fast_rgb888 {
            return [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        }
        if self.pf.true_colour {
            let ch =
                |table: &[u8], shift: u8, max: u16| table[((v >> shift) & u32::from(max)) as usize];
            [
                ch(&self.red, self.pf.red_shift, self.pf.red_max),
                ch(&self.green, self.pf.green_shift, self.pf.green_max),
                ch(&self.blue, self.pf.blue_shift, self.pf.blue_max),
            ]
        } else {
            self.palette.get(v as usize).copied().unwrap_or([0, 0, 0])
        }
    }

    /// Converts a row of wire pixels into RGB (`out.len() == 3 * pixels`).
    pub fn convert_row(&self, src: &[u8], out: &mut [u8]) {
        let bpp = self.pf.bytes_per_pixel();
        if self.fast_rgb888 && !self.pf.big_endian {
            for (s, d) in src.chunks_exact(4).zip(out.chunks_exact_mut(3)) {
                d[0] = s[2];
                d[1] = s[1];
                d[2] = s[0];
            }
            return;
        }
        for (s, d) in src.chunks_exact(bpp).zip(out.chunks_exact_mut(3)) {
            d.copy_from_slice(&self.rgb(self.read_value(s)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_roundtrip() {
        for pf in [PixelFormat::RGB888, PixelFormat::RGB565] {
            assert_eq!(PixelFormat::parse(&pf.to_bytes()), pf);
        }
    }

    #[test]
    fn rgb888_and_565_convert() {
        let c = Converter::new(PixelFormat::RGB888).unwrap();
        let mut out = [0u8; 6];
        c.convert_row(&[0x30, 0x20, 0x10, 0, 0xff, 0x00, 0x80, 0], &mut out);
        assert_eq!(out, [0x10, 0x20, 0x30, 0x80, 0x00, 0xff]);

        let c = Converter::new(PixelFormat::RGB565).unwrap();
        let white = 0xffffu16.to_le_bytes();
        let red = 0xf800u16.to_le_bytes();
        let mut out = [0u8; 6];
        c.convert_row(&[white[0], white[1], red[0], red[1]], &mut out);
        assert_eq!(out, [255, 255, 255, 255, 0, 0]);
    }

    #[test]
    fn big_endian_and_cpixel() {
        let mut pf = PixelFormat::RGB888;
        pf.big_endian = true;
        let c = Converter::new(pf).unwrap();
        assert_eq!(
            c.rgb(c.read_value(&[0, 0x11, 0x22, 0x33])),
            [0x11, 0x22, 0x33]
        );
        assert_eq!(pf.cpixel_len(), 3);
        assert_eq!(
            c.rgb(c.read_cvalue(&[0x11, 0x22, 0x33])),
            [0x11, 0x22, 0x33]
        );
        // colour bits in the high three bytes
        let mut hi = PixelFormat::RGB888;
        hi.red_shift = 24;
        hi.green_shift = 16;
        hi.blue_shift = 8;
        let c = Converter::new(hi).unwrap();
        assert_eq!(hi.cpixel_len(), 3);
        assert_eq!(
            c.rgb(c.read_cvalue(&[0x33, 0x22, 0x11])),
            [0x11, 0x22, 0x33]
        );
    }

    #[test]
    fn colour_map() {
        let pf = PixelFormat {
            true_colour: false,
            bits_per_pixel: 8,
            depth: 8,
            ..PixelFormat::RGB888
        };
        let mut c = Converter::new(pf).unwrap();
        c.set_colours(5, &[[0xffff, 0x8000, 0]]);
        assert_eq!(c.rgb(5), [255, 128, 0]);
        assert_eq!(c.rgb(6), [0, 0, 0]);
    }

    #[test]
    fn rejects_bad_formats() {
        let bad = PixelFormat {
            bits_per_pixel: 24,
            ..PixelFormat::RGB888
        };
        assert!(Converter::new(bad).is_err());
        let bad = PixelFormat {
            red_max: 0,
            ..PixelFormat::RGB888
        };
        assert!(Converter::new(bad).is_err());
        let bad = PixelFormat {
            red_shift: 40,
            ..PixelFormat::RGB888
        };
        assert!(Converter::new(bad).is_err());
    }
}
