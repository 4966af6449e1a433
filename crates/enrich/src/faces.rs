//! Frontal face detection with OpenCV's pre-trained Haar cascades (the XML files of Debian's
//! `opencv-data`, e.g. `/usr/share/opencv4/haarcascades/haarcascade_frontalface_alt2.xml`),
//! evaluated by our own code: integral images over an image pyramid, variance-normalised Haar
//! features, boosted stages of small trees, then OpenCV's `groupRectangles` (min neighbours,
//! eps 0.2) — `cv::CascadeClassifier::detectMultiScale` reproduced bit for bit (OpenCV 4.14: same
//! pyramid pixels, same window hits, same boxes and neighbour counts; see `tests/face_parity.rs`
//! and `examples/face_parity.rs`), given OpenCV's grey (`Rgb::to_grey_opencv`).

use crate::decode::Grey;
use crate::error::EnrichError;
use serde::{Deserialize, Serialize};

/// Default location of the cascade (Debian package `opencv-data`).
pub const DEFAULT_CASCADE: &str =
    "/usr/share/opencv4/haarcascades/haarcascade_frontalface_alt2.xml";

/// A detected face: the finding schema's record.
pub use overlord_core::finding::enrichment::Face;

/// Detection parameters.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct FaceParams {
    /// Pyramid ratio (> 1), f64 as OpenCV's `scaleFactor`.
    pub scale_factor: f64,
    pub min_neighbours: u32,
    /// Smallest face side in pixels.
    pub min_size: u32,
}

impl Default for FaceParams {
    fn default() -> Self {
        FaceParams {
            scale_factor: 1.1,
            min_neighbours: 3,
            min_size: 24,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Node {
    left: i32,
    right: i32,
    feature: usize,
    threshold: f32,
}

#[derive(Debug, Clone)]
struct Tree {
    nodes: Vec<Node>,
    leaves: Vec<f32>,
}

#[derive(Debug, Clone)]
struct Stage {
    threshold: f32,
    trees: Vec<Tree>,
}

#[derive(Debug, Clone)]
struct Feature {
    rects: Vec<([u32; 4], f32)>,
}

/// A loaded Haar cascade.
#[derive(Debug, Clone)]
pub struct Cascade {
    width: u32,
    height: u32,
    stages: Vec<Stage>,
    features: Vec<Feature>,
}

fn nums<T: std::str::FromStr>(s: &str) -> Vec<T> {
    s.split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect()
}

fn child<'a>(n: roxmltree::Node<'a, 'a>, name: &str) -> Option<roxmltree::Node<'a, 'a>> {
    n.children().find(|c| c.has_tag_name(name))
}

fn items<'a>(n: roxmltree::Node<'a, 'a>) -> impl Iterator<Item = roxmltree::Node<'a, 'a>> {
    n.children().filter(|c| c.has_tag_name("_"))
}

impl Cascade {
    /// Loads a cascade in OpenCV's (new) XML format.
    pub fn load(path: &std::path::Path) -> Result<Cascade, EnrichError> {
        let text = std::fs::read_to_string(path).map_err(|e| EnrichError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        Cascade::parse(&text).map_err(|reason| EnrichError::Model {
            path: path.display().to_string(),
            reason,
        })
    }

    /// Parses cascade XML.
    pub fn parse(text: &str) -> Result<Cascade, String> {
        let doc = roxmltree::Document::parse(text).map_err(|e| e.to_string())?;
        let cascade = doc
            .descendants()
            .find(|n| n.has_tag_name("cascade"))
            .ok_or("no <cascade> element (old format?)")?;
        let get = |name: &str| {
            child(cascade, name)
                .and_then(|n| n.text())
                .map(str::trim)
                .unwrap_or("")
        };
        if get("featureType") != "HAAR" {
            return Err(format!("featureType {:?} is not HAAR", get("featureType")));
        }
        let width: u32 = get("width").parse().map_err(|_| "bad width")?;
        let height: u32 = get("height").parse().map_err(|_| "bad height")?;
        let mut features = Vec::new();
        for f in items(child(cascade, "features").ok_or("no <features>")?) {
            if child(f, "tilted").and_then(|t| t.text()).map(str::trim) == Some("1") {
                return Err("tilted Haar features are not supported".into());
            }
            let mut rects = Vec::new();
            for r in items(child(f, "rects").ok_or("feature without <rects>")?) {
                let v: Vec<f32> = nums::<f64>(r.text().unwrap_or(""))
                    .into_iter()
                    .map(|v| v as f32)
                    .collect();
                if v.len() != 5 || v[..4].iter().any(|&x| x < 0.0) {
                    return Err("bad feature rect".into());
                }
                let rect = [v[0] as u32, v[1] as u32, v[2] as u32, v[3] as u32];
                if rect[0] + rect[2] > width || rect[1] + rect[3] > height {
                    return Err("feature rect outside the window".into());
                }
                rects.push((rect, v[4]));
            }
            features.push(Feature { rects });
        }
        let mut stages = Vec::new();
        for s in items(child(cascade, "stages").ok_or("no <stages>")?) {
            // read as f64 then f32, minus OpenCV's THRESHOLD_EPS (1e-5f), as OpenCV loads it
            let threshold: f64 = child(s, "stageThreshold")
                .and_then(|n| n.text())
                .and_then(|t| t.trim().parse().ok())
                .ok_or("stage without threshold")?;
            let threshold = threshold as f32 - 1e-5f32;
            let mut trees = Vec::new();
            for w in items(child(s, "weakClassifiers").ok_or("stage without weakClassifiers")?) {
                let inn: Vec<f64> = nums(
                    child(w, "internalNodes")
                        .and_then(|n| n.text())
                        .unwrap_or(""),
                );
                let leaves: Vec<f32> =
                    nums::<f64>(child(w, "leafValues").and_then(|n| n.text()).unwrap_or(""))
                        .into_iter()
                        .map(|v| v as f32)
                        .collect();
                if inn.is_empty() || !inn.len().is_multiple_of(4) {
                    return Err("bad internalNodes".into());
                }
                let nodes: Vec<Node> = inn
                    .chunks(4)
                    .map(|c| Node {
                        left: c[0] as i32,
                        right: c[1] as i32,
                        feature: c[2] as usize,
                        threshold: c[3] as f32,
                    })
                    .collect();
                for n in &nodes {
                    let ok = |i: i32| {
                        if i > 0 {
                            (i as usize) < nodes.len()
                        } else {
                            ((-i) as usize) < leaves.len()
                        }
                    };
                    if n.feature >= features.len() || !ok(n.left) || !ok(n.right) {
                        return Err("node index out of range".into());
                    }
                }
                trees.push(Tree { nodes, leaves });
            }
            stages.push(Stage { threshold, trees });
        }
        if stages.is_empty() {
            return Err("cascade has no stages".into());
        }
        Ok(Cascade {
            width,
            height,
            stages,
            features,
        })
    }

    /// Detects faces in a grey image (for OpenCV parity feed it `Rgb::to_grey_opencv`).
    pub fn detect(&self, g: &Grey, p: &FaceParams) -> Vec<Face> {
        group_faces(&self.detect_raw(g, p), p.min_neighbours, g.width, g.height)
    }

    /// Every window that passes all stages, in image coordinates `[x, y, w, h]`, before
    /// grouping: what OpenCV's `detectMultiScale` returns with `minNeighbors = 0`.
    ///
    /// Scales are OpenCV's: `factor = scale_factor^k` (f64, from 1), kept when the window
    /// `cvRound(20·factor)` is at least `min_size` and at most the image; each level is the image
    /// resized (bit-exact fixed-point bilinear, `INTER_LINEAR_EXACT`) to `cvRound(W/factor)`;
    /// windows step by 2 (1 from factor 2), and a window rejected by the first stage also skips
    /// the next x position, as OpenCV's loop does.
    pub fn detect_raw(&self, g: &Grey, p: &FaceParams) -> Vec<[i32; 4]> {
        let mut raw = Vec::new();
        let (w, h) = (g.width as i32, g.height as i32);
        if w < self.width as i32 || h < self.height as i32 {
            return raw;
        }
        let sf = p.scale_factor;
        if sf.is_nan() || sf <= 1.0 {
            return raw;
        }
        let stages = self.flatten();
        let mut factor = 1.0f64;
        loop {
            let ww = (self.width as f64 * factor).round_ties_even() as i64;
            let wh = (self.height as f64 * factor).round_ties_even() as i64;
            if ww > w as i64 || wh > h as i64 {
                break;
            }
            if ww >= p.min_size as i64 && wh >= p.min_size as i64 {
                let sc = factor as f32;
                let sw = (w as f32 / sc).round_ties_even() as u32;
                let sh = (h as f32 / sc).round_ties_even() as u32;
                let scaled = resize_linear_exact(g, sw, sh);
                let step = if sc >= 2.0 { 1 } else { 2 };
                let win_w = (self.width as f32 * sc).round_ties_even() as i32;
                let win_h = (self.height as f32 * sc).round_ties_even() as i32;
                for (x, y) in self.scan(&scaled, step, &stages) {
                    raw.push([
                        (x as f32 * sc).round_ties_even() as i32,
                        (y as f32 * sc).round_ties_even() as i32,
                        win_w,
                        win_h,
                    ]);
                }
            }
            factor *= sf;
        }
        raw
    }

    fn flatten(&self) -> Vec<FStage> {
        self.stages
            .iter()
            .map(|st| FStage {
                threshold: st.threshold,
                trees: st
                    .trees
                    .iter()
                    .map(|t| FTree {
                        nodes: t
                            .nodes
                            .iter()
                            .map(|n| {
                                let f = &self.features[n.feature];
                                let mut rects = [([0u32; 4], 0f32); 3];
                                for (k, (r, wt)) in f.rects.iter().take(3).enumerate() {
                                    rects[k] = (*r, *wt);
                                }
                                FNode {
                                    rects,
                                    // OpenCV evaluates the third rectangle only if its weight
                                    // is not 0
                                    nrects: if f.rects.len() >= 3 && f.rects[2].1 != 0.0 {
                                        3
                                    } else {
                                        f.rects.len().min(2)
                                    },
                                    threshold: n.threshold,
                                    left: n.left,
                                    right: n.right,
                                }
                            })
                            .collect(),
                        leaves: t.leaves.clone(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// All window positions (x, y) of the scaled image that pass every stage.
    fn scan(&self, g: &Grey, step: usize, stages: &[FStage]) -> Vec<(usize, usize)> {
        let (w, h) = (g.width as usize, g.height as usize);
        let iw = w + 1;
        // Integral images of values and squares with wrapping u32 arithmetic (OpenCV: int32):
        // differences of wrapped sums are exact because every window sum fits 32 bits.
        let mut ii = vec![0u32; iw * (h + 1)];
        let mut sq = vec![0u32; iw * (h + 1)];
        for y in 0..h {
            let (mut rs, mut rq) = (0u32, 0u32);
            let row = &g.data[y * w..(y + 1) * w];
            for (x, &v) in row.iter().enumerate() {
                rs = rs.wrapping_add(v as u32);
                rq = rq.wrapping_add(v as u32 * v as u32);
                ii[(y + 1) * iw + x + 1] = ii[y * iw + x + 1].wrapping_add(rs);
                sq[(y + 1) * iw + x + 1] = sq[y * iw + x + 1].wrapping_add(rq);
            }
        }
        let off = |r: &[u32; 4]| {
            let (x, y, rw, rh) = (r[0] as usize, r[1] as usize, r[2] as usize, r[3] as usize);
            [
                y * iw + x,
                y * iw + x + rw,
                (y + rh) * iw + x,
                (y + rh) * iw + x + rw,
            ]
        };
        struct ONode {
            rects: [([usize; 4], f32); 3],
            nrects: usize,
            threshold: f32,
            left: i32,
            right: i32,
        }
        type OTree<'a> = (Vec<ONode>, &'a [f32]);
        let stages: Vec<(f32, Vec<OTree>)> = stages
            .iter()
            .map(|st| {
                let trees = st
                    .trees
                    .iter()
                    .map(|t| {
                        let nodes = t
                            .nodes
                            .iter()
                            .map(|n| {
                                let mut rects = [([0usize; 4], 0f32); 3];
                                for k in 0..n.nrects {
                                    rects[k] = (off(&n.rects[k].0), n.rects[k].1);
                                }
                                ONode {
                                    rects,
                                    nrects: n.nrects,
                                    threshold: n.threshold,
                                    left: n.left,
                                    right: n.right,
                                }
                            })
                            .collect();
                        (nodes, t.leaves.as_slice())
                    })
                    .collect();
                (st.threshold, trees)
            })
            .collect();
        let (cw, ch) = (self.width as usize, self.height as usize);
        // OpenCV's normrect: the window shrunk by 1 px on each side
        let norm = off(&[1, 1, self.width - 2, self.height - 2]);
        let area = ((cw - 2) * (ch - 2)) as f64;
        // OpenCV's working size: positions x with x + 20 < width + 1
        let (ww, wh) = ((w + 1).saturating_sub(cw), (h + 1).saturating_sub(ch));
        let mut out = Vec::new();
        let run_at = |base: usize| -> i32 {
            let rs = |o: &[usize; 4]| {
                ii[base + o[3]]
                    .wrapping_sub(ii[base + o[1]])
                    .wrapping_sub(ii[base + o[2]])
                    .wrapping_add(ii[base + o[0]])
            };
            let s = rs(&norm) as i32 as f64;
            let q = sq[base + norm[3]]
                .wrapping_sub(sq[base + norm[1]])
                .wrapping_sub(sq[base + norm[2]])
                .wrapping_add(sq[base + norm[0]]) as f64;
            let nf = area * q - s * s;
            // OpenCV's setWindow: no variance, or σ ≤ 10 grey levels (area / sqrt(nf) ≥ 0.1),
            // rejects the window before any stage
            if nf <= 0.0 {
                return -1;
            }
            let inv = (1.0 / nf.sqrt()) as f32;
            if area * inv as f64 >= 0.1 {
                return -1;
            }
            for (si, (thr, trees)) in stages.iter().enumerate() {
                let mut sum = 0f64;
                for (nodes, leaves) in trees {
                    let mut idx = 0i32;
                    loop {
                        let n = &nodes[idx as usize];
                        let mut v = 0f32;
                        for (o, wt) in &n.rects[..n.nrects] {
                            v += *wt * rs(o) as i32 as f32;
                        }
                        idx = if v * inv < n.threshold {
                            n.left
                        } else {
                            n.right
                        };
                        if idx <= 0 {
                            sum += leaves[(-idx) as usize] as f64;
                            break;
                        }
                    }
                }
                if sum < *thr as f64 {
                    return -(si as i32);
                }
            }
            1
        };
        for y in (0..wh).step_by(step) {
            let mut x = 0;
            while x < ww {
                let r = run_at(y * iw + x);
                if r > 0 {
                    out.push((x, y));
                } else if r == 0 {
                    // rejected by the first stage: OpenCV skips the next position too
                    x += step;
                }
                x += step;
            }
        }
        out
    }
}

struct FNode {
    rects: [([u32; 4], f32); 3],
    nrects: usize,
    threshold: f32,
    left: i32,
    right: i32,
}

struct FTree {
    nodes: Vec<FNode>,
    leaves: Vec<f32>,
}

struct FStage {
    threshold: f32,
    trees: Vec<FTree>,
}

/// The faces of raw window hits (`Cascade::detect_raw`) of a `width`x`height` image: OpenCV's
/// `groupRectangles(min_neighbours, eps 0.2)`, then the boxes clipped to the image (OpenCV's
/// `clipObjects`). `detect` is `detect_raw` followed by this.
pub fn group_faces(raw: &[[i32; 4]], min_neighbours: u32, width: u32, height: u32) -> Vec<Face> {
    group_rectangles(raw, min_neighbours as usize, 0.2)
        .into_iter()
        .filter_map(|(r, n)| clip(r, width as i32, height as i32).map(|r| (r, n)))
        .map(|(r, n)| Face {
            bbox: [r[0] as u32, r[1] as u32, r[2] as u32, r[3] as u32],
            neighbours: n as u32,
        })
        .collect()
}

/// `cv::Rect & Rect(0, 0, w, h)`: the box clipped to the image, None when nothing is left.
fn clip(r: [i32; 4], w: i32, h: i32) -> Option<[i32; 4]> {
    let (x1, y1) = (r[0].max(0), r[1].max(0));
    let x2 = (r[0] + r[2]).min(w);
    let y2 = (r[1] + r[3]).min(h);
    (x2 > x1 && y2 > y1).then_some([x1, y1, x2 - x1, y2 - y1])
}

/// Bilinear resize to an exact size, bit-exact with OpenCV's `resize(INTER_LINEAR_EXACT)` on
/// 8-bit grey: pixel-centre mapping computed in f64, 8-bit fixed-point weights (rounded half to
/// even), horizontal pass into 8.8 fixed point, vertical pass rounded from 16 fraction bits;
/// positions past the last pixel take the edge pixel. A same-size resize is a copy and an exact
/// halving is OpenCV's 2x2 area mean, as in OpenCV.
pub fn resize_linear_exact(g: &Grey, nw: u32, nh: u32) -> Grey {
    let (sw, sh) = (g.width as usize, g.height as usize);
    let (dw, dh) = (nw as usize, nh as usize);
    if dw == sw && dh == sh {
        return g.clone();
    }
    let mut data = vec![0u8; dw * dh];
    if dw * 2 == sw && dh * 2 == sh {
        for y in 0..dh {
            let (r0, r1) = (&g.data[2 * y * sw..], &g.data[(2 * y + 1) * sw..]);
            for x in 0..dw {
                let s = r0[2 * x] as u32
                    + r0[2 * x + 1] as u32
                    + r1[2 * x] as u32
                    + r1[2 * x + 1] as u32;
                data[y * dw + x] = ((s + 2) >> 2) as u8;
            }
        }
        return Grey {
            width: nw,
            height: nh,
            data,
        };
    }
    // per destination index: (source offset, weight of offset, weight of offset + 1), and the
    // range [lo, hi) of indices that interpolate (below: first pixel, from hi: last pixel)
    fn coeffs(src: usize, dst: usize) -> (Vec<(usize, u32, u32)>, usize, usize) {
        let scale = 1.0 / (dst as f64 / src as f64);
        let (mut lo, mut hi) = (0usize, dst);
        let mut v = vec![(0usize, 256u32, 0u32); dst];
        for (d, c) in v.iter_mut().enumerate() {
            let f = scale * (d as f64 + 0.5) - 0.5;
            let i = f.floor();
            if i >= 0.0 && src > 1 {
                let i = i as usize;
                if i < src - 1 {
                    let c1 = ((f - i as f64) * 256.0).round_ties_even().max(0.0) as u32;
                    *c = (i, 256 - c1.min(256), c1);
                } else {
                    *c = (src - 1, 256, 0);
                    hi = hi.min(d);
                }
            } else {
                lo = lo.max(d + 1);
            }
        }
        (v, lo, hi)
    }
    let (xc, xlo, xhi) = coeffs(sw, dw);
    let (yc, ylo, yhi) = coeffs(sh, dh);
    let hline = |row: &[u8], out: &mut [u32]| {
        for (d, o) in out.iter_mut().enumerate() {
            *o = if d < xlo {
                (row[0] as u32) << 8
            } else if d >= xhi {
                (row[sw - 1] as u32) << 8
            } else {
                let (i, c0, c1) = xc[d];
                c0 * row[i] as u32 + c1 * row[i + 1] as u32
            };
        }
    };
    let mut h0 = vec![0u32; dw];
    let mut h1 = vec![0u32; dw];
    let mut cached = usize::MAX; // source row held in h0
    for y in 0..dh {
        let out = &mut data[y * dw..(y + 1) * dw];
        if y < ylo || y >= yhi {
            let r = if y < ylo { 0 } else { sh - 1 };
            hline(&g.data[r * sw..(r + 1) * sw], &mut h0);
            cached = usize::MAX;
            for (o, &v) in out.iter_mut().zip(&h0) {
                *o = ((v + 128) >> 8).min(255) as u8;
            }
            continue;
        }
        let (i, c0, c1) = yc[y];
        if cached == i {
            // h0, h1 already hold rows i, i + 1
        } else if cached != usize::MAX && cached + 1 == i {
            std::mem::swap(&mut h0, &mut h1);
            hline(&g.data[(i + 1) * sw..(i + 2) * sw], &mut h1);
        } else {
            hline(&g.data[i * sw..(i + 1) * sw], &mut h0);
            hline(&g.data[(i + 1) * sw..(i + 2) * sw], &mut h1);
        }
        cached = i;
        for ((o, &a), &b) in out.iter_mut().zip(&h0).zip(&h1) {
            *o = ((a * c0 + b * c1 + 32768) >> 16).min(255) as u8;
        }
    }
    Grey {
        width: nw,
        height: nh,
        data,
    }
}

/// OpenCV's `groupRectangles`: partition the boxes into classes of similar ones (corners within
/// eps·(mean of the smaller sides), transitively), average each class (`sum · (1/n)` in f32,
/// rounded half to even), drop classes with at most `min_neighbours` members and boxes nested in
/// a stronger one. With `min_neighbours` 0 the boxes are returned as they are (neighbours 1).
fn group_rectangles(rects: &[[i32; 4]], min_neighbours: usize, eps: f64) -> Vec<([i32; 4], usize)> {
    if min_neighbours == 0 {
        return rects.iter().map(|r| (*r, 1)).collect();
    }
    let n = rects.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    let similar = |a: &[i32; 4], b: &[i32; 4]| {
        let delta = eps * (a[2].min(b[2]) + a[3].min(b[3])) as f64 * 0.5;
        (a[0] - b[0]).abs() as f64 <= delta
            && (a[1] - b[1]).abs() as f64 <= delta
            && (a[0] + a[2] - b[0] - b[2]).abs() as f64 <= delta
            && (a[1] + a[3] - b[1] - b[3]).abs() as f64 <= delta
    };
    for i in 0..n {
        for j in i + 1..n {
            if similar(&rects[i], &rects[j]) {
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                if a != b {
                    parent[a] = b;
                }
            }
        }
    }
    let mut sums: std::collections::BTreeMap<usize, ([i32; 4], usize)> = Default::default();
    for i in 0..n {
        let r = find(&mut parent, i);
        let e = sums.entry(r).or_insert(([0; 4], 0));
        for k in 0..4 {
            e.0[k] += rects[i][k];
        }
        e.1 += 1;
    }
    let classes: Vec<([i32; 4], usize)> = sums
        .values()
        .map(|(s, c)| {
            let inv = 1.0f32 / *c as f32;
            let avg = |k: usize| (s[k] as f32 * inv).round_ties_even() as i32;
            ([avg(0), avg(1), avg(2), avg(3)], *c)
        })
        .collect();
    let mut out = Vec::new();
    for (i, (r1, n1)) in classes.iter().enumerate() {
        if *n1 <= min_neighbours {
            continue;
        }
        let nested = classes.iter().enumerate().any(|(j, (r2, n2))| {
            if i == j || *n2 <= min_neighbours {
                return false;
            }
            let dx = (r2[2] as f64 * eps).round_ties_even() as i32;
            let dy = (r2[3] as f64 * eps).round_ties_even() as i32;
            r1[0] >= r2[0] - dx
                && r1[1] >= r2[1] - dy
                && r1[0] + r1[2] <= r2[0] + r2[2] + dx
                && r1[1] + r1[3] <= r2[1] + r2[3] + dy
                && (*n2 > (*n1).max(3) || *n1 < 3)
        });
        if !nested {
            out.push((*r1, *n1));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Rgb;

    /// Values computed once with cv2 4.14.0 (`cv2.resize(a, (w, h),
    /// interpolation=cv2.INTER_LINEAR_EXACT)`), a = (37x + 91y + (xy mod 7)·29) mod 256, 13x9.
    #[test]
    fn resize_is_bit_exact_with_opencv_linear_exact() {
        let src = |w: u32, h: u32| Grey {
            width: w,
            height: h,
            data: (0..h)
                .flat_map(|y| {
                    (0..w).map(move |x| ((x * 37 + y * 91 + (x * y) % 7 * 29) % 256) as u8)
                })
                .collect(),
        };
        let a = src(13, 9);
        let cases: [(u32, u32, &[u8]); 2] = [
            (
                6,
                4,
                &[
                    89, 88, 168, 64, 144, 143, 89, 147, 213, 48, 67, 133, 156, 86, 199, 178, 89,
                    99, 131, 195, 50, 158, 174, 78,
                ],
            ),
            (
                11,
                8,
                &[
                    9, 55, 94, 131, 177, 223, 16, 62, 99, 137, 183, 110, 151, 141, 88, 158, 195,
                    115, 160, 131, 94, 168, 124, 65, 137, 130, 186, 56, 120, 70, 152, 122, 200, 59,
                    86, 122, 91, 192, 126, 64, 90, 130, 85, 210, 151, 94, 125, 54, 193, 196, 146,
                    104, 123, 51, 215, 97, 207, 126, 18, 76, 90, 111, 146, 33, 20, 87, 114, 186,
                    202, 80, 42, 79, 124, 175, 181, 67, 48, 195, 52, 128, 194, 68, 99, 181, 61,
                    137, 201, 54,
                ],
            ),
        ];
        for (w, h, want) in cases {
            assert_eq!(resize_linear_exact(&a, w, h).data, want, "{w}x{h}");
        }
        // an exact halving is OpenCV's 2x2 area mean
        let mut b = src(12, 8);
        b.data = (0..8)
            .flat_map(|y| a.data[y * 13..y * 13 + 12].to_vec())
            .collect();
        assert_eq!(
            resize_linear_exact(&b, 6, 4).data,
            [
                71, 110, 149, 138, 126, 101, 90, 131, 147, 85, 75, 142, 109, 127, 131, 174, 114,
                68, 142, 173, 26, 71, 154, 71
            ]
        );
        assert_eq!(resize_linear_exact(&a, 13, 9).data, a.data);
    }

    /// cv2 4.14.0 `cvtColor(BGR2GRAY)` on pixels where PIL's luma and OpenCV 3's 14-bit formula
    /// both give another value.
    #[test]
    fn opencv_grey_matches_cv2() {
        let px: [[u8; 4]; 6] = [
            [105, 11, 225, 63],
            [91, 38, 149, 66],
            [189, 214, 12, 184],
            [104, 10, 224, 62],
            [33, 104, 242, 98],
            [34, 134, 234, 115],
        ];
        let rgb = Rgb::from_raw(6, 1, px.iter().flat_map(|p| p[..3].to_vec()).collect()).unwrap();
        let want: Vec<u8> = px.iter().map(|p| p[3]).collect();
        assert_eq!(rgb.to_grey_opencv().data, want);
        assert_ne!(rgb.to_grey().data, want);
    }

    #[test]
    fn grouping_follows_opencv() {
        // three similar boxes: mean x = 31/3 = 10.33 → 10, w = (20+21+21)/3 = 20.67 → 21
        let raw = [[10, 10, 20, 20], [10, 11, 21, 21], [11, 10, 21, 21]];
        assert_eq!(group_rectangles(&raw, 2, 0.2), vec![([10, 10, 21, 21], 3)]);
        // at most min_neighbours members: dropped
        assert!(group_rectangles(&raw, 3, 0.2).is_empty());
        // means rounded half to even: x 10.5 → 10, y 12.5 → 12, h 23.5 → 24 (half away from
        // zero would give 11, 13, 24)
        let two = [[10, 12, 24, 24], [11, 13, 24, 23]];
        assert_eq!(group_rectangles(&two, 1, 0.2), vec![([10, 12, 24, 24], 2)]);
        // min_neighbours 0: the raw boxes, one neighbour each
        assert_eq!(group_rectangles(&two, 0, 0.2).len(), 2);
        // clipping to the image
        assert_eq!(clip([-2, 5, 30, 30], 20, 40), Some([0, 5, 20, 30]));
        assert_eq!(clip([25, 5, 30, 30], 20, 40), None);
    }
}
