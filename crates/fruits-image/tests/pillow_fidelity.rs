//! Decode + resize against Pillow's own output on real Fruits-360 photos.

use fruits_image::{decode, resize_bicubic, MODEL_SIDE};

#[test]
fn resized_pixels_equal_pillow_on_sample_81() {
    let Some(shared) = fruits_testkit::shared("reference/keras-mobilenet-v2/sample-81") else {
        return;
    };
    let dir = shared.join("reference/keras-mobilenet-v2/sample-81");
    let paths = std::fs::read_to_string(dir.join("paths.txt")).unwrap();
    let expected = fruits_npy::Array::read(dir.join("resized_u8.npy")).unwrap();
    let per_image = MODEL_SIDE * MODEL_SIDE * 3;
    let (mut total, mut equal, mut max_diff) = (0usize, 0usize, 0i32);
    for (i, rel) in paths.lines().filter(|l| !l.is_empty()).enumerate() {
        let bytes = std::fs::read(shared.join(rel)).unwrap();
        let img = decode(&bytes).unwrap();
        let out = resize_bicubic(&img, MODEL_SIDE, MODEL_SIDE);
        let want = &expected.data[i * per_image..(i + 1) * per_image];
        for (a, b) in out.pixels.iter().zip(want) {
            total += 1;
            let d = (*a as i32 - *b as i32).abs();
            equal += (d == 0) as usize;
            max_diff = max_diff.max(d);
        }
    }
    println!("{equal}/{total} resized values equal Pillow's, max difference {max_diff}");
    assert_eq!(total, 81 * per_image);
    assert_eq!(equal, total, "max difference {max_diff}");
}

#[test]
fn decodes_generated_jpeg_and_refuses_truncated() {
    let px = fruits_testkit::fruit_pixels(1, 2);
    let jpeg = fruits_testkit::encode_jpeg(100, 100, &px);
    let img = decode(&jpeg).unwrap();
    assert_eq!((img.width, img.height), (100, 100));
    let mean_err: f64 = img
        .pixels
        .iter()
        .zip(&px)
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .sum::<f64>()
        / px.len() as f64;
    assert!(mean_err < 4.0, "JPEG round trip error {mean_err}");

    // A truncated copy is refused, not silently padded.
    let err = decode(&jpeg[..jpeg.len() / 2]).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

fn jpeg(colorspace: mozjpeg::ColorSpace, progressive: bool, pixels: &[u8]) -> Vec<u8> {
    let mut c = mozjpeg::Compress::new(colorspace);
    c.set_size(16, 8);
    c.set_quality(95.0);
    if progressive {
        c.set_progressive_mode();
    }
    let mut started = c.start_compress(Vec::new()).unwrap();
    started.write_scanlines(pixels).unwrap();
    started.finish().unwrap()
}

fn png(color: png::ColorType, pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, 16, 8);
    e.set_color(color);
    e.set_depth(png::BitDepth::Eight);
    e.write_header().unwrap().write_image_data(pixels).unwrap();
    out
}

#[test]
fn grey_progressive_cmyk_and_png_layouts_become_rgb() {
    let near = |img: &fruits_image::RgbImage, rgb: [u8; 3]| {
        img.pixels.chunks(3).all(|p| {
            p.iter()
                .zip(rgb)
                .all(|(a, b)| (*a as i32 - b as i32).abs() <= 2)
        })
    };
    let grey = decode(&jpeg(
        mozjpeg::ColorSpace::JCS_GRAYSCALE,
        false,
        &[90u8; 128],
    ))
    .unwrap();
    assert_eq!((grey.width, grey.height), (16, 8));
    assert!(near(&grey, [90, 90, 90]));
    let progressive = decode(&jpeg(
        mozjpeg::ColorSpace::JCS_RGB,
        true,
        &[200u8, 30, 60].repeat(128),
    ))
    .unwrap();
    assert!(near(&progressive, [200, 30, 60]));
    // Pillow reads CMYK JPEGs as inverted ink (Adobe's convention): stored zeros are black.
    let cmyk = decode(&jpeg(
        mozjpeg::ColorSpace::JCS_CMYK,
        false,
        &[0u8; 16 * 8 * 4],
    ))
    .unwrap();
    assert!(near(&cmyk, [0, 0, 0]));

    let grey_png = decode(&png(png::ColorType::Grayscale, &[77u8; 128])).unwrap();
    assert!(near(&grey_png, [77, 77, 77]));
    let rgba_png = decode(&png(png::ColorType::Rgba, &[10u8, 20, 30, 0].repeat(128))).unwrap();
    assert_eq!(
        rgba_png.pixels,
        [10u8, 20, 30].repeat(128),
        "alpha dropped as convert('RGB') does"
    );
    let grey_alpha = decode(&png(
        png::ColorType::GrayscaleAlpha,
        &[5u8, 255].repeat(128),
    ))
    .unwrap();
    assert_eq!(grey_alpha.pixels, [5u8; 3 * 128]);
    let mut truncated = png(png::ColorType::Rgb, &[1u8; 16 * 8 * 3]);
    truncated.truncate(40);
    assert!(matches!(
        decode(&truncated),
        Err(fruits_image::ImageError::Decode { format: "PNG", .. })
    ));
}

#[test]
fn decompression_bombs_are_refused_before_decoding() {
    // A valid PNG header claiming 20000 x 20000 pixels, and an empty data chunk.
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, 20_000, 20_000);
    e.set_color(png::ColorType::Rgb);
    let mut w = e.write_header().unwrap();
    w.write_chunk(png::chunk::IDAT, &[]).unwrap();
    drop(w);
    let err = decode(&out).unwrap_err().to_string();
    assert!(err.contains("exceeds"), "{err}");

    // A real JPEG whose frame header is patched to claim 30000 x 30000 pixels.
    let mut jpeg = fruits_testkit::encode_jpeg(100, 100, &fruits_testkit::fruit_pixels(0, 0));
    let sof = jpeg
        .windows(2)
        .position(|w| w[0] == 0xFF && matches!(w[1], 0xC0 | 0xC2))
        .unwrap();
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0x75, 0x30, 0x75, 0x30]);
    let err = decode(&jpeg).unwrap_err().to_string();
    assert!(err.contains("exceeds"), "{err}");
}
