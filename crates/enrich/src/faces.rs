//! Frontal face detection with OpenCV's pre-trained Haar cascades (the XML files of Debian's
//! `opencv-data`, e.g. `/usr/share/opencv4/haarcascades/haarcascade_frontalface_alt2.xml`),
//! evaluated by our own code: integral images over an image pyramid, variance-normalised Haar
//! features, boosted stages of small trees, then OpenCV's `groupRectangles` (min neighbours,
//! eps 0.2) — the same algorithm as `cv::CascadeClassifier::detectMultiScale`.

use crate::decode::Grey;
use crate::error::EnrichError;
use serde::{Deserialize, Serialize};

/// Default location of the cascade (Debian package `opencv-data`).
pub const DEFAULT_CASCADE: &str =
    "/usr/share/opencv4/haarcascades/haarcascade_frontalface_alt2.xml";

/// A detected face.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Face {
    /// x, y, width, height in image pixels.
    pub bbox: [u32; 4],
    /// Number of raw detections merged into this box (OpenCV's "neighbours").
    pub neighbours: u32,
}

/// Detection parameters.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct FaceParams {
    pub scale_factor: f32,
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
                let v: Vec<f32> = nums(r.text().unwrap_or(""));
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
            let threshold: f32 = child(s, "stageThreshold")
                .and_then(|n| n.text())
                .and_then(|t| t.trim().parse().ok())
                .ok_or("stage without threshold")?;
            let mut trees = Vec::new();
            for w in items(child(s, "weakClassifiers").ok_or("stage without weakClassifiers")?) {
                let inn: Vec<f64> = nums(
                    child(w, "internalNodes")
                        .and_then(|n| n.text())
                        .unwrap_or(""),
                );
                let leaves: Vec<f32> =
                    nums(child(w, "leafValues").and_then(|n| n.text()).unwrap_or(""));
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

    /// Detects faces in a grey image.
    pub fn detect(&self, g: &Grey, p: &FaceParams) -> Vec<Face> {
        let mut raw: Vec<[i32; 4]> = Vec::new();
        let (w, h) = (g.width as f32, g.height as f32);
        let mut factor = (p.min_size as f32 / self.width as f32).max(1.0);
        loop {
            let win_w = (self.width as f32 * factor).round() as i32;
            let win_h = (self.height as f32 * factor).round() as i32;
            let sw = (w / factor).round() as u32;
            let sh = (h / factor).round() as u32;
            if sw < self.width || sh < self.height || win_w as f32 > w || win_h as f32 > h {
                break;
            }
            let scaled = if (factor - 1.0).abs() < 1e-3 {
                g.clone()
            } else {
                resize_to(g, sw, sh)
            };
            let step = if factor > 2.0 { 1 } else { 2 };
            for (x, y) in self.scan(&scaled, step) {
                raw.push([
                    (x as f32 * factor).round() as i32,
                    (y as f32 * factor).round() as i32,
                    win_w,
                    win_h,
                ]);
            }
            factor *= p.scale_factor;
        }
        group_rectangles(&raw, p.min_neighbours as usize, 0.2)
            .into_iter()
            .map(|(r, n)| Face {
                bbox: [
                    r[0].max(0) as u32,
                    r[1].max(0) as u32,
                    r[2] as u32,
                    r[3] as u32,
                ],
                neighbours: n as u32,
            })
            .collect()
    }

    /// All window positions (x, y) of the scaled image that pass every stage.
    fn scan(&self, g: &Grey, step: usize) -> Vec<(usize, usize)> {
        let (w, h) = (g.width as usize, g.height as usize);
        let iw = w + 1;
        // Integral images with wrapping u32 / u64 arithmetic: differences of wrapped sums are
        // exact because every rectangle sum fits the type.
        let mut ii = vec![0u32; iw * (h + 1)];
        let mut sq = vec![0u64; iw * (h + 1)];
        for y in 0..h {
            let (mut rs, mut rq) = (0u32, 0u64);
            let row = &g.data[y * w..(y + 1) * w];
            for (x, &v) in row.iter().enumerate() {
                rs = rs.wrapping_add(v as u32);
                rq += (v as u64) * (v as u64);
                ii[(y + 1) * iw + x + 1] = ii[y * iw + x + 1].wrapping_add(rs);
                sq[(y + 1) * iw + x + 1] = sq[y * iw + x + 1] + rq;
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
        // flatten: per stage, per tree, per node: threshold, children and up to 3 weighted rects
        struct FNode {
            rects: [([usize; 4], f32); 3],
            nrects: usize,
            threshold: f32,
            left: i32,
            right: i32,
        }
        struct FTree {
            nodes: Vec<FNode>,
            leaves: Vec<f32>,
        }
        let stages: Vec<(f32, Vec<FTree>)> = self
            .stages
            .iter()
            .map(|st| {
                let trees = st
                    .trees
                    .iter()
                    .map(|t| FTree {
                        nodes: t
                            .nodes
                            .iter()
                            .map(|n| {
                                let f = &self.features[n.feature];
                                let mut rects = [([0usize; 4], 0f32); 3];
                                for (k, (r, wt)) in f.rects.iter().take(3).enumerate() {
                                    rects[k] = (off(r), *wt);
                                }
                                FNode {
                                    rects,
                                    nrects: f.rects.len().min(3),
                                    threshold: n.threshold,
                                    left: n.left,
                                    right: n.right,
                                }
                            })
                            .collect(),
                        leaves: t.leaves.clone(),
                    })
                    .collect();
                (st.threshold, trees)
            })
            .collect();
        let (cw, ch) = (self.width as usize, self.height as usize);
        let norm = off(&[1, 1, self.width - 2, self.height - 2]);
        let area = ((cw - 2) * (ch - 2)) as f64;
        let mut out = Vec::new();
        let mut y = 0;
        while y + ch <= h {
            let mut x = 0;
            while x + cw <= w {
                let base = y * iw + x;
                let rs = |o: &[usize; 4]| {
                    ii[base + o[3]]
                        .wrapping_sub(ii[base + o[1]])
                        .wrapping_sub(ii[base + o[2]])
                        .wrapping_add(ii[base + o[0]])
                };
                let s = rs(&norm) as f64;
                let q = (sq[base + norm[3]] + sq[base + norm[0]]
                    - sq[base + norm[1]]
                    - sq[base + norm[2]]) as f64;
                let nf = area * q - s * s;
                // a window whose standard deviation is under 2 grey levels is flat: no face
                if nf < 4.0 * area * area {
                    x += step;
                    continue;
                }
                let inv = if nf > 0.0 { 1.0 / nf.sqrt() } else { 1.0 } as f32;
                let mut pass = true;
                for (thr, trees) in &stages {
                    let mut sum = 0f32;
                    for t in trees {
                        let mut idx = 0i32;
                        loop {
                            let n = &t.nodes[idx as usize];
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
                                sum += t.leaves[(-idx) as usize];
                                break;
                            }
                        }
                    }
                    if sum < *thr {
                        pass = false;
                        break;
                    }
                }
                if pass {
                    out.push((x, y));
                }
                x += step;
            }
            y += step;
        }
        out
    }
}

/// Bilinear resize to an exact size (pixel-centre mapping, as OpenCV's INTER_LINEAR).
pub(crate) fn resize_to(g: &Grey, nw: u32, nh: u32) -> Grey {
    let (sw, sh) = (g.width as usize, g.height as usize);
    let (fx, fy) = (sw as f32 / nw as f32, sh as f32 / nh as f32);
    let xs: Vec<(usize, usize, f32)> = (0..nw)
        .map(|x| {
            let sx = ((x as f32 + 0.5) * fx - 0.5).clamp(0.0, (sw - 1) as f32);
            let x0 = sx.floor() as usize;
            (x0, (x0 + 1).min(sw - 1), sx - x0 as f32)
        })
        .collect();
    let mut data = vec![0u8; (nw * nh) as usize];
    for y in 0..nh as usize {
        let sy = ((y as f32 + 0.5) * fy - 0.5).clamp(0.0, (sh - 1) as f32);
        let y0 = sy.floor() as usize;
        let y1 = (y0 + 1).min(sh - 1);
        let wy = sy - y0 as f32;
        let (r0, r1) = (
            &g.data[y0 * sw..(y0 + 1) * sw],
            &g.data[y1 * sw..(y1 + 1) * sw],
        );
        for (o, &(x0, x1, wx)) in data[y * nw as usize..(y + 1) * nw as usize]
            .iter_mut()
            .zip(&xs)
        {
            let a = r0[x0] as f32 + (r0[x1] as f32 - r0[x0] as f32) * wx;
            let b = r1[x0] as f32 + (r1[x1] as f32 - r1[x0] as f32) * wx;
            *o = (a + (b - a) * wy + 0.5) as u8;
        }
    }
    Grey {
        width: nw,
        height: nh,
        data,
    }
}

/// OpenCV's `groupRectangles`: cluster similar boxes, average each cluster, drop clusters with
/// at most `min_neighbours` members and boxes nested in a stronger one.
fn group_rectangles(rects: &[[i32; 4]], min_neighbours: usize, eps: f32) -> Vec<([i32; 4], usize)> {
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
        let delta = eps * (a[2].min(b[2]) + a[3].min(b[3])) as f32 * 0.5;
        (a[0] - b[0]).abs() as f32 <= delta
            && (a[1] - b[1]).abs() as f32 <= delta
            && (a[0] + a[2] - b[0] - b[2]).abs() as f32 <= delta
            && (a[1] + a[3] - b[1] - b[3]).abs() as f32 <= delta
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
    let mut sums: std::collections::BTreeMap<usize, ([i64; 4], usize)> = Default::default();
    for i in 0..n {
        let r = find(&mut parent, i);
        let e = sums.entry(r).or_insert(([0; 4], 0));
        for k in 0..4 {
            e.0[k] += rects[i][k] as i64;
        }
        e.1 += 1;
    }
    let classes: Vec<([i32; 4], usize)> = sums
        .values()
        .map(|(s, c)| {
            let c64 = *c as f64;
            let avg = |k: usize| (s[k] as f64 / c64).round() as i32;
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
            let dx = (r2[2] as f32 * eps).round() as i32;
            let dy = (r2[3] as f32 * eps).round() as i32;
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
