//! The bars, asserted on the real screenshot fixtures (shared/fixtures/screens).

use overlord_enrich::{Analysis, Analyzer, AnalyzerConfig, metrics};
use std::path::PathBuf;
use std::sync::OnceLock;

struct Fx {
    truth: serde_json::Value,
    analysis: Analysis,
}

fn screens_dir() -> PathBuf {
    match metrics::fixtures_dir() {
        Ok(d) => d.join("screens"),
        Err(e) => panic!("{e}"),
    }
}

/// Every fixture analysed once (shared by all tests of this binary).
fn all() -> &'static Vec<Fx> {
    static ALL: OnceLock<Vec<Fx>> = OnceLock::new();
    ALL.get_or_init(|| {
        let dir = screens_dir();
        let gt: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("ground_truth.json")).expect("ground truth"),
        )
        .expect("json");
        let mut analyzer = Analyzer::new(AnalyzerConfig::default())
            .expect("analyzer (tesseract-ocr-eng, opencv-data)");
        gt["fixtures"]
            .as_array()
            .expect("fixtures")
            .iter()
            .map(|f| {
                let bytes =
                    std::fs::read(dir.join(f["file"].as_str().unwrap())).expect("fixture file");
                let analysis = analyzer.analyze(&bytes).expect("analysis");
                Fx {
                    truth: f.clone(),
                    analysis,
                }
            })
            .collect()
    })
}

fn name(f: &Fx) -> &str {
    f.truth["file"].as_str().unwrap()
}

fn box_of(v: &serde_json::Value) -> [u32; 4] {
    let a: Vec<u32> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    [a[0], a[1], a[2], a[3]]
}

#[test]
fn blank_detection_is_exact() {
    for f in all() {
        assert_eq!(
            f.analysis.blank,
            f.truth["blank"].as_bool().unwrap(),
            "{}: entropy {} differing {}",
            name(f),
            f.analysis.entropy,
            f.analysis.differing_pixels
        );
        if f.analysis.blank {
            assert!(
                f.analysis.text.is_empty() && f.analysis.faces.is_empty(),
                "blank screens skip heavy steps"
            );
            assert_eq!(f.analysis.tags, vec!["blank".to_string()]);
        }
    }
}

#[test]
fn every_email_found_exactly() {
    for f in all() {
        let mut want: Vec<String> = f.truth["emails"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap().to_string())
            .collect();
        let mut got = f.analysis.emails.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{}: text {:?}", name(f), f.analysis.text);
    }
}

#[test]
fn faces_all_found_and_no_false_boxes() {
    let mut found = 0;
    let mut total = 0;
    for f in all() {
        let want = f.truth["face_count"].as_u64().unwrap() as usize;
        total += want;
        assert_eq!(
            f.analysis.faces.len(),
            want,
            "{}: {:?}",
            name(f),
            f.analysis.faces
        );
        if let Some(boxes) = f.truth["face_boxes_xywh"].as_array() {
            for b in boxes {
                let tb = box_of(b);
                let best = f
                    .analysis
                    .faces
                    .iter()
                    .map(|d| metrics::iou(d.bbox, tb))
                    .fold(0.0, f64::max);
                assert!(
                    best >= 0.5,
                    "{}: truth face {tb:?} best IoU {best:.2}",
                    name(f)
                );
                found += 1;
            }
        }
        if want > 0 {
            assert!(f.analysis.tags.contains(&"has_faces".to_string()));
        }
    }
    assert_eq!((found, total), (13, 13));
}

#[test]
fn logos_on_both_logo_screens_and_nowhere_else() {
    let mut screens = 0;
    for f in all() {
        match f.truth["logo"].as_str() {
            Some(logo) => {
                let tb = box_of(&f.truth["logo_box"]);
                assert_eq!(
                    f.analysis.logos.len(),
                    1,
                    "{}: {:?}",
                    name(f),
                    f.analysis.logos
                );
                let l = &f.analysis.logos[0];
                assert_eq!(l.name, logo);
                assert!(
                    metrics::iou(l.bbox, tb) >= 0.6,
                    "{}: {:?} vs {tb:?}",
                    name(f),
                    l.bbox
                );
                screens += 1;
            }
            None => assert!(
                f.analysis.logos.is_empty(),
                "{}: false logo {:?}",
                name(f),
                f.analysis.logos
            ),
        }
    }
    assert_eq!(screens, 2);
}

#[test]
fn mean_ocr_cer_is_at_most_0_10() {
    let mut cers = Vec::new();
    for f in all() {
        let truth = f.truth["text"].as_str().unwrap();
        if truth.is_empty() {
            continue;
        }
        let c = metrics::cer(&f.analysis.text, truth);
        eprintln!("{}: CER {c:.3}", name(f));
        cers.push(c);
    }
    let mean = cers.iter().sum::<f64>() / cers.len() as f64;
    eprintln!("mean CER {mean:.3} over {} text screens", cers.len());
    assert_eq!(cers.len(), 6);
    assert!(mean <= 0.10, "mean CER {mean:.3}");
}

#[test]
fn words_carry_confidences_and_boxes_inside_the_image() {
    let f = all().iter().find(|f| name(f).starts_with("07_")).unwrap();
    assert!(f.analysis.words.len() >= 20);
    for w in &f.analysis.words {
        assert!((0.0..=100.0).contains(&w.conf));
        assert!(
            w.bbox[0] + w.bbox[2] <= f.analysis.width && w.bbox[1] + w.bbox[3] <= f.analysis.height,
            "{w:?}"
        );
    }
    let alice = f
        .analysis
        .words
        .iter()
        .find(|w| w.text.contains("alice.smith"))
        .expect("alice word");
    // the address is on the second terminal line (y ≈ 72 px)
    assert!((60..90).contains(&alice.bbox[1]), "{alice:?}");
}

#[test]
fn tags_follow_content() {
    let tags = |p: &str| {
        all()
            .iter()
            .find(|f| name(f).starts_with(p))
            .unwrap()
            .analysis
            .tags
            .clone()
    };
    assert!(tags("04_").contains(&"login_prompt".to_string()));
    assert!(tags("15_").contains(&"windows".to_string()));
    assert!(tags("17_").contains(&"desktop".to_string()));
    assert!(tags("07_").contains(&"has_emails".to_string()));
    assert!(
        !tags("14_").contains(&"text".to_string()),
        "a cat photo is not text"
    );
    assert!(!tags("18_").contains(&"blank".to_string()));
}

#[test]
fn near_duplicates_are_close_in_hash_space_and_others_far() {
    let get = |p: &str| {
        all()
            .iter()
            .find(|f| name(f).starts_with(p))
            .unwrap()
            .analysis
            .hashes()
            .unwrap()
    };
    let (a, b) = (get("04_"), get("05_"));
    assert!(overlord_enrich::hamming64(a.phash64, b.phash64) <= 4);
    for f in all() {
        let n = name(f);
        if n.starts_with("04_") || n.starts_with("05_") || f.analysis.blank {
            continue;
        }
        let h = f.analysis.hashes().unwrap();
        assert!(
            overlord_enrich::hamming64(a.phash64, h.phash64) > 10,
            "{n} too close to 04"
        );
    }
}

// ---- the store: serving queries, persistence across restarts, leaks ----

fn id_of(f: &Fx) -> String {
    f.truth["sha256"].as_str().unwrap().to_string()
}

#[test]
fn store_serves_text_tag_face_and_similarity_queries_and_survives_restart() {
    use overlord_enrich::EnrichStore;
    let dir = tempfile::tempdir().unwrap();
    let leak_file = dir.path().join("leaks.csv");
    std::fs::write(
        &leak_file,
        "address,source,date\nBob.Jones@mail.example.org,combo-2019,2019-01-07\nnot-an-address,x,2020\nsomeone@else.example,dump,2021-02-03\n",
    )
    .unwrap();
    let path = dir.path().join("db");
    let id07;
    {
        let store = EnrichStore::open(&path).unwrap();
        let report = store.leaks().import_file(&leak_file).unwrap();
        assert_eq!(report.imported, 2);
        assert_eq!(report.rejected.len(), 1);
        assert_eq!(
            report.rejected[0].0, 3,
            "line numbers are 1-based and name the bad line"
        );
        for f in all() {
            let a = f.analysis.clone();
            let r = store.ingest(&id_of(f), &a).unwrap();
            assert!(r.new);
            if name(f).starts_with("07_") {
                // the lookup is the coordinator's (its `leak` findings); the store only holds the db
                let hit = a
                    .emails
                    .iter()
                    .find_map(|e| store.leaks().lookup_read(e).unwrap())
                    .expect("bob.jones is in the leak file");
                assert_eq!(hit.1[0].source, "combo-2019");
            }
            // tags are computed once, by the analysis, and stored as they are
            assert_eq!(store.get(&id_of(f)).unwrap().unwrap().tags, a.tags);
        }
        // an exact duplicate (same image under another id) short-circuits to the stored ones with
        // the same hashes (04 and 05 differ only by a hostname: their hashes are identical too)
        let f04 = all().iter().find(|f| name(f).starts_with("04_")).unwrap();
        let dup = f04.analysis.clone();
        let r = store.ingest("copy-of-04", &dup).unwrap();
        assert!(r.same_hash.contains(&id_of(f04)), "{r:?}");
        // re-ingesting the same id is idempotent
        let again = f04.analysis.clone();
        assert!(!store.ingest(&id_of(f04), &again).unwrap().new);
        id07 = id_of(all().iter().find(|f| name(f).starts_with("07_")).unwrap());
        store.flush().unwrap();
    }
    let store = EnrichStore::open(&path).unwrap();
    assert_eq!(store.len(), all().len() + 1);
    // by tag / faces
    let faces = store.with_faces(1, 10).unwrap();
    assert_eq!(faces.len(), 2);
    assert_eq!(faces[0].1, 12);
    let blank = store.by_tag("blank", 10).unwrap();
    assert_eq!(blank.len(), 2);
    // similar images of a stored id and of an uploaded file
    let f04 = all().iter().find(|f| name(f).starts_with("04_")).unwrap();
    let f05 = all().iter().find(|f| name(f).starts_with("05_")).unwrap();
    let sim = store.similar_to_id(&id_of(f04), 8).unwrap();
    let ids: Vec<&str> = sim.iter().map(|m| m.id.as_str()).collect();
    assert!(
        ids.contains(&id_of(f05).as_str()) && ids.contains(&"copy-of-04"),
        "{sim:?}"
    );
    let bytes = std::fs::read(screens_dir().join("05_console_login_web02.png")).unwrap();
    let up = store
        .similar_to_image(&bytes, 4, &Default::default())
        .unwrap();
    assert!(
        up.iter().any(|m| m.id == id_of(f05) && m.distance == 0),
        "{up:?}"
    );
    // the stored analysis comes back whole
    let a = store.get(&id07).unwrap().unwrap();
    assert_eq!(a.emails.len(), 3);
    assert!(store.get("nope").unwrap().is_none());
    assert!(matches!(
        store.similar_to_id("nope", 4),
        Err(overlord_enrich::EnrichError::UnknownImage(_))
    ));
}
