//! The run report and the data checks, as a user meets them: `extract` writes
//! `_report.html` into its result, `fruits report` rewrites it or prints JSON, the checks find
//! what was planted in real photos (real weights), and chromium shows the page with no
//! console error and no network request.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod browser;
mod run;

use run::{fruits, ok};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// What the fixture planted, by file URI.
struct Planted {
    /// A photo and its byte-for-byte copy.
    exact: [String; 2],
    /// A photo and a re-encoded copy (other bytes, the same scene).
    near: [String; 2],
    /// Photos filed under the wrong class: (photo, its true class).
    swapped: [(String, &'static str); 2],
    /// Photos of the test set that are copies of training photos: (test, train).
    leaked: Vec<(String, String)>,
}

struct Fixture {
    train: PathBuf,
    test: PathBuf,
    planted: Planted,
}

const CLASSES: [&str; 4] = ["Kiwi", "Banana", "Apple Golden 1", "Avocado"];
const OTHER_CLASSES: [&str; 2] = ["Lemon", "Plum"];
const PER_CLASS: usize = 30;

fn uri(p: &Path) -> String {
    format!("file://{}", p.canonicalize().unwrap().display())
}

/// The first `n` photos of a class folder, by name.
fn photos(dir: &Path, n: usize) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    all.sort();
    all.truncate(n);
    all
}

/// Real photos of 4 classes (30 each) with planted duplicates and swapped labels, extracted
/// with the real weights; and a "test" set of 2 other classes plus 3 copies of training
/// photos, extracted too. Made once per test binary.
fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            let shared = fruits_testkit::shared("fruits-360/Test")?;
            let source = shared.join("fruits-360/Test");
            let weights = shared.join("models/mobilenet_v2_1.0_224");
            let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("report-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            let (train_photos, test_photos) = (root.join("train"), root.join("test"));
            for class in CLASSES {
                std::fs::create_dir_all(train_photos.join(class)).unwrap();
                for p in photos(&source.join(class), PER_CLASS) {
                    std::fs::copy(&p, train_photos.join(class).join(p.file_name().unwrap()))
                        .unwrap();
                }
            }
            let file =
                |class: &str, i: usize| photos(&train_photos.join(class), PER_CLASS)[i].clone();
            // An exact copy.
            let original = file("Kiwi", 0);
            let copy = train_photos.join("Kiwi/copy.jpg");
            std::fs::copy(&original, &copy).unwrap();
            // A re-encoded copy: decoded and encoded again at quality 95.
            let near = file("Banana", 3);
            let img = fruits_image::decode(&std::fs::read(&near).unwrap()).unwrap();
            let again = train_photos.join("Banana/re-encoded.jpg");
            std::fs::write(
                &again,
                fruits_testkit::encode_jpeg(img.width, img.height, &img.pixels),
            )
            .unwrap();
            // Two photos swapped between classes.
            let (kiwi, banana) = (file("Kiwi", 10), file("Banana", 10));
            let kiwi_as_banana = train_photos.join("Banana/kiwi.jpg");
            let banana_as_kiwi = train_photos.join("Kiwi/banana.jpg");
            std::fs::rename(&kiwi, &kiwi_as_banana).unwrap();
            std::fs::rename(&banana, &banana_as_kiwi).unwrap();
            // The test set: other fruit, and three photos of the training set.
            for class in OTHER_CLASSES {
                std::fs::create_dir_all(test_photos.join(class)).unwrap();
                for p in photos(&source.join(class), 10) {
                    std::fs::copy(&p, test_photos.join(class).join(p.file_name().unwrap()))
                        .unwrap();
                }
            }
            let mut leaked = Vec::new();
            for (class, i) in [("Kiwi", 20), ("Apple Golden 1", 5), ("Avocado", 7)] {
                let from = file(class, i);
                std::fs::create_dir_all(test_photos.join(class)).unwrap();
                let to = test_photos.join(class).join(from.file_name().unwrap());
                std::fs::copy(&from, &to).unwrap();
                leaked.push((uri(&to), uri(&from)));
            }
            leaked.sort();
            let (train, test) = (root.join("train-features"), root.join("test-features"));
            for (photos, out) in [(&train_photos, &train), (&test_photos, &test)] {
                ok(fruits(&[
                    "extract",
                    "--input",
                    s(photos),
                    "--output",
                    s(out),
                    "--weights",
                    s(&weights),
                    "--threads",
                    "2",
                ]));
            }
            Some(Fixture {
                train,
                test,
                planted: Planted {
                    exact: [uri(&original), uri(&copy)],
                    near: [uri(&near), uri(&again)],
                    swapped: [
                        (uri(&kiwi_as_banana), "Kiwi"),
                        (uri(&banana_as_kiwi), "Banana"),
                    ],
                    leaked,
                },
            })
        })
        .as_ref()
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(fruits(args))).expect("JSON on stdout")
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_checks_find_everything_planted_in_real_photos() {
    let Some(f) = fixture() else {
        return;
    };
    let r = json(&["report", s(&f.train), "--json"]);
    let c = &r["checks"];
    let p = &f.planted;
    assert_eq!(c["photos"], 4 * PER_CLASS + 2, "{c}");
    assert_eq!(c["checked"], c["photos"]);
    // Exact duplicates: the planted copy, and nothing else.
    let exact: Vec<Vec<String>> = c["exact_duplicates"]
        .as_array()
        .unwrap()
        .iter()
        .map(strings)
        .collect();
    let mut want = p.exact.to_vec();
    want.sort();
    assert_eq!(exact, vec![want]);
    // The re-encoded copy is a near-duplicate of its original, in one group with it.
    let groups: Vec<Vec<String>> = c["near_duplicates"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(strings)
        .collect();
    for pair in [&p.near, &p.exact] {
        assert!(
            groups.iter().any(|g| pair.iter().all(|x| g.contains(x))),
            "{pair:?} in one near-duplicate group"
        );
    }
    // Both swapped photos are suspected, with their true class suggested.
    let suspects: Vec<(String, String, String)> = c["mislabels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let f = |k: &str| m[k].as_str().unwrap().to_string();
            (f("path"), f("label"), f("suggested"))
        })
        .collect();
    for (photo, truth) in &p.swapped {
        assert!(
            suspects.iter().any(|(path, label, suggested)| path == photo
                && suggested == truth
                && label != truth),
            "{photo} suspected as {truth}: {suspects:?}"
        );
    }
    // A near-duplicate pair across labels is a mislabel's sign, not a false alarm: the only
    // ones here involve the swapped photos.
    for pair in c["near_duplicates"]["cross_label"].as_array().unwrap() {
        let (a, b) = (pair["a"].as_str().unwrap(), pair["b"].as_str().unwrap());
        assert!(
            p.swapped.iter().any(|(x, _)| x == a || x == b),
            "unexpected cross-label pair {pair}"
        );
    }
    // The figures of the run are those of `_SUCCESS`.
    assert_eq!(r["run"]["rows"], 4 * PER_CLASS + 2);
    assert_eq!(r["classes"].as_array().unwrap().len(), CLASSES.len());
    assert!(r["explained_variance_ratio"].as_array().unwrap().len() == 1280);
}

#[test]
fn leakage_names_every_planted_overlap_and_nothing_else() {
    let Some(f) = fixture() else {
        return;
    };
    let r = json(&["report", s(&f.train), "--compare", s(&f.test), "--json"]);
    let l = &r["checks"]["leakage"];
    let mut pairs: Vec<(String, String)> = l["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["test"].as_str().unwrap().to_string(),
                p["train"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    pairs.sort();
    assert_eq!(pairs, f.planted.leaked);
    assert_eq!(l["photos"], 23);
    assert_eq!(l["leaking"], 3);
    assert!((l["share"].as_f64().unwrap() - 3.0 / 23.0).abs() < 1e-12);
}

#[test]
fn extract_publishes_the_report_with_its_result_and_report_rewrites_it() {
    let Some(f) = fixture() else {
        return;
    };
    let page = f.train.join("_report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    // Published with the result: listed in its commit.
    let success: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.train.join("_SUCCESS")).unwrap()).unwrap();
    assert!(strings(&success["commit"]["objects"]).contains(&"_report.html".to_string()));
    assert!(success["seconds"]["report"].as_f64().unwrap() > 0.0);
    for section in [
        "The run",
        "Photos per class",
        "Explained variance",
        "first two components",
        "Data checks",
        "Exact duplicates",
        "Suspected mislabels",
    ] {
        assert!(html.contains(section), "{section}");
    }
    assert!(!html.contains("<script") && !html.contains("src=\"http"));
    assert!(html.matches("<svg").count() >= 3);
    assert!(html.matches("data:image/jpeg;base64,").count() >= CLASSES.len());
    // `fruits report` writes it again, here with the leakage section: the photos of the
    // training set with a near-duplicate in the test set. (The test set's page: the browser
    // test reads the training set's.)
    let page = f.test.join("_report.html");
    std::fs::remove_file(&page).unwrap();
    let out = ok(fruits(&["report", s(&f.test), "--compare", s(&f.train)]));
    // The 3 copies and their neighbouring frames in the training set.
    assert!(out.contains(" of 122 photos"), "{out}");
    assert!(std::fs::read_to_string(&page)
        .unwrap()
        .contains("Leaking photos"));
}

#[test]
fn a_path_that_is_not_a_result_is_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = fruits(&["report", s(dir.path())]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is not a complete fruits result"), "{err}");
}

#[test]
fn chromium_shows_the_report_with_no_console_error_and_no_request() {
    let Some(f) = fixture() else {
        return;
    };
    let Some(browser) = browser::Browser::start() else {
        return;
    };
    let page = format!("file://{}", s(&f.train.join("_report.html")));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (png, console, requests, shown) = rt
        .block_on(async {
            let c = browser.session(1000, 2000).await;
            c.goto(&page).await?;
            let shown = c
                .execute(
                    "return [document.querySelectorAll('svg').length, \
                     Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length, \
                     document.images.length]",
                    vec![],
                )
                .await?;
            let mut png = vec![c.screenshot().await?];
            c.execute("document.getElementById('checks').scrollIntoView()", vec![])
                .await?;
            png.push(c.screenshot().await?);
            let console = browser::log(&c, "browser").await;
            let requests = browser::log(&c, "performance").await;
            c.close().await?;
            Ok::<_, fantoccini::error::CmdError>((png, console, requests, shown))
        })
        .expect("the browser session");
    assert_eq!(browser::console_errors(&console), Vec::<String>::new());
    // From the page's own request on (before it, the browser's start page loads).
    let requests = browser::requests(&requests);
    let from = requests
        .iter()
        .position(|u| *u == page)
        .unwrap_or_else(|| panic!("the page itself among {requests:?}"));
    let elsewhere: Vec<&String> = requests[from + 1..]
        .iter()
        .filter(|u| !u.starts_with("data:"))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "requests beyond the page: {elsewhere:?}"
    );
    let shown = shown.as_array().unwrap();
    assert!(shown[0].as_u64().unwrap() >= 3, "charts: {shown:?}");
    assert_eq!(shown[1], shown[2], "every thumbnail decodes: {shown:?}");
    // The top of the page and its data checks; FRUITS_REPORT_SCREENSHOT=docs/report keeps
    // them as docs/report.png and docs/report-checks.png (the README's).
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-page");
    let stem = std::env::var("FRUITS_REPORT_SCREENSHOT").unwrap_or(tmp.display().to_string());
    for (png, suffix) in png.iter().zip(["", "-checks"]) {
        assert!(png.starts_with(b"\x89PNG"));
        std::fs::write(format!("{stem}{suffix}.png"), png).unwrap();
    }
}
