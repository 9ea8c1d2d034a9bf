//! 16-bit PNGs become RGB as Pillow 10.4 makes them: 16-bit grey ("I;16") is clipped to 255,
//! every other 16-bit colour type keeps each sample's high byte. The expected pixels are what
//! `tests/pillow/png16.py` prints.

const VALUES: [u16; 8] = [0, 1, 255, 256, 300, 1000, 32768, 65535];

fn png16(colour: png::ColorType, samples: &[u16]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, VALUES.len() as u32, 1);
    e.set_color(colour);
    e.set_depth(png::BitDepth::Sixteen);
    let mut w = e.write_header().unwrap();
    let raw: Vec<u8> = samples.iter().flat_map(|v| v.to_be_bytes()).collect();
    w.write_image_data(&raw).unwrap();
    drop(w);
    out
}

fn rgb(bytes: &[u8]) -> Vec<[u8; 3]> {
    let img = fruits_image::decode(bytes).unwrap();
    img.pixels.chunks(3).map(|p| [p[0], p[1], p[2]]).collect()
}

#[test]
fn sixteen_bit_pngs_convert_as_pillow_does() {
    let grey = png16(png::ColorType::Grayscale, &VALUES);
    let g = |v: u8| [v, v, v];
    assert_eq!(
        rgb(&grey),
        [g(0), g(1), g(255), g(255), g(255), g(255), g(255), g(255)]
    );
    let grey_alpha: Vec<u16> = VALUES.iter().flat_map(|&v| [v, 1000]).collect();
    assert_eq!(
        rgb(&png16(png::ColorType::GrayscaleAlpha, &grey_alpha)),
        [g(0), g(0), g(0), g(1), g(1), g(3), g(128), g(255)]
    );
    let want = [
        [0, 0, 255],
        [0, 0, 255],
        [0, 0, 255],
        [1, 0, 254],
        [1, 0, 254],
        [3, 1, 252],
        [128, 64, 127],
        [255, 127, 0],
    ];
    let colour: Vec<u16> = VALUES.iter().flat_map(|&v| [v, v / 2, 65535 - v]).collect();
    assert_eq!(rgb(&png16(png::ColorType::Rgb, &colour)), want);
    let alpha: Vec<u16> = VALUES
        .iter()
        .flat_map(|&v| [v, v / 2, 65535 - v, 7])
        .collect();
    assert_eq!(rgb(&png16(png::ColorType::Rgba, &alpha)), want);
}
