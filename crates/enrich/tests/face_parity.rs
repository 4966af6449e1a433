//! Exact parity of the face detector with OpenCV's `CascadeClassifier::detectMultiScale`
//! (alt2, scaleFactor 1.1, minNeighbors 3, minSize 24) on screens built here, deterministically,
//! from the fixture faces: crops scaled and pasted onto gradients, noise, a dense text screen, at
//! low contrast and across the image borders, in several image sizes. OpenCV's output for them —
//! grouped boxes with neighbour counts, and the raw window hits (minNeighbors 0) — was computed
//! once with cv2 and is pinned in `tests/data/faces_opencv.json` (the OpenCV version is recorded
//! there); no Python runs here.
//!
//! To regenerate the reference (after changing a scene, or for another OpenCV):
//! `OVERLORD_DUMP_FACE_SCENES=/tmp/scenes cargo test -p overlord-enrich --test face_parity`,
//! then `python3 scripts/faces_opencv_ref.py /tmp/scenes crates/enrich/tests/data/faces_opencv.json`.
#[path = "support/unseen.rs"]
mod unseen;

use overlord_enrich::faces::{Cascade, DEFAULT_CASCADE, FaceParams, group_faces};
use overlord_enrich::metrics;
use unseen::{Canvas, Rng, face_sources};

/// A `w`x`h` canvas: vertical gradient from `a` to `b` plus uniform noise of ±`noise` levels
/// (integer arithmetic only, so the pixels are identical on every machine).
fn background(w: u32, h: u32, a: [u8; 3], b: [u8; 3], noise: u32, rng: &mut Rng) -> Canvas {
    let mut px = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for _ in 0..w {
            for k in 0..3 {
                let v =
                    (a[k] as i64 * (h - 1 - y) as i64 + b[k] as i64 * y as i64) / (h - 1) as i64;
                let n = if noise > 0 {
                    rng.range(0, 2 * noise + 1) as i64 - noise as i64
                } else {
                    0
                };
                px.push((v + n).clamp(0, 255) as u8);
            }
        }
    }
    Canvas { w, h, px }
}

/// A face crop (RGBA) with a margin of a quarter of the box on each side, its contrast scaled by
/// `k` around mid-grey.
fn face_crop(src: &Canvas, b: [u32; 4], k: f64) -> (Vec<u8>, u32, u32) {
    let m = b[2] / 4;
    let (x, y) = (b[0].saturating_sub(m), b[1].saturating_sub(m));
    let (w, h) = (b[2] + 2 * m, b[3] + 2 * m);
    let mut c = src.crop_rgba(x, y, w, h);
    if k != 1.0 {
        for (i, v) in c.iter_mut().enumerate() {
            if i % 4 != 3 {
                *v = (128.0 + (*v as f64 - 128.0) * k).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    (c, w, h)
}

fn paste(c: &mut Canvas, f: &(Vec<u8>, u32, u32), x: i64, y: i64, size: u32) {
    c.paste(&f.0, f.1, f.2, x, y, size, size);
}

/// The scenes: (name, screen).
fn scenes() -> Vec<(String, Canvas)> {
    let screens = metrics::fixtures_dir()
        .unwrap_or_else(|e| panic!("{e}"))
        .join("screens");
    let src = face_sources(&screens);
    let astro = src
        .iter()
        .find(|s| s.boxes.len() == 1)
        .expect("astronaut fixture");
    let lfw = src
        .iter()
        .find(|s| s.boxes.len() == 12)
        .expect("LFW gallery fixture");
    let a = face_crop(&astro.canvas, astro.boxes[0], 1.0);
    let l: Vec<_> = lfw
        .boxes
        .iter()
        .map(|b| face_crop(&lfw.canvas, *b, 1.0))
        .collect();
    let mut rng = Rng::new(20261121);
    let mut out = Vec::new();

    // the astronaut at six sizes on a gradient, the largest across the bottom-right corner
    let mut c = background(800, 600, [30, 40, 60], [200, 190, 170], 0, &mut rng);
    for (i, s) in [36u32, 52, 77, 118, 170].iter().enumerate() {
        paste(&mut c, &a, 20 + 150 * i as i64, 40 + 60 * i as i64, *s);
    }
    paste(&mut c, &a, 640, 450, 230);
    out.push(("scaled_astronaut_800x600".to_string(), c));

    // LFW faces with contrast 0.08..0.6 on mid-grey noise: around OpenCV's σ > 10 window test
    let mut c = background(640, 480, [128, 128, 128], [128, 128, 128], 3, &mut rng);
    for (i, k) in [0.08, 0.12, 0.16, 0.2, 0.25, 0.3, 0.4, 0.6]
        .iter()
        .enumerate()
    {
        let f = face_crop(&lfw.canvas, lfw.boxes[i], *k);
        paste(
            &mut c,
            &f,
            10 + 155 * (i % 4) as i64,
            20 + 230 * (i / 4) as i64,
            140,
        );
    }
    out.push(("low_contrast_640x480".to_string(), c));

    // twelve LFW faces, 28..150 px, on noisy grey, odd image size
    let mut c = background(777, 555, [90, 100, 110], [150, 140, 120], 20, &mut rng);
    for (i, f) in l.iter().enumerate() {
        let s = 28 + 11 * i as u32;
        paste(
            &mut c,
            f,
            8 + 190 * (i % 4) as i64,
            6 + 180 * (i / 4) as i64,
            s,
        );
    }
    out.push(("lfw_noise_777x555".to_string(), c));

    // faces over a dense text screen
    let mut c = unseen::decode_png(&screens.join("09_ps_dense_light.png"));
    paste(&mut c, &a, 100, 120, 70);
    paste(&mut c, &l[3], 520, 300, 50);
    paste(&mut c, &l[7], 700, 500, 112);
    out.push(("text_clutter_1024x768".to_string(), c));

    // small image, faces across every border and one at the minimum size
    let mut c = background(333, 257, [230, 230, 230], [210, 215, 225], 1, &mut rng);
    paste(&mut c, &l[0], -20, -16, 80);
    paste(&mut c, &l[5], 280, 60, 75);
    paste(&mut c, &a, 120, 200, 90);
    paste(&mut c, &l[9], 150, 40, 32);
    out.push(("edges_333x257".to_string(), c));
    out
}

fn sorted(mut v: Vec<Vec<i64>>) -> Vec<Vec<i64>> {
    v.sort();
    v
}

#[test]
fn detector_reproduces_opencv_on_generated_screens() {
    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/faces_opencv.json"),
        )
        .expect("tests/data/faces_opencv.json"),
    )
    .expect("reference JSON");
    let files = reference["files"].as_object().expect("files");
    let dump = std::env::var_os("OVERLORD_DUMP_FACE_SCENES").map(std::path::PathBuf::from);
    let cascade = Cascade::load(std::path::Path::new(DEFAULT_CASCADE))
        .expect("cascade (Debian package opencv-data)");
    let p = FaceParams::default();
    let scenes = scenes();
    let (mut faces, mut raws, mut failures) = (0, 0, Vec::new());
    for (name, c) in &scenes {
        let file = format!("{name}.png");
        if let Some(d) = &dump {
            std::fs::create_dir_all(d).unwrap();
            let mut buf = Vec::new();
            let mut enc = png::Encoder::new(&mut buf, c.w, c.h);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            enc.write_header().unwrap().write_image_data(&c.px).unwrap();
            std::fs::write(d.join(&file), buf).unwrap();
        }
        let rgb = c.clone().into_rgb();
        let g = rgb.to_grey_opencv();
        let raw = cascade.detect_raw(&g, &p);
        let ours = sorted(
            group_faces(&raw, p.min_neighbours, g.width, g.height)
                .iter()
                .map(|f| {
                    let b = f.bbox.map(i64::from);
                    vec![b[0], b[1], b[2], b[3], f.neighbours as i64]
                })
                .collect(),
        );
        let ours_raw = sorted(
            raw.iter()
                .map(|r| r.iter().map(|&v| v as i64).collect())
                .collect(),
        );
        let Some(e) = files.get(&file) else {
            failures.push(format!("{file}: not in the reference (regenerate it)"));
            continue;
        };
        let cv: Vec<Vec<i64>> = sorted(serde_json::from_value(e["faces"].clone()).unwrap());
        let cv_raw: Vec<Vec<i64>> = sorted(serde_json::from_value(e["raw"].clone()).unwrap());
        faces += cv.len();
        raws += cv_raw.len();
        if ours != cv {
            failures.push(format!(
                "{file}: faces [x, y, w, h, neighbours] ours {ours:?}, OpenCV {cv:?}"
            ));
        }
        if ours_raw != cv_raw {
            let only_cv: Vec<_> = cv_raw.iter().filter(|r| !ours_raw.contains(r)).collect();
            let only_ours: Vec<_> = ours_raw.iter().filter(|r| !cv_raw.contains(r)).collect();
            failures.push(format!(
                "{file}: raw hits {} ours, {} OpenCV; OpenCV only {only_cv:?}; ours only {only_ours:?}",
                ours_raw.len(),
                cv_raw.len()
            ));
        }
    }
    assert_eq!(
        files.len(),
        scenes.len(),
        "reference and scenes differ in number"
    );
    // the reference is not vacuous: faces found and lost across sizes, contrasts and borders
    assert!(
        faces >= 20 && raws >= 200,
        "reference too thin: {faces} faces, {raws} raw hits"
    );
    assert!(
        failures.is_empty(),
        "differences from OpenCV {}:\n{}",
        reference["opencv"],
        failures.join("\n")
    );
}
