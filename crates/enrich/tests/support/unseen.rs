//! Held-out screens with ground truth, generated from a seed (shared by `examples/heldout_eval.rs`
//! and the regression tests; nothing is committed but this code).
//!
//! Two families:
//! - **composited** (pure Rust, deterministic): fixture faces pasted at other scales and positions
//!   onto other backgrounds, the Windows logo template at 20..160 px on other backgrounds (taskbar
//!   strips included), look-alike shapes that are *not* the logo (other four-square/coloured
//!   shapes), blank screens (solid colours, smooth gradients, a pointer, mild noise, JPEG) and
//!   near-blank ones (a small icon, a thin window outline), some passed through JPEG or noise;
//! - **X** (`x_screens`): real X programs on a private Xvfb (xterm with vector and bitmap fonts,
//!   colour schemes, positions up to the screen edges, login banners and e-mails in different
//!   places; xmessage; xclock/xeyes/xlogo; a tiny clock), captured with ImageMagick `import`.
//!
//! "Blank" here means: nothing on the screen but its background — one colour or a smooth
//! gradient — and at most a mouse pointer; mild sensor-like noise or JPEG ringing of such a
//! screen is still blank. Anything a person could look at (a clock, an icon, a word, a window
//! outline) is not blank.
#![allow(dead_code, clippy::needless_range_loop, clippy::too_many_arguments)]

use overlord_enrich::Rgb;
use overlord_probes::service::testsupport::{XServer, XSpec};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const W: u32 = 1024;
pub const H: u32 = 768;

/// Ground truth of one generated screen.
#[derive(Debug, Clone, Default)]
pub struct Truth {
    pub blank: bool,
    /// Exact visible text (None: the screen has no text to score).
    pub text: Option<String>,
    pub emails: Vec<String>,
    /// Face boxes x, y, w, h.
    pub faces: Vec<[u32; 4]>,
    /// Windows-logo boxes x, y, w, h.
    pub logos: Vec<[u32; 4]>,
}

pub struct Screen {
    pub name: String,
    /// Category, for the per-category lines of the evaluation.
    pub kind: &'static str,
    pub desc: String,
    pub rgb: Rgb,
    pub truth: Truth,
}

/// splitmix64: small, seeded, identical on every machine.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in lo..hi (hi exclusive).
    pub fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next() % u64::from(hi - lo).max(1)) as u32
    }
    pub fn f(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.next() as usize % xs.len()]
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.f() < p
    }
    pub fn gauss(&mut self) -> f64 {
        let u = self.f().max(1e-12);
        let v = self.f();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// An RGB canvas.
#[derive(Clone)]
pub struct Canvas {
    pub w: u32,
    pub h: u32,
    pub px: Vec<u8>,
}

impl Canvas {
    pub fn solid(c: [u8; 3]) -> Canvas {
        let mut px = Vec::with_capacity((W * H * 3) as usize);
        for _ in 0..W * H {
            px.extend_from_slice(&c);
        }
        Canvas { w: W, h: H, px }
    }
    /// A smooth gradient from `a` to `b`: 0 vertical, 1 horizontal, 2 radial.
    pub fn gradient(a: [u8; 3], b: [u8; 3], kind: u32) -> Canvas {
        let mut c = Canvas::solid(a);
        let (cx, cy) = (W as f64 / 2.0, H as f64 / 2.0);
        let rmax = (cx * cx + cy * cy).sqrt();
        for y in 0..H {
            for x in 0..W {
                let t = match kind {
                    0 => y as f64 / (H - 1) as f64,
                    1 => x as f64 / (W - 1) as f64,
                    _ => ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt() / rmax,
                };
                let mut p = [0u8; 3];
                for k in 0..3 {
                    p[k] = (a[k] as f64 + (b[k] as f64 - a[k] as f64) * t).round() as u8;
                }
                c.set(x as i64, y as i64, p);
            }
        }
        c
    }
    pub fn from_rgb(r: &Rgb) -> Canvas {
        Canvas {
            w: r.width,
            h: r.height,
            px: r.data.clone(),
        }
    }
    pub fn into_rgb(self) -> Rgb {
        Rgb::from_raw(self.w, self.h, self.px).expect("canvas size")
    }
    pub fn get(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.w + x) * 3) as usize;
        [self.px[i], self.px[i + 1], self.px[i + 2]]
    }
    pub fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x < 0 || y < 0 || x >= self.w as i64 || y >= self.h as i64 {
            return;
        }
        let i = ((y as u32 * self.w + x as u32) * 3) as usize;
        self.px[i..i + 3].copy_from_slice(&c);
    }
    pub fn rect(&mut self, x: i64, y: i64, w: u32, h: u32, c: [u8; 3]) {
        for yy in y..y + h as i64 {
            for xx in x..x + w as i64 {
                self.set(xx, yy, c);
            }
        }
    }
    pub fn frame(&mut self, x: i64, y: i64, w: u32, h: u32, c: [u8; 3]) {
        self.rect(x, y, w, 1, c);
        self.rect(x, y + h as i64 - 1, w, 1, c);
        self.rect(x, y, 1, h, c);
        self.rect(x + w as i64 - 1, y, 1, h, c);
    }
    pub fn disc(&mut self, cx: f64, cy: f64, r: f64, c: [u8; 3]) {
        for y in (cy - r).floor() as i64..=(cy + r).ceil() as i64 {
            for x in (cx - r).floor() as i64..=(cx + r).ceil() as i64 {
                if (x as f64 + 0.5 - cx).powi(2) + (y as f64 + 0.5 - cy).powi(2) <= r * r {
                    self.set(x, y, c);
                }
            }
        }
    }
    /// The X "left_ptr" arrow, roughly (black with a white outline), ~10x16.
    pub fn pointer(&mut self, x: i64, y: i64) {
        for r in 0..14i64 {
            let wdt = (r * 2 / 3).max(1);
            for c in 0..=wdt {
                let edge = c == 0 || c == wdt || r == 13;
                self.set(x + c, y + r, if edge { [255; 3] } else { [0; 3] });
            }
        }
    }
    /// Pastes `src` (RGBA, `sw`x`sh`) scaled to `dw`x`dh` at (x, y), bilinear, alpha-blended.
    pub fn paste(&mut self, src: &[u8], sw: u32, sh: u32, x: i64, y: i64, dw: u32, dh: u32) {
        for oy in 0..dh {
            for ox in 0..dw {
                let fx =
                    ((ox as f64 + 0.5) * sw as f64 / dw as f64 - 0.5).clamp(0.0, (sw - 1) as f64);
                let fy =
                    ((oy as f64 + 0.5) * sh as f64 / dh as f64 - 0.5).clamp(0.0, (sh - 1) as f64);
                let (x0, y0) = (fx.floor() as u32, fy.floor() as u32);
                let (x1, y1) = ((x0 + 1).min(sw - 1), (y0 + 1).min(sh - 1));
                let (ax, ay) = (fx - x0 as f64, fy - y0 as f64);
                let s = |xx: u32, yy: u32, k: usize| src[((yy * sw + xx) * 4) as usize + k] as f64;
                let mut v = [0f64; 4];
                for k in 0..4 {
                    v[k] = s(x0, y0, k) * (1.0 - ax) * (1.0 - ay)
                        + s(x1, y0, k) * ax * (1.0 - ay)
                        + s(x0, y1, k) * (1.0 - ax) * ay
                        + s(x1, y1, k) * ax * ay;
                }
                let (px, py) = (x + ox as i64, y + oy as i64);
                if px < 0 || py < 0 || px >= self.w as i64 || py >= self.h as i64 {
                    continue;
                }
                let a = v[3] / 255.0;
                let bg = self.get(px as u32, py as u32);
                let mut c = [0u8; 3];
                for k in 0..3 {
                    c[k] = (v[k] * a + bg[k] as f64 * (1.0 - a))
                        .round()
                        .clamp(0.0, 255.0) as u8;
                }
                self.set(px, py, c);
            }
        }
    }
    pub fn noise(&mut self, rng: &mut Rng, sigma: f64) {
        for v in self.px.iter_mut() {
            *v = (*v as f64 + rng.gauss() * sigma).round().clamp(0.0, 255.0) as u8;
        }
    }
    /// Round trip through a JPEG of the given quality.
    pub fn jpeg(&mut self, quality: u8) {
        let mut buf = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality)
            .encode(&self.px, self.w, self.h, image::ExtendedColorType::Rgb8)
            .expect("jpeg encode");
        let img = image::load_from_memory(&buf)
            .expect("jpeg decode")
            .to_rgb8();
        self.px = img.into_raw();
    }
    /// A crop as RGBA (opaque).
    pub fn crop_rgba(&self, x: u32, y: u32, w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity((w * h * 4) as usize);
        for yy in y..y + h {
            for xx in x..x + w {
                let p = self.get(xx.min(self.w - 1), yy.min(self.h - 1));
                out.extend_from_slice(&[p[0], p[1], p[2], 255]);
            }
        }
        out
    }
}

pub fn decode_png(path: &Path) -> Canvas {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    Canvas {
        w: img.width(),
        h: img.height(),
        px: img.into_raw(),
    }
}

/// The Windows logo template (RGBA 64x64) shipped with the crate.
pub fn logo_template() -> (Vec<u8>, u32, u32) {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/logo_windows_template_64.png");
    let img = image::open(&p).expect("template").to_rgba8();
    (img.as_raw().clone(), img.width(), img.height())
}

/// The four pane colours of the template (red, green, blue, yellow).
pub const PANES: [[u8; 3]; 4] = [[242, 80, 34], [127, 186, 0], [0, 164, 239], [255, 185, 0]];

/// Sources of faces: (fixture file, face boxes) from the fixtures' ground truth.
pub struct FaceSource {
    pub canvas: Canvas,
    pub boxes: Vec<[u32; 4]>,
}

pub fn face_sources(screens: &Path) -> Vec<FaceSource> {
    let gt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(screens.join("ground_truth.json")).expect("gt"))
            .expect("gt json");
    let mut out = Vec::new();
    for f in gt["fixtures"].as_array().expect("fixtures") {
        if let Some(b) = f["face_boxes_xywh"].as_array() {
            let boxes = b
                .iter()
                .map(|v| {
                    let a: Vec<u32> = v
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_u64().unwrap() as u32)
                        .collect();
                    [a[0], a[1], a[2], a[3]]
                })
                .collect();
            out.push(FaceSource {
                canvas: decode_png(&screens.join(f["file"].as_str().unwrap())),
                boxes,
            });
        }
    }
    out
}

fn random_bg(rng: &mut Rng, screens: &Path) -> (Canvas, &'static str) {
    let dark = [
        [0, 0, 0],
        [16, 32, 64],
        [40, 40, 40],
        [0, 43, 54],
        [48, 10, 36],
    ];
    let light = [
        [255, 255, 255],
        [230, 230, 230],
        [240, 235, 220],
        [200, 215, 230],
    ];
    match rng.range(0, 5) {
        0 => (Canvas::solid(*rng.pick(&dark)), "solid dark"),
        1 => (Canvas::solid(*rng.pick(&light)), "solid light"),
        2 => {
            let (a, b) = (*rng.pick(&dark), *rng.pick(&light));
            (Canvas::gradient(a, b, rng.range(0, 3)), "gradient")
        }
        3 => {
            // a desktop: teal/blue wallpaper and a grey taskbar
            let mut c = Canvas::solid(*rng.pick(&[[0, 128, 128], [58, 110, 165], [30, 30, 60]]));
            c.rect(0, (H - 40) as i64, W, 40, [192, 192, 192]);
            c.rect(0, (H - 40) as i64, W, 1, [255, 255, 255]);
            (c, "desktop")
        }
        _ => {
            // the cat photo (no face) stretched over the screen
            let cat = decode_png(&screens.join("14_cat_chelsea_noface.png"));
            let mut c = Canvas::solid([0, 0, 0]);
            let rgba = cat.crop_rgba(0, 0, cat.w, cat.h);
            c.paste(&rgba, cat.w, cat.h, 0, 0, W, H);
            (c, "photo")
        }
    }
}

fn place(
    rng: &mut Rng,
    taken: &mut Vec<[i64; 4]>,
    w: u32,
    h: u32,
    area: [u32; 4],
) -> Option<(i64, i64)> {
    for _ in 0..200 {
        let x = area[0] as i64 + rng.range(0, (area[2].saturating_sub(w)).max(1)) as i64;
        let y = area[1] as i64 + rng.range(0, (area[3].saturating_sub(h)).max(1)) as i64;
        let r = [x - 12, y - 12, x + w as i64 + 12, y + h as i64 + 12];
        if taken
            .iter()
            .all(|t| r[2] <= t[0] || t[2] <= r[0] || r[3] <= t[1] || t[3] <= r[1])
        {
            taken.push([x, y, x + w as i64, y + h as i64]);
            return Some((x, y));
        }
    }
    None
}

/// A look-alike of the logo that is not it (none of these must be reported as the logo).
fn lookalike(c: &mut Canvas, rng: &mut Rng, x: i64, y: i64, s: u32) -> &'static str {
    let g = (s / 20).max(1);
    let p = (s - g) / 2;
    match rng.range(0, 7) {
        0 => {
            // four squares in one colour (Windows 10-like, not this template)
            let col = *rng.pick(&[[0, 120, 215], [255, 255, 255], [80, 80, 80]]);
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                c.rect(x + dx * (p + g) as i64, y + dy * (p + g) as i64, p, p, col);
            }
            "four squares one colour"
        }
        1 => {
            // the four colours, other order (another logo)
            let order = [[3, 2, 1, 0], [2, 3, 0, 1], [1, 0, 3, 2]][rng.range(0, 3) as usize];
            for (i, (dx, dy)) in [(0, 0), (1, 0), (0, 1), (1, 1)].into_iter().enumerate() {
                c.rect(
                    x + dx * (p + g) as i64,
                    y + dy * (p + g) as i64,
                    p,
                    p,
                    PANES[order[i]],
                );
            }
            "four squares other order"
        }
        2 => {
            // 3x3 grid of coloured squares
            let q = (s - 2 * g) / 3;
            for i in 0..9u32 {
                let col = PANES[((i * 7 + rng.range(0, 4)) % 4) as usize];
                c.rect(
                    x + ((i % 3) * (q + g)) as i64,
                    y + ((i / 3) * (q + g)) as i64,
                    q,
                    q,
                    col,
                );
            }
            "3x3 grid"
        }
        3 => {
            // four coloured discs (Google-like dots) in a row
            let r = s as f64 / 8.0;
            for i in 0..4 {
                c.disc(
                    x as f64 + r + i as f64 * 2.3 * r,
                    y as f64 + s as f64 / 2.0,
                    r,
                    PANES[i],
                );
            }
            "four dots in a row"
        }
        4 => {
            // chessboard
            let q = (s / 8).max(2);
            for i in 0..8 {
                for j in 0..8 {
                    if (i + j) % 2 == 0 {
                        c.rect(x + (i * q) as i64, y + (j * q) as i64, q, q, [20, 20, 20]);
                    } else {
                        c.rect(
                            x + (i * q) as i64,
                            y + (j * q) as i64,
                            q,
                            q,
                            [235, 235, 235],
                        );
                    }
                }
            }
            "chessboard"
        }
        5 => {
            // two panes only (half a logo), side by side
            c.rect(x, y, p, p, PANES[0]);
            c.rect(x + (p + g) as i64, y, p, p, PANES[1]);
            "two panes"
        }
        _ => {
            // four squares, pastel colours, wide gaps
            let q = s / 3;
            let pastel = [
                [250, 200, 200],
                [200, 250, 200],
                [200, 200, 250],
                [250, 250, 200],
            ];
            for (i, (dx, dy)) in [(0, 0), (2, 0), (0, 2), (2, 2)].into_iter().enumerate() {
                c.rect(x + (dx * q) as i64, y + (dy * q) as i64, q, q, pastel[i]);
            }
            "four pastel squares, wide gaps"
        }
    }
}

/// Composited screens: `per_kind` of each kind (blank, near-blank, faces, logo, look-alike).
pub fn composited(seed: u64, per_kind: usize, screens: &Path) -> Vec<Screen> {
    let mut rng = Rng::new(seed);
    let faces = face_sources(screens);
    let (tpl, tw, th) = logo_template();
    let mut out = Vec::new();
    let mut n = 0;
    let mut name = |kind: &str| {
        n += 1;
        format!("s{seed}_{n:03}_{kind}")
    };
    // blank: solid colours, gradients, a pointer, mild noise, JPEG
    for i in 0..per_kind {
        let col = [
            rng.range(0, 256) as u8,
            rng.range(0, 256) as u8,
            rng.range(0, 256) as u8,
        ];
        let col2 = [
            rng.range(0, 256) as u8,
            rng.range(0, 256) as u8,
            rng.range(0, 256) as u8,
        ];
        let (mut c, mut desc) = match i % 4 {
            0 => (Canvas::solid(col), format!("solid {col:?}")),
            k => {
                let g = rng.range(0, 3);
                (
                    Canvas::gradient(col, col2, g),
                    format!("gradient {k} {col:?}->{col2:?} kind {g}"),
                )
            }
        };
        if rng.chance(0.5) {
            c.pointer(rng.range(0, W) as i64, rng.range(0, H) as i64);
            desc += " + pointer";
        }
        match rng.range(0, 3) {
            0 => {
                c.noise(&mut rng, 1.5);
                desc += " + noise 1.5";
            }
            1 => {
                let q = rng.range(40, 90) as u8;
                c.jpeg(q);
                desc += &format!(" + jpeg q{q}");
            }
            _ => {}
        }
        out.push(Screen {
            name: name("blank"),
            kind: "blank",
            desc,
            rgb: c.into_rgb(),
            truth: Truth {
                blank: true,
                ..Truth::default()
            },
        });
    }
    // near-blank: a small icon, a thin window outline, a low-contrast box, on solid or gradient
    for i in 0..per_kind {
        let col = [
            rng.range(0, 256) as u8,
            rng.range(0, 256) as u8,
            rng.range(0, 256) as u8,
        ];
        let mut c = if i % 2 == 0 {
            Canvas::solid(col)
        } else {
            Canvas::gradient(
                col,
                [255 - col[0], 255 - col[1], 255 - col[2]],
                rng.range(0, 3),
            )
        };
        let base = c.get(W / 2, H / 2);
        let other = [base[0] ^ 0x80, base[1] ^ 0x80, base[2] ^ 0x80];
        let (x, y) = (rng.range(20, W - 200) as i64, rng.range(20, H - 150) as i64);
        let desc = match i % 3 {
            0 => {
                let s = rng.range(26, 40);
                c.rect(x, y, s, s, other);
                c.rect(x + 4, y + 4, s - 8, s - 8, PANES[rng.range(0, 4) as usize]);
                format!("icon {s} px")
            }
            1 => {
                c.frame(x, y, 160, 100, other);
                c.rect(x, y, 160, 12, other);
                "window outline 160x100 with title bar".into()
            }
            _ => {
                // low-contrast stripes ("lines of text"): 16 grey levels off the local background
                for k in 0..4i64 {
                    for yy in y + k * 14..y + k * 14 + 6 {
                        for xx in x..x + 120 - k * 17 {
                            let p = c.get(xx as u32, yy as u32);
                            let lum = (p[0] as u32 + p[1] as u32 + p[2] as u32) / 3;
                            let q = p.map(|v| {
                                if lum < 128 {
                                    v.saturating_add(16)
                                } else {
                                    v.saturating_sub(16)
                                }
                            });
                            c.set(xx, yy, q);
                        }
                    }
                }
                "low-contrast stripes".into()
            }
        };
        out.push(Screen {
            name: name("nearblank"),
            kind: "near-blank",
            desc,
            rgb: c.into_rgb(),
            truth: Truth::default(),
        });
    }
    // faces at other scales and positions on other backgrounds
    for _ in 0..per_kind {
        let (mut c, bgd) = random_bg(&mut rng, screens);
        let k = rng.range(1, 5);
        let mut taken = Vec::new();
        let mut boxes = Vec::new();
        let mut desc = format!("{bgd}:");
        for _ in 0..k {
            let src = &faces[rng.range(0, faces.len() as u32) as usize];
            let b = src.boxes[rng.range(0, src.boxes.len() as u32) as usize];
            // crop with a margin of 40 % (context the detector needs), clipped to the image
            let m = b[2] * 2 / 5;
            let (cx, cy) = (b[0].saturating_sub(m), b[1].saturating_sub(m));
            let cw = (b[0] + b[2] + m).min(src.canvas.w) - cx;
            let ch = (b[1] + b[3] + m).min(src.canvas.h) - cy;
            let scale = 0.55 + rng.f() * 1.6;
            let (dw, dh) = ((cw as f64 * scale) as u32, (ch as f64 * scale) as u32);
            let Some((x, y)) = place(&mut rng, &mut taken, dw, dh, [0, 0, W, H - 40]) else {
                continue;
            };
            let rgba = src.canvas.crop_rgba(cx, cy, cw, ch);
            c.paste(&rgba, cw, ch, x, y, dw, dh);
            let fx = x as f64 + (b[0] - cx) as f64 * scale;
            let fy = y as f64 + (b[1] - cy) as f64 * scale;
            boxes.push([
                fx.round() as u32,
                fy.round() as u32,
                (b[2] as f64 * scale).round() as u32,
                (b[3] as f64 * scale).round() as u32,
            ]);
            desc += &format!(" {}px", (b[2] as f64 * scale) as u32);
        }
        desc += &degrade(&mut c, &mut rng);
        out.push(Screen {
            name: name("faces"),
            kind: "faces",
            desc,
            rgb: c.into_rgb(),
            truth: Truth {
                faces: boxes,
                ..Truth::default()
            },
        });
    }
    // the logo at several sizes (taskbar sizes included) on other backgrounds
    let sizes = [20u32, 22, 24, 28, 32, 40, 48, 64, 96, 128, 160];
    for i in 0..per_kind {
        let (mut c, bgd) = random_bg(&mut rng, screens);
        let s = sizes[(i + rng.range(0, 3) as usize) % sizes.len()];
        let (x, y) = if s <= 32 && rng.chance(0.6) {
            // in a taskbar at the bottom left
            c.rect(
                0,
                (H - 40) as i64,
                W,
                40,
                *rng.pick(&[[192, 192, 192], [32, 32, 32], [0, 40, 90]]),
            );
            (rng.range(2, 40) as i64, (H - 20 - s / 2) as i64)
        } else {
            (rng.range(0, W - s) as i64, rng.range(0, H - s) as i64)
        };
        c.paste(&tpl, tw, th, x, y, s, s);
        let desc = format!("{bgd}: logo {s} px at {x},{y}{}", degrade(&mut c, &mut rng));
        out.push(Screen {
            name: name("logo"),
            kind: "logo",
            desc,
            rgb: c.into_rgb(),
            truth: Truth {
                logos: vec![[x as u32, y as u32, s, s]],
                ..Truth::default()
            },
        });
    }
    // look-alikes: other four-square / coloured shapes, never the logo
    for _ in 0..per_kind {
        let (mut c, bgd) = random_bg(&mut rng, screens);
        let mut taken = Vec::new();
        let mut desc = format!("{bgd}:");
        for _ in 0..3 {
            let s = *rng.pick(&[20u32, 24, 32, 48, 64, 96, 128]);
            if let Some((x, y)) = place(&mut rng, &mut taken, s, s, [0, 0, W, H]) {
                desc += &format!(" {} {s}px;", lookalike(&mut c, &mut rng, x, y, s));
            }
        }
        desc += &degrade(&mut c, &mut rng);
        out.push(Screen {
            name: name("lookalike"),
            kind: "look-alike",
            desc,
            rgb: c.into_rgb(),
            truth: Truth::default(),
        });
    }
    out
}

/// Sometimes JPEG or noise (returns a description).
fn degrade(c: &mut Canvas, rng: &mut Rng) -> String {
    match rng.range(0, 4) {
        0 => {
            let q = rng.range(35, 85) as u8;
            c.jpeg(q);
            format!(" + jpeg q{q}")
        }
        1 => {
            let s = 2.0 + rng.f() * 4.0;
            c.noise(rng, s);
            format!(" + noise {s:.1}")
        }
        _ => String::new(),
    }
}

// ---------------------------------------------------------------- X screens

/// A private Xvfb (the shared launcher's, local socket only) and the X clients started on it;
/// both stopped on drop.
pub struct Xvfb {
    pub display: String,
    clients: Vec<Child>,
    _server: XServer,
}

impl Xvfb {
    /// Starts Xvfb on a free display; `white`: white root window (`-wr`), else black (`-br`).
    pub fn start(white: bool) -> Result<Xvfb, String> {
        let root = if white { "-wr" } else { "-br" };
        let server = XServer::start(&XSpec {
            extra: vec![root.to_string()],
            ..XSpec::xvfb(1024, 768)
        })
        .map_err(|e| e.to_string())?;
        Ok(Xvfb {
            display: server.name(),
            clients: Vec::new(),
            _server: server,
        })
    }
    pub fn run(&mut self, prog: &str, args: &[&str]) -> Result<(), String> {
        let c = Command::new(prog)
            .args(args)
            .env("DISPLAY", &self.display)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{prog} (x11-apps / xterm / x11-xserver-utils): {e}"))?;
        self.clients.push(c);
        Ok(())
    }
    /// Ends the clients started with `run` (the root window shows its background again).
    pub fn clear(&mut self) {
        for mut c in self.clients.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// The root window through ImageMagick `import`.
    pub fn capture(&self) -> Result<Canvas, String> {
        let out = Command::new("import")
            .args(["-display", &self.display, "-window", "root", "png:-"])
            .stderr(Stdio::null())
            .output()
            .map_err(|e| format!("import (imagemagick): {e}"))?;
        let img = image::load_from_memory(&out.stdout)
            .map_err(|e| format!("import gave no PNG: {e}"))?
            .to_rgb8();
        Ok(Canvas {
            w: img.width(),
            h: img.height(),
            px: img.into_raw(),
        })
    }
    /// Captures until two captures 150 ms apart are equal and `ready` holds (timeout 15 s).
    pub fn settled(&self, ready: impl Fn(&Canvas) -> bool) -> Result<Canvas, String> {
        let t = Instant::now();
        let mut prev: Option<Canvas> = None;
        loop {
            // a capture can fail while a client maps its window: retry until the deadline
            let c = match self.capture() {
                Ok(c) => c,
                Err(e) if t.elapsed() > Duration::from_secs(15) => return Err(e),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(150));
                    continue;
                }
            };
            if let Some(p) = &prev
                && p.px == c.px
                && ready(&c)
            {
                return Ok(c);
            }
            if t.elapsed() > Duration::from_secs(15) {
                return Err("X screen did not settle in 15 s".into());
            }
            prev = Some(c);
            std::thread::sleep(Duration::from_millis(150));
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // The clients first; the server stops itself when `_server` drops (SIGTERM first).
        self.clear();
    }
}

fn differs_from(bg: [u8; 3]) -> impl Fn(&Canvas) -> bool {
    move |c: &Canvas| c.px.chunks(3).filter(|p| p != &bg).count() > 200
}

const USERS: &[&str] = &[
    "alice.smith",
    "bob_jones",
    "c.white",
    "ops-team",
    "noreply",
    "j.doe",
    "admin",
    "m.rossi",
    "helpdesk",
    "k.tanaka",
    "backup2",
    "l.martin",
    "svc-deploy",
    "p.novak",
    "root",
    "jenkins",
    "anna.k",
    "security",
    "it.support",
    "zoe",
];
const DOMAINS: &[&str] = &[
    "example-corp.com",
    "mail.example.org",
    "alerts.example.net",
    "corp.example.co.uk",
    "ufficio.example.it",
    "example.de",
    "hq.example.fr",
    "example.nl",
    "lab.example.edu",
    "example.com",
    "intra.example.ch",
    "example.org",
];
const HOSTS: &[&str] = &[
    "web01", "db02", "mail3", "fs-7", "gw", "build-04", "nas", "vpn1",
];

fn email(rng: &mut Rng) -> String {
    format!("{}@{}", rng.pick(USERS), rng.pick(DOMAINS))
}

/// Text for an xterm: lines and their e-mails.
fn console_text(rng: &mut Rng) -> (Vec<String>, Vec<String>) {
    let host = *rng.pick(HOSTS);
    let mut emails = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    match rng.range(0, 5) {
        0 => {
            lines.push(format!(
                "{} {host} tty{}",
                rng.pick(&[
                    "Debian GNU/Linux 12",
                    "Ubuntu 22.04.4 LTS",
                    "CentOS Stream 9",
                    "Fedora Linux 40"
                ]),
                rng.range(1, 7)
            ));
            lines.push(String::new());
            lines.push(format!(
                "{host} login: {}",
                rng.pick(&["", "root", "admin", "deploy"])
            ));
        }
        1 => {
            lines.push(format!(
                "Last login: Mon Mar  4 09:{:02}:11 2024 from 10.0.{}.{}",
                rng.range(10, 60),
                rng.range(0, 255),
                rng.range(1, 255)
            ));
            lines.push(format!(
                "root@{host}:~# grep -h '^From:' /var/mail/* | sort -u"
            ));
            for _ in 0..rng.range(1, 4) {
                let e = email(rng);
                lines.push(format!("From: {e}"));
                emails.push(e);
            }
            lines.push(format!("root@{host}:~# "));
        }
        2 => {
            let e = email(rng);
            lines.push("*** Authorised access only ***".into());
            lines.push(format!(
                "Problems? Write to {e} or call 555-{}",
                rng.range(1000, 9999)
            ));
            emails.push(e);
            lines.push(String::new());
            lines.push("Username:".into());
            lines.push("Password:".into());
        }
        3 => {
            let e1 = email(rng);
            let e2 = email(rng);
            lines.push(format!("$ cat /etc/aliases | tail -{}", 3));
            lines.push(format!("postmaster: {e1}"));
            lines.push(format!("abuse:      {e2}"));
            lines.push(format!("{e1} is the on-call contact this week"));
            emails.push(e1.clone());
            if e2 != e1 {
                emails.push(e2);
            }
            lines.push("$ ".into());
        }
        _ => {
            lines.push(format!("{host}$ ls -l /srv/backup"));
            lines.push(format!("total {}", rng.range(8, 400)));
            for f in ["db.sql.gz", "etc.tar", "home.tar.zst"] {
                lines.push(format!(
                    "-rw-r----- 1 backup backup {:>9} Feb {:>2} 0{}:{:02} {f}",
                    rng.range(1000, 99_999_999),
                    rng.range(1, 29),
                    rng.range(1, 9),
                    rng.range(0, 60)
                ));
            }
            lines.push(format!("{host}$ "));
        }
    }
    (lines, emails)
}

/// Screens from real X programs on a private Xvfb: `n` of them.
pub fn x_screens(seed: u64, n: usize, tmp: &Path) -> Result<Vec<Screen>, String> {
    let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(7));
    // (xsetroot has no effect on this Xvfb: the root colour comes from -br / -wr)
    let mut xs = [Xvfb::start(false)?, Xvfb::start(true)?];
    let mut out = Vec::new();
    let fonts_fa = [
        "DejaVu Sans Mono",
        "Noto Sans Mono",
        "Nimbus Mono PS",
        "Noto Mono",
    ];
    let fonts_fn = ["fixed", "9x15", "10x20", "7x13", "8x13", "12x24"];
    let schemes: [(&str, &str); 9] = [
        ("white", "black"),
        ("black", "white"),
        ("green", "black"),
        ("#d0d0d0", "#300a24"),
        ("#eeeeee", "#1e1e1e"),
        ("#000080", "#ffffcc"),
        ("#cccccc", "#2b2b2b"),
        ("#839496", "#002b36"),
        ("#586e75", "#fdf6e3"),
    ];
    for i in 0..n {
        let white = rng.chance(0.3);
        let (root, root_rgb) = if white {
            ("white", [255u8; 3])
        } else {
            ("black", [0u8; 3])
        };
        let x = &mut xs[usize::from(white)];
        x.settled(|c| c.get(5, 5) == root_rgb && !differs_from(root_rgb)(c))?;
        let kind = rng.range(0, 10);
        let (kind_name, desc, truth, jpeg) = if kind < 6 {
            // xterm with text
            let (lines, emails) = console_text(&mut rng);
            let txt = tmp.join(format!("x{seed}_{i}.txt"));
            std::fs::write(&txt, lines.join("\n") + "\n").map_err(|e| e.to_string())?;
            let (fg, bg) = *rng.pick(&schemes);
            let cols = lines.iter().map(|l| l.len()).max().unwrap_or(10) as u32 + 2;
            let rows = lines.len() as u32 + 2;
            let (font_args, font_desc): (Vec<String>, String) = if rng.chance(0.65) {
                let f = *rng.pick(&fonts_fa);
                let s = rng.range(10, 19);
                (
                    vec!["-fa".into(), f.into(), "-fs".into(), s.to_string()],
                    format!("{f} {s}"),
                )
            } else {
                let f = *rng.pick(&fonts_fn);
                (vec!["-fn".into(), f.into()], format!("bitmap {f}"))
            };
            let pos = match rng.range(0, 4) {
                0 => "+0+0".to_string(),
                1 => "-0-0".to_string(),
                2 => "-0+0".to_string(),
                _ => format!("+{}+{}", rng.range(0, 400), rng.range(0, 400)),
            };
            let geom = format!("{cols}x{rows}{pos}");
            let cmd = format!("cat '{}'; exec sleep 600", txt.display());
            let mut args: Vec<String> = font_args;
            args.extend(
                [
                    "-geometry",
                    &geom,
                    "-fg",
                    fg,
                    "-bg",
                    bg,
                    "-b",
                    "2",
                    "-e",
                    "sh",
                    "-c",
                    &cmd,
                ]
                .iter()
                .map(|s| s.to_string()),
            );
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            x.run("xterm", &argv)?;
            // a clock beside it, sometimes (no text)
            let clock = rng.chance(0.3);
            if clock {
                x.run("xclock", &["-geometry", "120x120+880+20"])?;
            }
            let text = lines.join("\n");
            let jpeg = rng.chance(0.25);
            (
                "x-text",
                format!(
                    "xterm {font_desc} {fg}/{bg} at {pos}{}",
                    if clock { " + xclock" } else { "" }
                ),
                Truth {
                    text: Some(text),
                    emails,
                    ..Truth::default()
                },
                jpeg,
            )
        } else if kind < 7 {
            // xmessage dialog (proportional Athena font)
            let e = email(&mut rng);
            let msg = format!(
                "Backup of {} failed.\nContact {e} for help.",
                rng.pick(HOSTS)
            );
            x.run("xmessage", &["-center", &msg])?;
            (
                "x-text",
                "xmessage".to_string(),
                Truth {
                    text: Some(format!("{msg}\nokay")),
                    emails: vec![e],
                    ..Truth::default()
                },
                false,
            )
        } else if kind < 9 {
            // clocks / eyes / X logo: pictures, no text, not blank
            let mut d = Vec::new();
            for _ in 0..rng.range(1, 3) {
                let p = *rng.pick(&["xclock", "xeyes", "xlogo", "oclock"]);
                let s = rng.range(80, 260);
                let g = format!("{s}x{s}+{}+{}", rng.range(0, W - s), rng.range(0, H - s));
                x.run(p, &["-geometry", &g])?;
                d.push(format!("{p} {s}"));
            }
            ("x-picture", d.join(", "), Truth::default(), rng.chance(0.3))
        } else {
            // a tiny clock alone (near blank, not blank)
            let s = rng.range(36, 64);
            let g = format!("{s}x{s}+{}+{}", rng.range(0, W - s), rng.range(0, H - s));
            x.run("xclock", &["-geometry", &g])?;
            (
                "x-near-blank",
                format!("xclock {s} px"),
                Truth::default(),
                false,
            )
        };
        let mut c = x.settled(differs_from(root_rgb))?;
        let mut desc = format!("root {root}: {desc}");
        if jpeg {
            let q = rng.range(50, 90) as u8;
            c.jpeg(q);
            desc += &format!(" + jpeg q{q}");
        }
        out.push(Screen {
            name: format!("x{seed}_{i:03}"),
            kind: kind_name,
            desc,
            rgb: c.into_rgb(),
            truth,
        });
        x.clear();
    }
    Ok(out)
}

/// Fixture screens directory (as the tests resolve it).
pub fn screens_dir() -> PathBuf {
    overlord_enrich::metrics::fixtures_dir()
        .unwrap_or_else(|e| panic!("{e}"))
        .join("screens")
}
