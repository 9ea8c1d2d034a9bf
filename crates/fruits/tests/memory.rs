//! Memory stays bounded on hostile input: huge photos, huge files, images whose resize alone
//! would take gigabytes. One test in its own binary, so that the peak RSS of waited-for
//! children (`getrusage(RUSAGE_CHILDREN)`) is that of the one `fruits` run below.

use std::path::Path;

/// Peak resident memory, in MiB, of the children this process has waited for.
fn children_peak_mib() -> u64 {
    // SAFETY: `usage` is a valid, writable `rusage` for the call to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_CHILDREN with a valid pointer to `usage`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0);
    usage.ru_maxrss as u64 / 1024 // KiB on Linux
}

/// A PNG header claiming `width` x `height` (refused before any decoding).
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    b.extend_from_slice(&width.to_be_bytes());
    b.extend_from_slice(&height.to_be_bytes());
    b.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    b
}

/// A real grey PNG of `width` x 1 pixels.
fn wide_png(width: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, width, 1);
    e.set_color(png::ColorType::Grayscale);
    e.set_compression(png::Compression::Fast);
    let mut w = e.write_header().unwrap();
    w.write_image_data(&vec![90u8; width as usize]).unwrap();
    drop(w);
    out
}

/// A `w` x `h` photo-like JPEG (smooth gradients and a disc).
fn big_jpeg(w: usize, h: usize, seed: usize) -> Vec<u8> {
    let mut px = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let d = ((x as i64 - w as i64 / 2).pow(2) + (y as i64 - h as i64 / 2).pow(2)) as f64;
            let inside = d.sqrt() < (h as f64) * 0.3;
            let g = ((x * 255) / w) as u8;
            px.extend_from_slice(&if inside {
                [200, (seed * 40) as u8, g]
            } else {
                [g, ((y * 255) / h) as u8, 230]
            });
        }
    }
    fruits_testkit::encode_jpeg(w, h, &px)
}

#[test]
fn peak_memory_stays_under_1_gib_on_an_input_of_oversized_images_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("photos");
    fruits_testkit::write_photo_tree(&input, 2, 2);
    let big = input.join("Big");
    std::fs::create_dir_all(&big).unwrap();
    // Just under the default pixel limit (40 M): decoded, at ~120 MB of RGB each.
    for i in 0..4 {
        std::fs::write(big.join(format!("photo-{i}.jpg")), big_jpeg(7200, 5400, i)).unwrap();
    }
    // Just under the default file limit (32 MiB): read whole, then refused by the decoder.
    let junk: Vec<u8> = [0xFF, 0xD8, 0xFF, 0xE0]
        .into_iter()
        .chain((0..(31u32 << 20)).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8))
        .collect();
    for i in 0..6 {
        std::fs::write(big.join(format!("junk-{i}.jpg")), &junk).unwrap();
    }
    // Over the limits: never read, or never decoded.
    let mut huge = junk.clone();
    huge.resize(40 << 20, 7);
    std::fs::write(big.join("huge-file.jpg"), &huge).unwrap();
    std::fs::write(big.join("bomb.png"), png_header(30_000, 30_000)).unwrap();
    std::fs::write(big.join("wide.png"), wide_png(30_000_000)).unwrap();
    drop((junk, huge));

    let out = dir.path().join("out");
    let (stdout, _) = fruits_testkit::run_extract(
        env!("CARGO_BIN_EXE_fruits"),
        &input,
        &out,
        &["--pca-k", "2"],
    );
    let peak = children_peak_mib();
    eprintln!("peak RSS of fruits extract: {peak} MiB");
    assert!(stdout.contains("wrote 8 rows"), "{stdout}");
    let errors = std::fs::read_to_string(out.join("_errors.json")).unwrap();
    for why in [
        "huge-file.jpg",
        "exceeds the 32 MiB limit (--max-file-mb)",
        "bomb.png",
        "30000x30000 pixels exceeds the 40000000-pixel limit (--max-pixels)",
        "wide.png",
        "junk-5.jpg",
    ] {
        assert!(errors.contains(why), "{why} not in {errors}");
    }
    assert!(
        peak < 1024,
        "peak RSS {peak} MiB on oversized input (limit 1 GiB)"
    );
    assert!(Path::new(&out).join("_SUCCESS").is_file());
}
