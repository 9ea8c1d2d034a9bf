//! From features to a fruit, as a user runs it: `train` on `extract` outputs, `predict` and
//! `serve` (a real process on a real socket) giving exactly the head's probabilities, every
//! bad request its status code, bursts and shutdowns without a lost answer.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use fruits_classify::Classifier;

mod browser;
mod run;

use run::{fruits, ok, text};

/// `extract` of `photos` with `weights` into `<root>/features`, then `train` into
/// `<root>/model`; returns both folders and what `train` printed.
fn extract_and_train(photos: &Path, weights: &Path, root: &Path) -> (PathBuf, PathBuf, String) {
    let (features, model) = (root.join("features"), root.join("model"));
    let path = |p: &Path| p.to_str().unwrap().to_string();
    ok(fruits(&[
        "extract",
        "--input",
        &path(photos),
        "--output",
        &path(&features),
        "--weights",
        &path(weights),
        "--threads",
        "2",
    ]));
    let out = ok(fruits(&[
        "train",
        "--features",
        &path(&features),
        "--output",
        &path(&model),
    ]));
    (features, model, out)
}

/// A trained model on a fixture set: 5 classes of 70 synthetic photos, synthetic weights.
struct Trained {
    photos: PathBuf,
    features: PathBuf,
    model: PathBuf,
    weights: PathBuf,
    train_output: String,
}

/// The fixture model, made once per test binary.
fn trained() -> &'static Trained {
    static TRAINED: OnceLock<Trained> = OnceLock::new();
    TRAINED.get_or_init(|| {
        let root =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("classify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (photos, weights) = (root.join("photos"), root.join("weights"));
        fruits_testkit::write_photo_tree(&photos, 5, 70);
        fruits_testkit::synthetic_weights(&weights, 5);
        let (features, model, train_output) = extract_and_train(&photos, &weights, &root);
        Trained {
            photos,
            features,
            model,
            weights,
            train_output,
        }
    })
}

fn classifier(model: &Path) -> Classifier {
    Classifier::from_files(|name| std::fs::read(model.join(name))).unwrap()
}

/// A `fruits serve` process; killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(model: &Path, weights: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fruits"))
            .args([
                "serve",
                "--model",
                model.to_str().unwrap(),
                "--weights",
                weights.to_str().unwrap(),
            ])
            .args(["--bind", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start fruits serve");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .trim_end_matches('/')
            .to_string();
        Server { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// `(status, body)` of a POST.
fn post(url: &str, content_type: &str, body: &[u8]) -> (u16, String, Option<String>) {
    let mut r = agent()
        .post(url)
        .header("Content-Type", content_type)
        .send(body)
        .expect("a response");
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap_or("").to_string());
    (
        r.status().as_u16(),
        r.body_mut().read_to_string().unwrap_or_default(),
        retry,
    )
}

fn get(url: &str) -> (u16, String) {
    let mut r = agent().get(url).call().expect("a response");
    (
        r.status().as_u16(),
        r.body_mut().read_to_string().unwrap_or_default(),
    )
}

fn predictions(json: &serde_json::Value) -> Vec<(String, f64)> {
    json["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["label"].as_str().unwrap().to_string(),
                p["probability"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// What `train` promises on the fixture on every CPU. Its synthetic weights make features
/// barely above chance, whose accuracy moves with the last bits another kernel set gives
/// (0.31 on AVX-512, 0.25 on AVX2; chance is 0.2), so no floor here (the real weights get one
/// on Fruits-360 below): the validation figures are the saved head's own on the held-out
/// photos of `validation.json`, and the fit lowered the training photos' loss below that of
/// a head of zeros (ln 5: it gives each of the 5 classes 1/5).
fn assert_fixture_training_holds(
    c: &Classifier,
    rows: &[fruits_testkit::Row],
    model: &Path,
    train_output: &str,
) {
    let held: std::collections::BTreeSet<String> =
        serde_json::from_slice(&std::fs::read(model.join("validation.json")).unwrap()).unwrap();
    let (validation, train): (Vec<_>, Vec<_>) = rows.iter().partition(|r| held.contains(&r.0));
    assert_eq!(
        validation.len(),
        held.len(),
        "every held-out photo is a row"
    );
    assert_eq!(c.info.validation_rows, validation.len());
    assert_eq!(c.info.train_rows, train.len());
    let class = |label: &str| c.classes.iter().position(|k| k == label).unwrap();
    let probabilities = |rows: &[&fruits_testkit::Row]| {
        let x: Vec<f32> = rows.iter().flat_map(|r| r.2.iter().copied()).collect();
        c.probabilities(&x)
    };
    let k = c.classes.len();
    let p = probabilities(&validation);
    let right = validation
        .iter()
        .zip(p.chunks_exact(k))
        .filter(|(r, p)| fruits_classify::metrics::ranked(p)[0] == class(&r.1))
        .count();
    let top1 = right as f64 / validation.len() as f64;
    println!("fixture validation top-1: {top1}");
    assert_eq!(top1, c.info.validation_top1, "{train_output}");
    let p = probabilities(&train);
    let loss = train
        .iter()
        .zip(p.chunks_exact(k))
        .map(|(r, p)| -p[class(&r.1)].ln())
        .sum::<f64>()
        / train.len() as f64;
    println!(
        "fixture training loss: {loss:.4} (a head of zeros: {:.4})",
        (k as f64).ln()
    );
    assert_eq!(k, 5);
    assert!(loss < 0.99 * (k as f64).ln(), "loss {loss}: {train_output}");
}

#[test]
fn train_predict_and_serve_give_exactly_the_heads_probabilities() {
    let t = trained();
    let c = classifier(&t.model);
    let rows = fruits_testkit::read_rows(&t.features);
    assert_fixture_training_holds(&c, &rows, &t.model, &t.train_output);
    for file in [
        "model.json",
        "classes.json",
        "metrics.json",
        "golden.json",
        "head/weights.npy",
        "_SUCCESS",
    ] {
        assert!(t.model.join(file).is_file(), "{file}");
    }
    let success: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.features.join("_SUCCESS")).unwrap()).unwrap();
    assert_eq!(
        success["weights"].as_str(),
        Some(c.info.weights_hash.as_str())
    );

    // The head on extract's own features of every photo.
    let mut want = std::collections::BTreeMap::new();
    for r in &rows {
        let top = c.top(&r.2, 3).remove(0);
        want.insert(
            r.0.clone(),
            top.into_iter()
                .map(|p| (p.label, p.probability))
                .collect::<Vec<_>>(),
        );
    }

    // predict --json: one line per photo, the same probabilities, to the last bit.
    let out = ok(fruits(&[
        "predict",
        "--model",
        t.model.to_str().unwrap(),
        "--weights",
        t.weights.to_str().unwrap(),
        "--json",
        "--top",
        "3",
        t.photos.to_str().unwrap(),
    ]));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), rows.len());
    for line in &lines {
        let path = line["path"].as_str().unwrap();
        assert_eq!(&predictions(line), &want[path], "{path}");
    }

    // serve: the same, photo by photo (raw bytes and a multipart form).
    let server = Server::start(&t.model, &t.weights, &[]);
    for (i, r) in rows.iter().enumerate().step_by(37) {
        let file = r.0.strip_prefix("file://").unwrap();
        let bytes = std::fs::read(file).unwrap();
        let (status, body, _) = if i % 2 == 0 {
            post(
                &format!("{}/v1/predict?top=3", server.url),
                "image/jpeg",
                &bytes,
            )
        } else {
            let boundary = "fruits-test-boundary";
            let mut form = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").into_bytes();
            form.extend_from_slice(&bytes);
            form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
            post(
                &format!("{}/v1/predict?top=3", server.url),
                &format!("multipart/form-data; boundary={boundary}"),
                &form,
            )
        };
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(&predictions(&json), &want[&r.0], "{}", r.0);
    }

    // The golden examples give, through the service, the probabilities they promise.
    let golden: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(t.model.join("golden.json")).unwrap()).unwrap();
    assert!(!golden.is_empty());
    for g in &golden {
        let bytes = std::fs::read(t.model.join(g["file"].as_str().unwrap())).unwrap();
        let (status, body, _) = post(
            &format!("{}/v1/predict?top=5", server.url),
            "image/jpeg",
            &bytes,
        );
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(predictions(&json), predictions(g), "{}", g["file"]);
    }

    // Other weights than the classifier's are refused in one line.
    let other = t.weights.with_file_name("other-weights");
    fruits_testkit::synthetic_weights(&other, 99);
    let out = fruits(&[
        "predict",
        "--model",
        t.model.to_str().unwrap(),
        "--weights",
        other.to_str().unwrap(),
        t.photos.to_str().unwrap(),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("not the ones the classifier"), "{err}");
}

#[test]
fn serve_answers_bad_input_with_its_status_code_and_stays_up() {
    let t = trained();
    let server = Server::start(&t.model, &t.weights, &["--max-body", "4000"]);
    let url = format!("{}/v1/predict", server.url);
    let photo = std::fs::read(t.photos.join("Class 1/r_3_100.jpg")).unwrap();
    let small = {
        let px = vec![200u8; 20 * 20 * 3];
        fruits_testkit::encode_jpeg(20, 20, &px)
    };
    // A PNG header that claims 60,000 x 60,000 pixels: refused before any decoding.
    let mut bomb = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    bomb.extend_from_slice(&60_000u32.to_be_bytes());
    bomb.extend_from_slice(&60_000u32.to_be_bytes());
    bomb.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("text/plain", "", b"hello".to_vec(), 415, "image/jpeg"),
        ("", "", small.clone(), 415, "image/jpeg"),
        (
            "image/jpeg",
            "",
            b"not a jpeg at all".to_vec(),
            400,
            "not a readable image",
        ),
        ("image/jpeg", "", Vec::new(), 400, "empty"),
        ("image/jpeg", "", photo.clone(), 413, "4000 bytes"),
        ("image/png", "", bomb, 400, "pixel limit"),
        ("image/jpeg", "?top=0", small.clone(), 400, "top"),
        ("image/jpeg", "?top=x", small.clone(), 400, "top"),
        (
            "multipart/form-data; boundary=b",
            "",
            b"--b\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--b--\r\n".to_vec(),
            400,
            "no field",
        ),
        (
            "multipart/form-data",
            "",
            b"garbage".to_vec(),
            400,
            "multipart",
        ),
    ];
    for (kind, query, body, status, says) in cases {
        let (got, text, _) = post(&format!("{url}{query}"), kind, &body);
        assert_eq!(got, status, "{kind} {query}: {text}");
        let json: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        let error = json["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(says) && !error.contains('\n'),
            "{kind}: {error}"
        );
    }
    assert_eq!(get(&format!("{}/nowhere", server.url)).0, 404);
    // Still up, and still right.
    assert_eq!(get(&format!("{}/healthz", server.url)).0, 200);
    assert_eq!(get(&format!("{}/readyz", server.url)).0, 200);
    let (status, body, _) = post(&url, "image/jpeg", &small);
    assert_eq!(status, 200, "{body}");
    let (status, metrics) = get(&format!("{}/metrics", server.url));
    assert_eq!(status, 200);
    for line in [
        "fruits_requests_total{route=\"/v1/predict\",status=\"415\"} 2",
        "fruits_requests_total{route=\"/v1/predict\",status=\"413\"} 1",
        "fruits_predict_seconds_count",
        "fruits_queue_depth 0",
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }
    let (status, model) = get(&format!("{}/v1/model", server.url));
    assert_eq!(status, 200);
    assert!(model.contains("\"Class 4\""), "{model}");
    let (status, page) = get(&format!("{}/", server.url));
    assert_eq!(status, 200);
    assert!(
        page.contains("capture=\"environment\"") && !page.contains("https://"),
        "the page"
    );
}

#[test]
fn a_burst_beyond_the_queue_gets_only_200s_and_503s() {
    let t = trained();
    let server = Server::start(&t.model, &t.weights, &["--workers", "1", "--queue", "2"]);
    let url = format!("{}/v1/predict", server.url);
    let photo = std::fs::read(t.photos.join("Class 2/r_5_100.jpg")).unwrap();
    let answers: Vec<(u16, Option<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..48)
            .map(|_| {
                s.spawn(|| {
                    let (status, _, retry) = post(&url, "image/jpeg", &photo);
                    (status, retry)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let served = answers.iter().filter(|a| a.0 == 200).count();
    let busy: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    println!(
        "burst of 48 on a queue of 2: {served} answered, {} told to retry",
        busy.len()
    );
    assert_eq!(served + busy.len(), 48, "{answers:?}");
    assert!(served >= 1 && !busy.is_empty(), "{answers:?}");
    assert!(
        busy.iter().all(|a| a.1.as_deref() == Some("1")),
        "Retry-After on every 503"
    );
    assert_eq!(get(&format!("{}/healthz", server.url)).0, 200);
}

#[test]
fn sigterm_answers_every_accepted_request_then_exits_0() {
    let t = trained();
    let mut server = Server::start(&t.model, &t.weights, &["--workers", "1", "--queue", "64"]);
    let url = format!("{}/v1/predict", server.url);
    let photo = std::fs::read(t.photos.join("Class 3/r_9_100.jpg")).unwrap();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|_| s.spawn(|| post(&url, "image/jpeg", &photo).0))
            .collect();
        // Every request is on its way (one worker, so most still wait in the queue).
        std::thread::sleep(Duration::from_millis(300));
        fruits_testkit::signal(&server.child, libc::SIGTERM);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    server
        .child
        .stdout
        .as_mut()
        .unwrap()
        .read_to_string(&mut rest)
        .unwrap();
    assert!(rest.contains("stopped"), "{rest}");
}

/// Real photos, real weights: `extract` on all of `../shared/fruits-360/Test`, then `train`
/// (made once per binary): `(photos, model, weights, train's output)`.
fn real_model() -> Option<&'static (PathBuf, PathBuf, PathBuf, String)> {
    static MODEL: OnceLock<Option<(PathBuf, PathBuf, PathBuf, String)>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let shared = fruits_testkit::shared("fruits-360/Test")?;
            let root =
                Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("real-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            let photos = shared.join("fruits-360/Test");
            let weights = shared.join("models/mobilenet_v2_1.0_224");
            let (_, model, out) = extract_and_train(&photos, &weights, &root);
            Some((photos, model, weights, out))
        })
        .as_ref()
}

#[test]
fn trains_on_fruits_360_test_above_the_measured_floor() {
    let Some((_, model, _, out)) = real_model() else {
        return;
    };
    println!("{out}");
    let c = classifier(model);
    assert_eq!(c.classes.len(), 81);
    // Measured: top-1 0.9693, top-5 0.9956 on the 3,644 held-out photos (seed 0). The floors
    // leave room for another CPU's last bits, not for a worse model.
    assert!(c.info.validation_top1 >= 0.96, "{out}");
    assert!(c.info.validation_top5 >= 0.99, "{out}");
    assert!(c.info.validation_rows > 2000, "{out}");
}

#[test]
fn the_page_names_the_fruit_in_a_photo_in_chromium() {
    let Some((photos, model, weights, _)) = real_model() else {
        return;
    };
    let Some(browser) = browser::Browser::start() else {
        return;
    };
    let server = Server::start(model, weights, &[]);
    let photo = std::fs::read_dir(photos.join("Kiwi"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jpg"))
        .unwrap();
    let photo = photo.canonicalize().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async {
        use fantoccini::Locator;
        let c = browser.session(430, 1100).await;
        c.goto(&format!("{}/", server.url)).await?;
        let input = c.find(Locator::Css("input#photo")).await?;
        input.send_keys(&photo.display().to_string()).await?;
        let first = c
            .wait()
            .at_most(Duration::from_secs(60))
            .for_element(Locator::Css("#results li .label"))
            .await?;
        let label = first.text().await?;
        let status = c.find(Locator::Id("status")).await?.text().await?;
        let bars = c.find_all(Locator::Css("#results li")).await?.len();
        // The footer is filled from /v1/model.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = c.screenshot().await?;
        let console = browser::log(&c, "browser").await;
        let requests = browser::log(&c, "performance").await;
        c.close().await?;
        Ok::<_, fantoccini::error::CmdError>((label, status, bars, png, console, requests))
    });
    let (label, status, bars, png, console, requests) = result.expect("the browser session");
    assert_eq!(browser::console_errors(&console), Vec::<String>::new());
    // Every request from the page's own on goes to the server (or is a photo in memory).
    let requests = browser::requests(&requests);
    let page = format!("{}/", server.url);
    let from = requests
        .iter()
        .position(|u| *u == page)
        .unwrap_or_else(|| panic!("the page itself among {requests:?}"));
    let elsewhere: Vec<&String> = requests[from..]
        .iter()
        .filter(|u| {
            !u.starts_with(&server.url) && !u.starts_with("data:") && !u.starts_with("blob:")
        })
        .collect();
    assert!(
        elsewhere.is_empty(),
        "requests beyond the server: {elsewhere:?}"
    );
    assert!(
        requests[from..].iter().any(|u| u.contains("/v1/predict")),
        "{requests:?}"
    );
    assert_eq!(label, "Kiwi", "the page's first label");
    assert!(status.contains("Kiwi"), "{status}");
    assert_eq!(bars, 5, "the top 5 as bars");
    assert!(png.starts_with(b"\x89PNG"), "a screenshot");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-page.png");
    std::fs::write(&shot, &png).unwrap();
    if let Ok(to) = std::env::var("FRUITS_SCREENSHOT") {
        std::fs::write(to, &png).unwrap();
    }
    println!("screenshot: {}", shot.display());
}
