//! Logo detection: zero-mean normalised cross-correlation (ZNCC) of a colour template with a
//! transparency mask, over a scale pyramid, coarse to fine.
//!
//! For every template size in a geometric ladder (16 px to 256 px, ratio 1.2) the image and the
//! template are reduced by the same integer factor so that the template is about 10 px wide;
//! ZNCC over the three colour channels (each channel zero-meaned over the opaque template
//! pixels; transparent pixels ignored) is computed at every position of the reduced image.
//! Positions above a coarse threshold are refined at full resolution over ±1 coarse pixel and
//! three template sizes (×1/1.1, ×1, ×1.1); a detection needs the full-resolution ZNCC above the
//! final threshold; overlapping detections keep the best.

use crate::decode::Rgb;
use crate::error::EnrichError;
use serde::{Deserialize, Serialize};

/// A logo found on a screen: the finding schema's record.
pub use overlord_core::finding::enrichment::LogoHit;

/// Matching parameters.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct LogoParams {
    pub min_size: u32,
    pub max_size: u32,
    pub ratio: f32,
    /// Template width at the coarse level.
    pub coarse_px: u32,
    pub coarse_threshold: f32,
    pub threshold: f32,
}

impl Default for LogoParams {
    fn default() -> Self {
        LogoParams {
            min_size: 16,
            max_size: 256,
            ratio: 1.2,
            coarse_px: 10,
            coarse_threshold: 0.55,
            threshold: 0.8,
        }
    }
}

/// A template: RGB plus alpha (0..1), square or not.
#[derive(Debug, Clone)]
pub struct Template {
    pub name: String,
    w: u32,
    h: u32,
    rgba: Vec<f32>,
    /// Uniform-colour parts (the panes of the Windows logo), for the colour check of a hit.
    parts: Vec<Part>,
}

/// A connected region of the template with about one colour.
#[derive(Debug, Clone)]
struct Part {
    /// Template pixels whose 3x3 neighbourhood is in the part, as fractions of the size.
    interior: Vec<(f32, f32)>,
    /// Mean colour, 0..255.
    mean: [f32; 3],
}

/// Parts of an RGBA template: 4-connected opaque pixels whose colours differ by < 40 levels
/// per channel; parts under 2 % of the opaque pixels are ignored.
fn parts_of(w: usize, h: usize, rgba: &[f32]) -> Vec<Part> {
    let opaque = |i: usize| rgba[i * 4 + 3] >= 0.5;
    let col = |i: usize| {
        [
            rgba[i * 4] * 255.0,
            rgba[i * 4 + 1] * 255.0,
            rgba[i * 4 + 2] * 255.0,
        ]
    };
    let close = |a: usize, b: usize| {
        let (ca, cb) = (col(a), col(b));
        (0..3).all(|k| (ca[k] - cb[k]).abs() < 40.0)
    };
    let mut label = vec![usize::MAX; w * h];
    let mut comps: Vec<Vec<usize>> = Vec::new();
    for start in 0..w * h {
        if label[start] != usize::MAX || !opaque(start) {
            continue;
        }
        let id = comps.len();
        let mut stack = vec![start];
        let mut members = Vec::new();
        label[start] = id;
        while let Some(i) = stack.pop() {
            members.push(i);
            let (x, y) = (i % w, i / w);
            let mut nb = Vec::with_capacity(4);
            if x > 0 {
                nb.push(i - 1);
            }
            if x + 1 < w {
                nb.push(i + 1);
            }
            if y > 0 {
                nb.push(i - w);
            }
            if y + 1 < h {
                nb.push(i + w);
            }
            for j in nb {
                if label[j] == usize::MAX && opaque(j) && close(i, j) {
                    label[j] = id;
                    stack.push(j);
                }
            }
        }
        comps.push(members);
    }
    let total: usize = comps.iter().map(Vec::len).sum();
    comps
        .iter()
        .enumerate()
        .filter(|(_, m)| m.len() * 50 >= total)
        .filter_map(|(id, m)| {
            let mut mean = [0f32; 3];
            for &i in m {
                let c = col(i);
                for k in 0..3 {
                    mean[k] += c[k] / m.len() as f32;
                }
            }
            let inside = |x: i64, y: i64| {
                x >= 0
                    && y >= 0
                    && (x as usize) < w
                    && (y as usize) < h
                    && label[y as usize * w + x as usize] == id
            };
            let interior: Vec<(f32, f32)> = m
                .iter()
                .filter(|&&i| {
                    let (x, y) = ((i % w) as i64, (i / w) as i64);
                    (-1..=1).all(|dy| (-1..=1).all(|dx| inside(x + dx, y + dy)))
                })
                .map(|&i| {
                    (
                        ((i % w) as f32 + 0.5) / w as f32,
                        ((i / w) as f32 + 0.5) / h as f32,
                    )
                })
                .collect();
            (!interior.is_empty()).then_some(Part { interior, mean })
        })
        .collect()
}

/// Template resampled to one size, as opaque pixels with zero-meaned colours.
struct Prepared {
    /// (dx, dy, t0, t1, t2) for opaque pixels, colours minus their channel means.
    px: Vec<(usize, usize, [f32; 3])>,
    norm: f32,
}

impl Template {
    /// Loads an RGBA PNG template; pixels with alpha < 50 % are transparent (ignored).
    pub fn load(name: &str, path: &std::path::Path) -> Result<Template, EnrichError> {
        let bytes = std::fs::read(path).map_err(|e| EnrichError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        Template::from_png(name, &bytes, &path.display().to_string())
    }

    /// The Windows four-pane logo template shipped with the crate (64x64 RGBA).
    pub fn windows() -> Template {
        Template::from_png(
            "windows",
            include_bytes!("../assets/logo_windows_template_64.png"),
            "built-in",
        )
        .expect("built-in template decodes")
    }

    /// Parses an RGBA PNG template (`origin` names it in errors).
    pub fn from_png(name: &str, bytes: &[u8], origin: &str) -> Result<Template, EnrichError> {
        let model = |reason: String| EnrichError::Model {
            path: origin.to_string(),
            reason,
        };
        let fmt = image::guess_format(bytes).map_err(|e| model(e.to_string()))?;
        let (w, h) = image::ImageReader::with_format(std::io::Cursor::new(bytes), fmt)
            .into_dimensions()
            .map_err(|e| model(e.to_string()))?;
        if w < 4 || h < 4 || w > 1024 || h > 1024 {
            return Err(model(format!("template {w}x{h} (4..1024 px per side)")));
        }
        let img = image::load_from_memory(bytes)
            .map_err(|e| model(e.to_string()))?
            .into_rgba8();
        let rgba: Vec<f32> = img
            .into_raw()
            .into_iter()
            .map(|v| v as f32 / 255.0)
            .collect();
        Ok(Template {
            name: name.into(),
            parts: parts_of(w as usize, h as usize, &rgba),
            w,
            h,
            rgba,
        })
    }

    /// Area-resamples the template to `nw` x `nh` (premultiplied by alpha).
    fn prepare(&self, nw: usize, nh: usize) -> Prepared {
        let (sw, sh) = (self.w as usize, self.h as usize);
        let mut px = Vec::new();
        for y in 0..nh {
            for x in 0..nw {
                let (x0, x1) = (
                    x as f32 * sw as f32 / nw as f32,
                    (x + 1) as f32 * sw as f32 / nw as f32,
                );
                let (y0, y1) = (
                    y as f32 * sh as f32 / nh as f32,
                    (y + 1) as f32 * sh as f32 / nh as f32,
                );
                let (mut acc, mut aw, mut tot) = ([0f32; 3], 0f32, 0f32);
                for sy in y0.floor() as usize..(y1.ceil() as usize).min(sh) {
                    for sx in x0.floor() as usize..(x1.ceil() as usize).min(sw) {
                        let wx = (x1.min(sx as f32 + 1.0) - x0.max(sx as f32)).max(0.0);
                        let wy = (y1.min(sy as f32 + 1.0) - y0.max(sy as f32)).max(0.0);
                        let wgt = wx * wy;
                        let i = (sy * sw + sx) * 4;
                        let a = self.rgba[i + 3];
                        for c in 0..3 {
                            acc[c] += wgt * a * self.rgba[i + c];
                        }
                        aw += wgt * a;
                        tot += wgt;
                    }
                }
                if tot > 0.0 && aw / tot >= 0.5 {
                    px.push((
                        x,
                        y,
                        [
                            acc[0] / aw * 255.0,
                            acc[1] / aw * 255.0,
                            acc[2] / aw * 255.0,
                        ],
                    ));
                }
            }
        }
        let n = px.len().max(1) as f32;
        let mut mean = [0f32; 3];
        for p in &px {
            for c in 0..3 {
                mean[c] += p.2[c] / n;
            }
        }
        let mut norm = 0f32;
        for p in px.iter_mut() {
            for c in 0..3 {
                p.2[c] -= mean[c];
                norm += p.2[c] * p.2[c];
            }
        }
        Prepared {
            px,
            norm: norm.sqrt(),
        }
    }
}

/// f32 RGB image with integral images of the channel sums and of the squared values (to skip
/// flat windows exactly: the masked variance never exceeds the variance of the whole box).
struct FImg {
    w: usize,
    h: usize,
    d: Vec<[f32; 3]>,
    ii: Vec<[f64; 4]>,
}

impl FImg {
    fn new(w: usize, h: usize, d: Vec<[f32; 3]>) -> FImg {
        let iw = w + 1;
        let mut ii = vec![[0f64; 4]; iw * (h + 1)];
        for y in 0..h {
            let mut row = [0f64; 4];
            for x in 0..w {
                let p = d[y * w + x];
                row[0] += p[0] as f64;
                row[1] += p[1] as f64;
                row[2] += p[2] as f64;
                row[3] += (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]) as f64;
                let up = ii[y * iw + x + 1];
                ii[(y + 1) * iw + x + 1] = [
                    up[0] + row[0],
                    up[1] + row[1],
                    up[2] + row[2],
                    up[3] + row[3],
                ];
            }
        }
        FImg { w, h, d, ii }
    }

    /// Sum of squared deviations (all channels) over the box.
    fn box_ss(&self, x: usize, y: usize, bw: usize, bh: usize) -> f64 {
        let iw = self.w + 1;
        let (a, b, c, d) = (
            self.ii[y * iw + x],
            self.ii[y * iw + x + bw],
            self.ii[(y + bh) * iw + x],
            self.ii[(y + bh) * iw + x + bw],
        );
        let v = |k: usize| d[k] - b[k] - c[k] + a[k];
        let n = (bw * bh) as f64;
        v(3) - (v(0) * v(0) + v(1) * v(1) + v(2) * v(2)) / n
    }
}

fn to_f(img: &Rgb) -> FImg {
    FImg::new(
        img.width as usize,
        img.height as usize,
        img.data
            .chunks_exact(3)
            .map(|p| [p[0] as f32, p[1] as f32, p[2] as f32])
            .collect(),
    )
}

/// Box-reduces by an integer factor.
fn reduce(img: &FImg, f: usize) -> FImg {
    if f == 1 {
        return FImg {
            w: img.w,
            h: img.h,
            d: img.d.clone(),
            ii: img.ii.clone(),
        };
    }
    let (w, h) = (img.w / f, img.h / f);
    let mut d = vec![[0f32; 3]; w * h];
    let inv = 1.0 / (f * f) as f32;
    for y in 0..h {
        for x in 0..w {
            let mut a = [0f32; 3];
            for yy in 0..f {
                for p in &img.d[(y * f + yy) * img.w + x * f..(y * f + yy) * img.w + x * f + f] {
                    a[0] += p[0];
                    a[1] += p[1];
                    a[2] += p[2];
                }
            }
            d[y * w + x] = [a[0] * inv, a[1] * inv, a[2] * inv];
        }
    }
    FImg::new(w, h, d)
}

/// Windows whose summed per-pixel variance (3 channels) is at most this are flat.
const FLAT: f64 = 48.0;

/// Masked colour ZNCC of template `t` at (x, y).
#[inline]
fn zncc(img: &FImg, t: &Prepared, x: usize, y: usize) -> f32 {
    let (mut num, mut s, mut s2) = (0f32, [0f32; 3], 0f32);
    for &(dx, dy, tv) in &t.px {
        let p = img.d[(y + dy) * img.w + x + dx];
        num += tv[0] * p[0] + tv[1] * p[1] + tv[2] * p[2];
        s[0] += p[0];
        s[1] += p[1];
        s[2] += p[2];
        s2 += p[0] * p[0] + p[1] * p[1] + p[2] * p[2];
    }
    let n = t.px.len() as f32;
    let var = s2 - (s[0] * s[0] + s[1] * s[1] + s[2] * s[2]) / n;
    // flat windows (std < 4 levels per channel) cannot hold a logo
    if var <= FLAT as f32 * n || t.norm == 0.0 {
        return 0.0;
    }
    num / (var.sqrt() * t.norm)
}

/// Colour check of a hit (templates with two or more parts of distinct colours): the image's
/// mean colour over each part's interior (shrunk by one image pixel) must be nearer to that
/// part's colour than to any other part's. A look-alike made of the same colours in another
/// arrangement (panes swapped, a 3x3 grid, a row of dots) fails it; a dimmed or JPEG-damaged
/// logo keeps its colour order.
fn parts_match(img: &FImg, t: &Template, bbox: [u32; 4]) -> bool {
    if t.parts.len() < 2 {
        return true;
    }
    let (bx, by, bw, bh) = (
        bbox[0] as f32,
        bbox[1] as f32,
        bbox[2] as f32,
        bbox[3] as f32,
    );
    let mut means = Vec::with_capacity(t.parts.len());
    for p in &t.parts {
        // part extent in image pixels, to keep one pixel off its edge
        let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
        for &(fx, fy) in &p.interior {
            x0 = x0.min(fx);
            x1 = x1.max(fx);
            y0 = y0.min(fy);
            y1 = y1.max(fy);
        }
        let (mut acc, mut n) = ([0f32; 3], 0f32);
        let mut seen = std::collections::HashSet::new();
        for &(fx, fy) in &p.interior {
            let (ix, iy) = ((bx + fx * bw).floor(), (by + fy * bh).floor());
            let margin_x = (ix - (bx + x0 * bw)).min(bx + x1 * bw - ix);
            let margin_y = (iy - (by + y0 * bh)).min(by + y1 * bh - iy);
            if (margin_x < 1.0 || margin_y < 1.0) && (x1 - x0) * bw > 3.0 && (y1 - y0) * bh > 3.0 {
                continue;
            }
            let (ix, iy) = (ix as usize, iy as usize);
            if ix >= img.w || iy >= img.h || !seen.insert((ix, iy)) {
                continue;
            }
            let c = img.d[iy * img.w + ix];
            for k in 0..3 {
                acc[k] += c[k];
            }
            n += 1.0;
        }
        if n == 0.0 {
            return true; // too small to say
        }
        means.push([acc[0] / n, acc[1] / n, acc[2] / n]);
    }
    let d2 = |a: [f32; 3], b: [f32; 3]| (0..3).map(|k| (a[k] - b[k]).powi(2)).sum::<f32>();
    means.iter().enumerate().all(|(i, m)| {
        let own = d2(*m, t.parts[i].mean);
        t.parts
            .iter()
            .enumerate()
            .all(|(j, q)| j == i || own < d2(*m, q.mean))
    })
}

/// Finds `template` in `img`.
pub fn find_logo(img: &Rgb, template: &Template, p: &LogoParams) -> Vec<LogoHit> {
    let full = to_f(img);
    let aspect = template.h as f32 / template.w as f32;
    let mut cands: Vec<(f32, usize, usize, usize)> = Vec::new(); // (score, x, y, size)
    let mut size = p.min_size as f32;
    let mut reduced: std::collections::HashMap<usize, FImg> = Default::default();
    while size <= p.max_size as f32 && size <= full.w.min(full.h) as f32 {
        let s = size.round() as usize;
        let f = s.div_ceil(p.coarse_px as usize).max(1);
        let img = reduced.entry(f).or_insert_with(|| reduce(&full, f));
        let (cw, ch) = (
            (s / f).max(2),
            (((s as f32 * aspect).round() as usize) / f).max(2),
        );
        let t = template.prepare(cw, ch);
        if img.w >= cw && img.h >= ch {
            for y in 0..=img.h - ch {
                for x in 0..=img.w - cw {
                    if img.box_ss(x, y, cw, ch) <= FLAT * t.px.len() as f64 {
                        continue;
                    }
                    let sc = zncc(img, &t, x, y);
                    if sc >= p.coarse_threshold {
                        cands.push((sc, x * f, y * f, s));
                    }
                }
            }
        }
        size *= p.ratio;
    }
    // best coarse candidates first; refine each unless already covered by an accepted hit
    cands.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut hits: Vec<LogoHit> = Vec::new();
    let mut refined = 0;
    for (_, cx, cy, s) in cands {
        if refined >= 24 {
            break;
        }
        // uniform-colour logos correlate as well with a smaller template placed inside them, so
        // a candidate is only skipped when a hit of about the same size already covers it
        let covered = hits.iter().any(|h| {
            let hs = h.bbox[2] as f32 / s as f32;
            (0.85..1.18).contains(&hs)
                && crate::metrics::iou(h.bbox, [cx as u32, cy as u32, s as u32, s as u32]) > 0.2
        });
        if covered {
            continue;
        }
        refined += 1;
        let f = s.div_ceil(p.coarse_px as usize).max(1);
        // step 1: an intermediate level, three sizes, ±(f/f2 + 1) positions
        let f2 = (f / 3).max(1);
        let mid = reduced.entry(f2).or_insert_with(|| reduce(&full, f2));
        let mut best = (f32::MIN, 0usize, 0usize, 0usize);
        for ts in [s as f32 / 1.1, s as f32, s as f32 * 1.1] {
            let tsz = ts.round() as usize;
            let (tw, th) = (
                (tsz / f2).max(2),
                (((tsz as f32 * aspect).round() as usize) / f2).max(2),
            );
            if tw > mid.w || th > mid.h {
                continue;
            }
            let t = template.prepare(tw, th);
            let r = (f / f2) as i64 + 1;
            let (mx, my) = ((cx / f2) as i64, (cy / f2) as i64);
            for y in (my - r).max(0)..=(my + r).min((mid.h - th) as i64) {
                for x in (mx - r).max(0)..=(mx + r).min((mid.w - tw) as i64) {
                    let sc = zncc(mid, &t, x as usize, y as usize);
                    if sc > best.0 {
                        best = (sc, x as usize * f2, y as usize * f2, tsz);
                    }
                }
            }
        }
        if best.0 < p.coarse_threshold {
            continue;
        }
        // step 2: full resolution, ±(f2 + 1) positions at the chosen size
        let best = refine_full(
            &full,
            template,
            aspect,
            best.1,
            best.2,
            best.3,
            f2 as i64 + 1,
        );
        if best.0 >= p.threshold {
            let bbox = [best.1 as u32, best.2 as u32, best.3 as u32, best.4 as u32];
            hits.push(LogoHit {
                name: template.name.clone(),
                bbox,
                score: best.0.min(1.0),
            });
        }
    }
    // overlapping hits: keep the largest among those within 0.02 of the best score
    let mut out: Vec<LogoHit> = Vec::new();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    while let Some(top) = hits.first().cloned() {
        let tb = top.bbox;
        let overl = |h: &LogoHit| overlap(&h.bbox, &tb) > 0.5;
        let pick = hits
            .iter()
            .filter(|h| overl(h) && h.score >= top.score - 0.02)
            .max_by_key(|h| h.bbox[2] * h.bbox[3])
            .cloned()
            .unwrap_or(top);
        hits.retain(|h| !overl(h));
        out.push(pick);
    }
    // grow each hit while the score holds (a uniform-colour logo also matches a smaller template
    // placed inside it; the true extent is the largest size that still matches)
    for h in out.iter_mut() {
        let mut cur = (
            h.score,
            h.bbox[0] as usize,
            h.bbox[1] as usize,
            h.bbox[2] as usize,
            h.bbox[3] as usize,
        );
        loop {
            let next = refine_full(
                &full,
                template,
                aspect,
                cur.1.saturating_sub(1),
                cur.2.saturating_sub(1),
                cur.3 + 1,
                2,
            );
            if next.3 <= cur.3 || next.0 < h.score - 0.02 || next.0 < p.threshold {
                break;
            }
            cur = next;
        }
        h.bbox = [cur.1 as u32, cur.2 as u32, cur.3 as u32, cur.4 as u32];
        h.score = cur.0.min(1.0);
    }
    // the colours must sit where the template has them: the summed ZNCC lets a look-alike
    // with the same colours in another arrangement through (a 3x3 grid of the four colours
    // whose 2x2 corner has one wrong pane scored 0.93: two channels still correlate perfectly)
    out.retain(|h| {
        let ok = parts_match(&full, template, h.bbox);
        if !ok {
            tracing::debug!(bbox = ?h.bbox, score = h.score, "logo hit fails the colour check");
        }
        ok
    });
    out
}

/// Best full-resolution ZNCC for template width `tw` around (x, y) ± r: (score, x, y, w, h).
fn refine_full(
    full: &FImg,
    template: &Template,
    aspect: f32,
    x: usize,
    y: usize,
    tw: usize,
    r: i64,
) -> (f32, usize, usize, usize, usize) {
    let th = (tw as f32 * aspect).round() as usize;
    let mut best = (f32::MIN, x, y, tw, th);
    if tw > full.w || th > full.h {
        return best;
    }
    let t = template.prepare(tw, th);
    for yy in (y as i64 - r).max(0)..=(y as i64 + r).min((full.h - th) as i64) {
        for xx in (x as i64 - r).max(0)..=(x as i64 + r).min((full.w - tw) as i64) {
            let sc = zncc(full, &t, xx as usize, yy as usize);
            if sc > best.0 {
                best = (sc, xx as usize, yy as usize, tw, th);
            }
        }
    }
    best
}

/// Intersection over the smaller box.
fn overlap(a: &[u32; 4], b: &[u32; 4]) -> f32 {
    let i = crate::metrics::intersection(*a, *b);
    if i == 0 {
        return 0.0;
    }
    i as f32 / (a[2] * a[3]).min(b[2] * b[3]) as f32
}
