//! Pure decoders: framebuffer bookkeeping, bounded zlib, ZRLE tiles, Tight rectangles.
//! They work on byte slices so they can be unit-tested and fuzzed without sockets.

use flate2::{Decompress, FlushDecompress, Status};

use crate::screen::ScreenError;
use crate::screen::pixel::Converter;

/// The client's copy of the remote screen, 8-bit RGB, plus which pixels the current frame
/// has painted.
pub struct Framebuffer {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    covered: Vec<u8>,
}

/// A rectangle already checked to lie inside the framebuffer.
#[derive(Debug, Clone, Copy)]
pub struct Rect {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

impl Framebuffer {
    pub fn new(width: u32, height: u32) -> Self {
        let n = width as usize * height as usize;
        Self {
            width,
            height,
            rgb: vec![0; n * 3],
            covered: vec![0; n],
        }
    }

    /// Validates a rectangle against the framebuffer.
    pub fn rect(&self, x: u16, y: u16, w: u16, h: u16) -> Result<Rect, ScreenError> {
        let (x32, y32, w32, h32) = (u32::from(x), u32::from(y), u32::from(w), u32::from(h));
        if x32 + w32 > self.width || y32 + h32 > self.height {
            return Err(ScreenError::RectOutOfBounds {
                x: x32,
                y: y32,
                w: w32,
                h: h32,
                fb_w: self.width,
                fb_h: self.height,
            });
        }
        Ok(Rect {
            x: x as usize,
            y: y as usize,
            w: w as usize,
            h: h as usize,
        })
    }

    pub fn reset_coverage(&mut self) {
        self.covered.fill(0);
    }

    pub fn mark(&mut self, r: Rect) {
        let stride = self.width as usize;
        for row in r.y..r.y + r.h {
            self.covered[row * stride + r.x..row * stride + r.x + r.w].fill(1);
        }
    }

    /// Number of pixels painted since the last [`Framebuffer::reset_coverage`].
    pub fn covered_pixels(&self) -> usize {
        self.covered.iter().filter(|&&c| c != 0).count()
    }

    pub fn pixels(&self) -> usize {
        self.covered.len()
    }

    /// The RGB bytes of row `row` of `r`.
    #[inline]
    pub fn row_mut(&mut self, r: Rect, row: usize) -> &mut [u8] {
        let off = ((r.y + row) * self.width as usize + r.x) * 3;
        &mut self.rgb[off..off + r.w * 3]
    }

    /// CopyRect: copies the `r`-sized block at (`sx`, `sy`) to `r` (source checked too).
    pub fn copy_rect(&mut self, r: Rect, sx: u16, sy: u16) -> Result<(), ScreenError> {
        let src = self.rect(sx, sy, r.w as u16, r.h as u16)?;
        let stride = self.width as usize * 3;
        let rows: Box<dyn Iterator<Item = usize>> = if src.y < r.y {
            Box::new((0..r.h).rev())
        } else {
            Box::new(0..r.h)
        };
        for i in rows {
            let s = (src.y + i) * stride + src.x * 3;
            let d = (r.y + i) * stride + r.x * 3;
            self.rgb.copy_within(s..s + r.w * 3, d);
        }
        Ok(())
    }

    pub fn fill(&mut self, r: Rect, c: [u8; 3]) {
        for row in 0..r.h {
            for px in self.row_mut(r, row).chunks_exact_mut(3) {
                px.copy_from_slice(&c);
            }
        }
    }
}

/// Inflates `input` (one rectangle's worth of a persistent zlib stream) into `out`, refusing to
/// produce more than `limit` bytes: a compressed bomb fails here, after at most `limit` bytes.
pub fn inflate_bounded(
    z: &mut Decompress,
    input: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), ScreenError> {
    out.clear();
    let mut pos = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let (in0, out0) = (z.total_in(), z.total_out());
        let status = z
            .decompress(&input[pos..], &mut chunk, FlushDecompress::Sync)
            .map_err(|e| ScreenError::Zlib(e.to_string()))?;
        let consumed = (z.total_in() - in0) as usize;
        let produced = (z.total_out() - out0) as usize;
        pos += consumed;
        if out.len() + produced > limit {
            return Err(ScreenError::Limit {
                what: "decompressed bytes for one rectangle",
                value: (out.len() + produced) as u64,
                limit: limit as u64,
            });
        }
        out.extend_from_slice(&chunk[..produced]);
        if status == Status::StreamEnd {
            if pos < input.len() {
                return Err(ScreenError::Zlib(
                    "data after the end of the zlib stream".into(),
                ));
            }
            return Ok(());
        }
        if consumed == 0 && produced == 0 {
            // No progress: either everything is flushed, or the stream is stuck.
            if pos < input.len() {
                return Err(ScreenError::Zlib("zlib stream stalled".into()));
            }
            return Ok(());
        }
    }
}

/// Upper bound of ZRLE decompressed bytes for a `w`x`h` rectangle with `cp`-byte CPIXELs.
pub fn zrle_bound(w: usize, h: usize, cp: usize) -> usize {
    let tiles = w.div_ceil(64) * h.div_ceil(64);
    // worst tile: plain RLE with one-pixel runs (cpixel + 1 length byte per pixel), or a
    // palette RLE with a 127-colour palette and 2 bytes per pixel.
    w * h * (cp + 2) + tiles * (1 + 128 * cp)
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ScreenError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                ScreenError::Protocol(format!(
                    "ZRLE data truncated at byte {} (need {n} more)",
                    self.pos
                ))
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, ScreenError> {
        Ok(self.take(1)?[0])
    }

    fn run_length(&mut self) -> Result<usize, ScreenError> {
        let mut len = 1usize;
        loop {
            let b = self.u8()?;
            len += usize::from(b);
            if b != 255 {
                return Ok(len);
            }
            if len > 64 * 64 {
                return Err(ScreenError::Protocol("ZRLE run longer than a tile".into()));
            }
        }
    }
}

/// Decodes one ZRLE rectangle from its inflated bytes into `fb`.
pub fn decode_zrle(
    data: &[u8],
    r: Rect,
    conv: &Converter,
    fb: &mut Framebuffer,
) -> Result<(), ScreenError> {
    let cp = conv.format().cpixel_len();
    let mut c = Cursor { data, pos: 0 };
    let mut tile_rgb: Vec<[u8; 3]> = Vec::with_capacity(64 * 64);
    let mut palette: Vec<[u8; 3]> = Vec::with_capacity(128);
    for ty in (0..r.h).step_by(64) {
        for tx in (0..r.w).step_by(64) {
            let tw = (r.w - tx).min(64);
            let th = (r.h - ty).min(64);
            let n = tw * th;
            tile_rgb.clear();
            let sub = c.u8()?;
            match sub {
                0 => {
                    let raw = c.take(n * cp)?;
                    tile_rgb.extend(raw.chunks_exact(cp).map(|p| conv.rgb(conv.read_cvalue(p))));
                }
                1 => {
                    let px = conv.rgb(conv.read_cvalue(c.take(cp)?));
                    tile_rgb.resize(n, px);
                }
                2..=16 => {
                    let p = usize::from(sub);
                    palette.clear();
                    for _ in 0..p {
                        palette.push(conv.rgb(conv.read_cvalue(c.take(cp)?)));
                    }
                    let bits = match p {
                        2 => 1,
                        3 | 4 => 2,
                        _ => 4,
                    };
                    let row_bytes = (tw * bits).div_ceil(8);
                    let packed = c.take(row_bytes * th)?;
                    for row in packed.chunks_exact(row_bytes) {
                        for i in 0..tw {
                            let bit = i * bits;
                            let idx = (row[bit / 8] >> (8 - bits - bit % 8)) & ((1 << bits) - 1);
                            let col = palette.get(usize::from(idx)).ok_or_else(|| {
                                ScreenError::Protocol(format!("ZRLE palette index {idx} >= {p}"))
                            })?;
                            tile_rgb.push(*col);
                        }
                    }
                }
                128 => {
                    while tile_rgb.len() < n {
                        let px = conv.rgb(conv.read_cvalue(c.take(cp)?));
                        let len = c.run_length()?;
                        if tile_rgb.len() + len > n {
                            return Err(ScreenError::Protocol(
                                "ZRLE run overflows its tile".into(),
                            ));
                        }
                        tile_rgb.extend(std::iter::repeat_n(px, len));
                    }
                }
                130..=255 => {
                    let p = usize::from(sub - 128);
                    palette.clear();
                    for _ in 0..p {
                        palette.push(conv.rgb(conv.read_cvalue(c.take(cp)?)));
                    }
                    while tile_rgb.len() < n {
                        let b = c.u8()?;
                        let idx = usize::from(b & 0x7f);
                        let col = *palette.get(idx).ok_or_else(|| {
                            ScreenError::Protocol(format!("ZRLE palette index {idx} >= {p}"))
                        })?;
                        let len = if b & 0x80 != 0 { c.run_length()? } else { 1 };
                        if tile_rgb.len() + len > n {
                            return Err(ScreenError::Protocol(
                                "ZRLE run overflows its tile".into(),
                            ));
                        }
                        tile_rgb.extend(std::iter::repeat_n(col, len));
                    }
                }
                _ => {
                    return Err(ScreenError::Protocol(format!(
                        "ZRLE subencoding {sub} is undefined"
                    )));
                }
            }
            let tile = Rect {
                x: r.x + tx,
                y: r.y + ty,
                w: tw,
                h: th,
            };
            for (row, src) in tile_rgb.chunks_exact(tw).enumerate() {
                let dst = fb.row_mut(tile, row);
                for (d, s) in dst.chunks_exact_mut(3).zip(src) {
                    d.copy_from_slice(s);
                }
            }
        }
    }
    if c.pos != data.len() {
        return Err(ScreenError::Protocol(format!(
            "ZRLE rectangle has {} trailing bytes",
            data.len() - c.pos
        )));
    }
    Ok(())
}

/// Tight's TPIXEL: 3 bytes (R, G, B) for 32-bit 8-8-8 true colour, else a full pixel.
pub fn tight_pixel_len(conv: &Converter) -> usize {
    let pf = conv.format();
    if pf.true_colour
        && pf.bits_per_pixel == 32
        && pf.depth == 24
        && (pf.red_max, pf.green_max, pf.blue_max) == (255, 255, 255)
    {
        3
    } else {
        pf.bytes_per_pixel()
    }
}

/// Converts one TPIXEL to RGB.
#[inline]
pub fn tight_rgb(conv: &Converter, p: &[u8]) -> [u8; 3] {
    if p.len() == 3 {
        [p[0], p[1], p[2]]
    } else {
        conv.rgb(conv.read_value(p))
    }
}

/// Filters of Tight "basic" compression.
#[derive(Debug, Clone)]
pub enum TightFilter {
    Copy,
    Palette(Vec<[u8; 3]>),
    Gradient,
}

impl TightFilter {
    /// Size of the filtered data for a `w`x`h` rectangle.
    pub fn data_len(&self, w: usize, h: usize, tp: usize) -> usize {
        match self {
            TightFilter::Copy | TightFilter::Gradient => w * h * tp,
            TightFilter::Palette(p) if p.len() == 2 => w.div_ceil(8) * h,
            TightFilter::Palette(_) => w * h,
        }
    }
}

/// Decodes the (inflated) data of a Tight basic rectangle.
pub fn decode_tight_basic(
    data: &[u8],
    filter: &TightFilter,
    r: Rect,
    conv: &Converter,
    fb: &mut Framebuffer,
) -> Result<(), ScreenError> {
    let tp = tight_pixel_len(conv);
    let expected = filter.data_len(r.w, r.h, tp);
    if data.len() != expected {
        return Err(ScreenError::Protocol(format!(
            "Tight data is {} bytes, expected {expected}",
            data.len()
        )));
    }
    match filter {
        TightFilter::Copy => {
            for row in 0..r.h {
                let src = &data[row * r.w * tp..(row + 1) * r.w * tp];
                let dst = fb.row_mut(r, row);
                for (d, s) in dst.chunks_exact_mut(3).zip(src.chunks_exact(tp)) {
                    d.copy_from_slice(&tight_rgb(conv, s));
                }
            }
        }
        TightFilter::Palette(p) => {
            let row_bytes = if p.len() == 2 { r.w.div_ceil(8) } else { r.w };
            for row in 0..r.h {
                let src = &data[row * row_bytes..(row + 1) * row_bytes];
                let dst = fb.row_mut(r, row);
                for (i, d) in dst.chunks_exact_mut(3).enumerate() {
                    let idx = if p.len() == 2 {
                        usize::from((src[i / 8] >> (7 - i % 8)) & 1)
                    } else {
                        usize::from(src[i])
                    };
                    let col = p.get(idx).ok_or_else(|| {
                        ScreenError::Protocol(format!("Tight palette index {idx} >= {}", p.len()))
                    })?;
                    d.copy_from_slice(col);
                }
            }
        }
        TightFilter::Gradient => {
            if tp != 3 {
                return Err(ScreenError::PixelFormat(
                    "Tight gradient filter is only supported for 24-bit TPIXELs".into(),
                ));
            }
            // Each component is predicted from left, above and above-left; values wrap mod 256.
            let mut prev = vec![0u8; r.w * 3];
            let mut cur = vec![0u8; r.w * 3];
            for row in 0..r.h {
                let src = &data[row * r.w * 3..(row + 1) * r.w * 3];
                for i in 0..r.w {
                    for c in 0..3 {
                        let left = if i > 0 {
                            i32::from(cur[(i - 1) * 3 + c])
                        } else {
                            0
                        };
                        let up = i32::from(prev[i * 3 + c]);
                        let upleft = if i > 0 {
                            i32::from(prev[(i - 1) * 3 + c])
                        } else {
                            0
                        };
                        let pred = (left + up - upleft).clamp(0, 255) as u8;
                        cur[i * 3 + c] = src[i * 3 + c].wrapping_add(pred);
                    }
                }
                fb.row_mut(r, row).copy_from_slice(&cur);
                std::mem::swap(&mut prev, &mut cur);
            }
        }
    }
    Ok(())
}

/// RRE: paints the subrectangles in `data` (records of pixel + x, y, w, h, all relative to
/// `r`), adding their areas to `painted`, which may not exceed `max_painted`.
pub fn paint_rre_subrects(
    data: &[u8],
    r: Rect,
    conv: &Converter,
    fb: &mut Framebuffer,
    painted: &mut u64,
    max_painted: u64,
) -> Result<(), ScreenError> {
    let bpp = conv.format().bytes_per_pixel();
    for rec in data.chunks_exact(bpp + 8) {
        let c = conv.rgb(conv.read_value(&rec[..bpp]));
        let f = |i: usize| usize::from(u16::from_be_bytes([rec[bpp + i], rec[bpp + i + 1]]));
        let (x, y, w, h) = (f(0), f(2), f(4), f(6));
        if x + w > r.w || y + h > r.h {
            return Err(ScreenError::Protocol(format!(
                "RRE subrectangle {w}x{h}+{x}+{y} lies outside its {}x{} rectangle",
                r.w, r.h
            )));
        }
        *painted += (w * h) as u64;
        if *painted > max_painted {
            return Err(ScreenError::Limit {
                what: "RRE subrectangle pixels for one rectangle",
                value: *painted,
                limit: max_painted,
            });
        }
        let sub = Rect {
            x: r.x + x,
            y: r.y + y,
            w,
            h,
        };
        fb.fill(sub, c);
    }
    Ok(())
}

/// Hextile: paints the subrectangles of one tile. `data` holds `n` records of
/// [pixel if `coloured`] + x<<4|y + (w-1)<<4|(h-1), relative to `tile`.
pub fn paint_hextile_subrects(
    data: &[u8],
    coloured: bool,
    fg: Option<[u8; 3]>,
    tile: Rect,
    conv: &Converter,
    fb: &mut Framebuffer,
) -> Result<(), ScreenError> {
    let bpp = if coloured {
        conv.format().bytes_per_pixel()
    } else {
        0
    };
    for rec in data.chunks_exact(bpp + 2) {
        let c = if coloured {
            conv.rgb(conv.read_value(&rec[..bpp]))
        } else {
            fg.ok_or_else(|| {
                ScreenError::Protocol(
                    "Hextile subrectangle without a foreground colour (never specified)".into(),
                )
            })?
        };
        let (xy, wh) = (rec[bpp], rec[bpp + 1]);
        let (x, y) = (usize::from(xy >> 4), usize::from(xy & 15));
        let (w, h) = (usize::from(wh >> 4) + 1, usize::from(wh & 15) + 1);
        if x + w > tile.w || y + h > tile.h {
            return Err(ScreenError::Protocol(format!(
                "Hextile subrectangle {w}x{h}+{x}+{y} lies outside its {}x{} tile",
                tile.w, tile.h
            )));
        }
        let sub = Rect {
            x: tile.x + x,
            y: tile.y + y,
            w,
            h,
        };
        fb.fill(sub, c);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::screen::PixelFormat;
    use flate2::{Compress, Compression, FlushCompress};

    fn conv() -> Converter {
        Converter::new(PixelFormat::RGB888).unwrap()
    }

    fn deflate_sync(c: &mut Compress, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 1024);
        c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
        out
    }

    #[test]
    fn rect_bounds() {
        let fb = Framebuffer::new(100, 50);
        assert!(fb.rect(0, 0, 100, 50).is_ok());
        assert!(matches!(
            fb.rect(1, 0, 100, 50),
            Err(ScreenError::RectOutOfBounds { .. })
        ));
        assert!(matches!(
            fb.rect(0, 50, 1, 1),
            Err(ScreenError::RectOutOfBounds { .. })
        ));
        assert!(fb.rect(65535, 65535, 0, 0).is_err());
    }

    #[test]
    fn copy_rect_overlapping() {
        let mut fb = Framebuffer::new(4, 4);
        for (i, b) in fb.rgb.iter_mut().enumerate() {
            *b = i as u8;
        }
        let orig = fb.rgb.clone();
        let r = fb.rect(0, 1, 4, 3).unwrap();
        fb.copy_rect(r, 0, 0).unwrap();
        assert_eq!(&fb.rgb[12..48], &orig[0..36]);
        assert!(fb.copy_rect(fb.rect(0, 0, 4, 4).unwrap(), 1, 0).is_err());
    }

    #[test]
    fn zrle_subencodings() {
        // 3x2 rectangle: one tile, plain RLE (red x4, blue x2).
        let mut data = vec![128u8];
        data.extend([0, 0, 255, 3]); // cpixel (LE: b, g, r) = red, run 4
        data.extend([255, 0, 0, 1]); // blue, run 2
        let mut fb = Framebuffer::new(3, 2);
        let r = fb.rect(0, 0, 3, 2).unwrap();
        decode_zrle(&data, r, &conv(), &mut fb).unwrap();
        assert_eq!(&fb.rgb[..12], &[255, 0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0]);
        assert_eq!(&fb.rgb[12..], &[0, 0, 255, 0, 0, 255]);

        // packed palette, 2 colours, 1 bit per index, rows padded
        let data = [2u8, 0, 0, 0, 255, 255, 255, 0b1010_0000, 0b0100_0000];
        decode_zrle(&data, r, &conv(), &mut fb).unwrap();
        let w = [255u8, 255, 255];
        let k = [0u8, 0, 0];
        assert_eq!(fb.rgb, [w, k, w, k, w, k].concat());

        // palette RLE: index 1 run 5, then index 0 single
        let data = [130u8, 0, 0, 0, 255, 255, 255, 0x81, 4, 0x00];
        decode_zrle(&data, r, &conv(), &mut fb).unwrap();
        assert_eq!(fb.rgb, [w, w, w, w, w, k].concat());

        // solid + errors
        assert!(decode_zrle(&[1, 9, 9, 9], r, &conv(), &mut fb).is_ok());
        assert_eq!(&fb.rgb[..3], &[9, 9, 9]);
        assert!(decode_zrle(&[1, 9, 9], r, &conv(), &mut fb).is_err()); // truncated
        assert!(decode_zrle(&[1, 9, 9, 9, 0], r, &conv(), &mut fb).is_err()); // trailing
        assert!(decode_zrle(&[128, 0, 0, 0, 6], r, &conv(), &mut fb).is_err()); // run overflow
        assert!(decode_zrle(&[129], r, &conv(), &mut fb).is_err()); // undefined
        assert!(decode_zrle(&[130, 0, 0, 0, 1, 1, 1, 0x05], r, &conv(), &mut fb).is_err()); // index
    }

    #[test]
    fn rre_and_hextile_subrects() {
        let mut fb = Framebuffer::new(8, 4);
        let r = fb.rect(2, 1, 4, 3).unwrap();
        // pixel (LE b, g, r, x) = red, at (1, 1) 2x1
        let rec = [0u8, 0, 255, 0, 0, 1, 0, 1, 0, 2, 0, 1];
        let mut painted = 0;
        paint_rre_subrects(&rec, r, &conv(), &mut fb, &mut painted, 100).unwrap();
        assert_eq!(painted, 2);
        let px = |fb: &Framebuffer, x: usize, y: usize| {
            let o = (y * 8 + x) * 3;
            [fb.rgb[o], fb.rgb[o + 1], fb.rgb[o + 2]]
        };
        assert_eq!(px(&fb, 3, 2), [255, 0, 0]);
        assert_eq!(px(&fb, 4, 2), [255, 0, 0]);
        assert_eq!(px(&fb, 5, 2), [0, 0, 0]);
        // outside the rectangle (x 3 + w 2 > 4)
        let bad = [0u8, 0, 255, 0, 0, 3, 0, 0, 0, 2, 0, 1];
        assert!(paint_rre_subrects(&bad, r, &conv(), &mut fb, &mut painted, 100).is_err());
        // painted-pixel cap
        let mut painted = 0;
        let err = paint_rre_subrects(&rec, r, &conv(), &mut fb, &mut painted, 1).unwrap_err();
        assert!(matches!(err, ScreenError::Limit { .. }), "{err}");

        // hextile: foreground subrect at (1, 0) 2x2, then a coloured one
        let tile = fb.rect(0, 0, 4, 4).unwrap();
        paint_hextile_subrects(
            &[0x10, 0x11],
            false,
            Some([1, 2, 3]),
            tile,
            &conv(),
            &mut fb,
        )
        .unwrap();
        assert_eq!(px(&fb, 1, 0), [1, 2, 3]);
        assert_eq!(px(&fb, 2, 1), [1, 2, 3]);
        assert_eq!(px(&fb, 3, 1), [0, 0, 0]);
        paint_hextile_subrects(
            &[9, 8, 7, 0, 0x30, 0x00],
            true,
            None,
            tile,
            &conv(),
            &mut fb,
        )
        .unwrap();
        assert_eq!(px(&fb, 3, 0), [7, 8, 9]);
        // no foreground ever specified; subrect overflowing the tile
        assert!(paint_hextile_subrects(&[0, 0], false, None, tile, &conv(), &mut fb).is_err());
        assert!(
            paint_hextile_subrects(&[0x30, 0x10], false, Some([0; 3]), tile, &conv(), &mut fb)
                .is_err()
        );
    }

    #[test]
    fn inflate_is_bounded() {
        let mut c = Compress::new(Compression::fast(), true);
        let big = vec![0u8; 4 * 1024 * 1024];
        let comp = deflate_sync(&mut c, &big);
        assert!(comp.len() < 64 * 1024, "{}", comp.len());
        let mut out = Vec::new();
        let mut z = Decompress::new(true);
        let err = inflate_bounded(&mut z, &comp, 1024 * 1024, &mut out).unwrap_err();
        assert!(matches!(err, ScreenError::Limit { .. }), "{err}");
        assert!(out.len() <= 1024 * 1024);

        // A stream split over two rectangles keeps its dictionary.
        let mut c = Compress::new(Compression::default(), true);
        let a = deflate_sync(&mut c, b"hello hello hello");
        let b = deflate_sync(&mut c, b"hello again");
        let mut z = Decompress::new(true);
        inflate_bounded(&mut z, &a, 100, &mut out).unwrap();
        assert_eq!(out, b"hello hello hello");
        inflate_bounded(&mut z, &b, 100, &mut out).unwrap();
        assert_eq!(out, b"hello again");

        let mut z = Decompress::new(true);
        assert!(inflate_bounded(&mut z, b"garbage!", 100, &mut out).is_err());
    }

    #[test]
    fn tight_filters() {
        let mut fb = Framebuffer::new(3, 1);
        let r = fb.rect(0, 0, 3, 1).unwrap();
        let pal = TightFilter::Palette(vec![[1, 2, 3], [4, 5, 6]]);
        decode_tight_basic(&[0b0100_0000], &pal, r, &conv(), &mut fb).unwrap();
        assert_eq!(fb.rgb, [1, 2, 3, 4, 5, 6, 1, 2, 3]);
        let pal3 = TightFilter::Palette(vec![[1, 2, 3], [4, 5, 6], [7, 8, 9]]);
        decode_tight_basic(&[2, 1, 0], &pal3, r, &conv(), &mut fb).unwrap();
        assert_eq!(fb.rgb, [7, 8, 9, 4, 5, 6, 1, 2, 3]);
        assert!(decode_tight_basic(&[3, 1, 0], &pal3, r, &conv(), &mut fb).is_err());
        decode_tight_basic(
            &[9, 8, 7, 1, 1, 1, 2, 2, 2],
            &TightFilter::Copy,
            r,
            &conv(),
            &mut fb,
        )
        .unwrap();
        assert_eq!(fb.rgb, [9, 8, 7, 1, 1, 1, 2, 2, 2]);
        // gradient: first row predicts from the left pixel only
        decode_tight_basic(
            &[10, 20, 30, 1, 1, 1, 2, 2, 2],
            &TightFilter::Gradient,
            r,
            &conv(),
            &mut fb,
        )
        .unwrap();
        assert_eq!(fb.rgb, [10, 20, 30, 11, 21, 31, 13, 23, 33]);
        assert!(decode_tight_basic(&[1, 2], &TightFilter::Copy, r, &conv(), &mut fb).is_err());
    }
}
