//! Hostile input: decompression bombs, truncated/corrupt PNG and JPEG, absurd dimensions.
//! Every case must end in a precise error, quickly and within the caps.

use overlord_enrich::{DecodeCaps, EnrichError, decode};
use std::io::Cursor;
use std::time::{Duration, Instant};

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 7]));
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 7]));
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Jpeg).unwrap();
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

/// Rewrites the IHDR dimensions of a PNG (with a valid CRC), as a bomb would.
fn with_ihdr(mut p: Vec<u8>, w: u32, h: u32) -> Vec<u8> {
    p[16..20].copy_from_slice(&w.to_be_bytes());
    p[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&p[12..29]);
    p[29..33].copy_from_slice(&crc.to_be_bytes());
    p
}

fn quick<T>(f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    r
}

#[test]
fn valid_png_and_jpeg_decode() {
    let caps = DecodeCaps::default();
    assert_eq!(decode(&png(40, 30), &caps).unwrap().data.len(), 40 * 30 * 3);
    assert_eq!(decode(&jpeg(40, 30), &caps).unwrap().width, 40);
}

#[test]
fn absurd_png_dimensions_are_refused_from_the_header() {
    let bomb = with_ihdr(png(16, 16), 100_000, 100_000);
    match quick(|| decode(&bomb, &DecodeCaps::default())) {
        Err(EnrichError::DimensionsTooLarge { width: 100_000, height: 100_000, .. }) => {}
        other => panic!("{other:?}"),
    }
    let wide = with_ihdr(png(16, 16), 8000, 8000); // each side under the cap, pixels over it
    assert!(matches!(quick(|| decode(&wide, &DecodeCaps::default())), Err(EnrichError::DimensionsTooLarge { .. })));
}

#[test]
fn real_decompression_bomb_is_refused_before_inflating() {
    // 20000 x 20000 black PNG: a few hundred kB that would inflate to 1.2 GB of pixels
    let w = 20_000u32;
    let mut raw = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut raw, w, 1);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(&vec![0u8; w as usize]).unwrap();
    }
    let bomb = with_ihdr(raw, w, w);
    assert!(matches!(quick(|| decode(&bomb, &DecodeCaps::default())), Err(EnrichError::DimensionsTooLarge { .. })));
    // with caps that allow the header, the decoder's memory limit or the truncated data stops it
    let lax = DecodeCaps { max_side: 30_000, max_pixels: 1_000_000_000, max_alloc: 64 << 20, ..Default::default() };
    assert!(matches!(quick(|| decode(&bomb, &lax)), Err(EnrichError::Decode(_))));
}

#[test]
fn truncated_and_corrupt_images_give_decode_errors() {
    let caps = DecodeCaps::default();
    let p = png(200, 100);
    for cut in [10, 40, p.len() / 2, p.len() - 5] {
        let r = quick(|| decode(&p[..cut], &caps));
        assert!(matches!(r, Err(EnrichError::Decode(_)) | Err(EnrichError::UnsupportedFormat)), "cut {cut}: {r:?}");
    }
    let mut corrupt = p.clone();
    for b in corrupt[60..160].iter_mut() {
        *b ^= 0x5a;
    }
    assert!(matches!(quick(|| decode(&corrupt, &caps)), Err(EnrichError::Decode(_))));
    let j = jpeg(200, 100);
    let r = quick(|| decode(&j[..j.len() / 3], &caps));
    // a truncated JPEG either errors or decodes to a grey-filled image; it never panics or hangs
    if let Ok(img) = r {
        assert_eq!((img.width, img.height), (200, 100));
    }
    assert!(matches!(decode(b"GIF89a....", &caps), Err(EnrichError::UnsupportedFormat)));
    assert!(matches!(decode(b"", &caps), Err(EnrichError::UnsupportedFormat)));
}

#[test]
fn absurd_jpeg_dimensions_are_refused() {
    let mut j = jpeg(16, 16);
    // patch the SOF0 frame header: FF C0 len(2) precision(1) height(2) width(2)
    let i = j.windows(2).position(|w| w == [0xff, 0xc0]).expect("SOF0");
    j[i + 5..i + 7].copy_from_slice(&60_000u16.to_be_bytes());
    j[i + 7..i + 9].copy_from_slice(&60_000u16.to_be_bytes());
    assert!(matches!(quick(|| decode(&j, &DecodeCaps::default())), Err(EnrichError::DimensionsTooLarge { .. })));
}

#[test]
fn oversized_input_is_refused_without_parsing() {
    let caps = DecodeCaps { max_bytes: 1000, ..Default::default() };
    assert!(matches!(decode(&png(300, 300), &caps), Err(EnrichError::InputTooLarge { .. })));
}
