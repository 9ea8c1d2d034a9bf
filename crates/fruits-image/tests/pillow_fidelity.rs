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
    assert!(max_diff <= 1, "max difference {max_diff}");
    assert!(
        equal as f64 / total as f64 >= 0.999,
        "{equal}/{total} equal"
    );
}

#[test]
fn decodes_generated_jpeg_and_grey_png() {
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
