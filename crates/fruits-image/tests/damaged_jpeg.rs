//! Damaged JPEGs are judged as Pillow 10.4 judges them: on a seeded corpus of 3,000 mutated
//! copies of Fruits-360 test photos, the same files are read (with the same 224x224 pixels)
//! and the same ones refused. `tests/pillow/damaged_jpeg.py` wrote Pillow's answers into
//! `tests/pillow/damaged-jpeg.json` from the corpus this test makes (write it to a folder with
//! `FRUITS_WRITE_CORPUS=DIR`).

use std::collections::BTreeMap;

/// Pixels of every 45th test photo, damaged in 3,000 ways.
fn corpus(shared: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let photos = fruits_testkit::jpegs_below(&shared.join("fruits-360/Test"));
    let sources: Vec<Vec<u8>> = photos
        .iter()
        .step_by(45)
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    fruits_testkit::damaged_jpegs(&sources, 3000, 2026)
}

/// What fruits makes of one file: the fingerprint of its 224x224 pixels, or why not.
fn fruits_reads(bytes: &[u8]) -> Result<String, String> {
    let img = fruits_image::decode(bytes).map_err(|e| e.to_string())?;
    let resized = fruits_image::resize_bicubic(&img, 224, 224);
    Ok(fruits_testkit::crc32_hex(&resized.pixels))
}

#[test]
fn damaged_jpegs_are_read_or_refused_as_pillow_does() {
    let Some(shared) = fruits_testkit::shared("fruits-360/Test") else {
        return;
    };
    let files = corpus(&shared);
    if let Some(dir) = std::env::var_os("FRUITS_WRITE_CORPUS") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let expected: BTreeMap<String, Option<String>> =
        serde_json::from_str(include_str!("pillow/damaged-jpeg.json")).unwrap();
    assert_eq!(
        expected.len(),
        files.len(),
        "the corpus changed: rerun the script"
    );
    let (mut both, mut only_pillow, mut only_fruits, mut pixels_differ) =
        (0, Vec::new(), Vec::new(), Vec::new());
    for (name, bytes) in &files {
        let pillow = expected.get(name).expect("a file of the corpus");
        match (pillow, fruits_reads(bytes)) {
            (Some(p), Ok(f)) if *p == f => both += 1,
            (Some(_), Ok(_)) => pixels_differ.push(name.clone()),
            (Some(_), Err(e)) => only_pillow.push(format!("{name} ({e})")),
            (None, Ok(_)) => only_fruits.push(name.clone()),
            (None, Err(_)) => {}
        }
    }
    eprintln!(
        "read by both: {both}; only by Pillow: {}; only by fruits: {}; pixels differ: {}",
        only_pillow.len(),
        only_fruits.len(),
        pixels_differ.len()
    );
    assert!(
        only_pillow.is_empty() && only_fruits.is_empty() && pixels_differ.is_empty(),
        "only Pillow reads {only_pillow:?}; only fruits reads {only_fruits:?}; pixels differ in {pixels_differ:?}"
    );
}
