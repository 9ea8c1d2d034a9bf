//! Image bytes → MobileNetV2 input, exactly as the original Python pipeline prepared them.
//!
//! The notebook did `PIL.Image.open(bytes).resize([224, 224])` (bicubic for RGB), then Keras'
//! `preprocess_input` (`x / 127.5 - 1`). This crate reproduces each step bit for bit:
//!
//! * [`decode`]: JPEG through libjpeg-turbo's decoder (the `mozjpeg` crate, the same code and
//!   settings Pillow uses: integer IDCT, fancy upsampling) and PNG; grey, CMYK and alpha images
//!   become RGB the way Pillow's `convert("RGB")` does.
//! * [`resize_bicubic`]: Pillow's two-pass fixed-point convolution (`Resample.c`), coefficient
//!   for coefficient, so the 224x224 pixels equal Pillow's.
//! * [`to_model_input`]: `x / 127.5 - 1` in `f32`.
//!
//! Pure functions: no files, models or engines.
//!
//! ```
//! let img = fruits_image::RgbImage::new(2, 1, vec![0, 0, 0, 255, 255, 255]).unwrap();
//! let big = fruits_image::resize_bicubic(&img, 4, 2);
//! assert_eq!((big.width, big.height), (4, 2));
//! let mut x = vec![0.0; 4 * 2 * 3];
//! fruits_image::to_model_input(&big, &mut x);
//! assert_eq!(x[0], -1.0);
//! ```

#![deny(missing_docs)]

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Side of the square the model takes.
pub const MODEL_SIDE: usize = 224;
/// Number of `f32` values of one model input (224 x 224 x 3, HWC).
pub const MODEL_INPUT_LEN: usize = MODEL_SIDE * MODEL_SIDE * 3;

/// Why an image could not be turned into model input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The bytes are empty.
    #[error("empty file")]
    Empty,
    /// The bytes are neither JPEG nor PNG.
    #[error("not a JPEG or PNG image")]
    UnknownFormat,
    /// The decoder rejected the data (corrupt or truncated).
    #[error("cannot decode {format}: {message}")]
    Decode {
        /// "JPEG" or "PNG".
        format: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// A colour layout fruits does not convert.
    #[error("unsupported {0}")]
    Unsupported(String),
}

/// An 8-bit RGB image, rows top to bottom, pixels interleaved `R, G, B`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height * 3` bytes.
    pub pixels: Vec<u8>,
}

impl RgbImage {
    /// Wraps interleaved RGB bytes, checking their length.
    pub fn new(width: usize, height: usize, pixels: Vec<u8>) -> Result<RgbImage, ImageError> {
        if width == 0 || height == 0 || pixels.len() != width * height * 3 {
            return Err(ImageError::Unsupported(format!(
                "pixel buffer of {} bytes for {width}x{height} RGB",
                pixels.len()
            )));
        }
        Ok(RgbImage {
            width,
            height,
            pixels,
        })
    }
}

/// Decodes, resizes to 224x224 as Pillow does and scales to `[-1, 1]` into `out`
/// (`MODEL_INPUT_LEN` values, HWC): the whole preprocessing of one photo.
pub fn preprocess(bytes: &[u8], out: &mut [f32]) -> Result<(), ImageError> {
    let img = decode(bytes)?;
    let resized = resize_bicubic(&img, MODEL_SIDE, MODEL_SIDE);
    to_model_input(&resized, out);
    Ok(())
}

/// Decodes JPEG or PNG bytes to RGB (grey, CMYK and alpha converted as Pillow's `convert("RGB")`).
pub fn decode(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.starts_with(&[0xFF, 0xD8]) {
        decode_jpeg(bytes)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes)
    } else {
        Err(ImageError::UnknownFormat)
    }
}

/// A libjpeg error (or the end-of-data warning), carried out of libjpeg by unwinding.
struct JpegFault {
    code: std::os::raw::c_int,
    message: String,
}

impl JpegFault {
    /// The data ran out (the end-of-data warning, or a skip past the end), as opposed to
    /// data that libjpeg found wrong.
    fn ran_out(&self) -> bool {
        [mozjpeg_sys::JWRN_JPEG_EOF, mozjpeg_sys::JERR_FILE_READ]
            .iter()
            .any(|&c| c as std::os::raw::c_int == self.code)
    }
}

/// libjpeg error handler: fatal errors unwind (caught in [`decode_jpeg`]); of the warnings,
/// only "premature end of data" is fatal, as Pillow refuses truncated files.
fn jpeg_error_mgr() -> mozjpeg_sys::jpeg_error_mgr {
    extern "C-unwind" fn error_exit(cinfo: &mut mozjpeg_sys::jpeg_common_struct) {
        // SAFETY: libjpeg calls this with its own valid `cinfo`, whose `err` we installed.
        let code = unsafe { cinfo.err.as_ref().map_or(0, |e| e.msg_code) };
        std::panic::resume_unwind(Box::new(JpegFault {
            code,
            message: message(cinfo),
        }));
    }
    extern "C-unwind" fn emit_message(
        cinfo: &mut mozjpeg_sys::jpeg_common_struct,
        level: std::os::raw::c_int,
    ) {
        // SAFETY: libjpeg calls this with its own valid `cinfo`, whose `err` we installed.
        let code = unsafe { cinfo.err.as_ref().map(|e| e.msg_code) };
        let eof = mozjpeg_sys::JWRN_JPEG_EOF as std::os::raw::c_int;
        if level < 0 && code == Some(eof) {
            std::panic::resume_unwind(Box::new(JpegFault {
                code: eof,
                message: "image file is truncated".into(),
            }));
        }
    }
    fn message(cinfo: &mut mozjpeg_sys::jpeg_common_struct) -> String {
        /// `format_message` as libjpeg declares it: it writes into `buffer`. (The binding
        /// types the buffer `&[u8; 80]`, and writing through a shared reference is undefined
        /// behaviour, so it is called through this type.)
        type FormatMessage = unsafe extern "C-unwind" fn(
            cinfo: &mut mozjpeg_sys::jpeg_common_struct,
            buffer: *mut [u8; JMSG_LENGTH_MAX],
        );
        const JMSG_LENGTH_MAX: usize = 80;
        // SAFETY: libjpeg calls this with its own valid `cinfo`, whose `err` we installed.
        let Some(fmt) = (unsafe { cinfo.err.as_ref() }).and_then(|e| e.format_message) else {
            return "libjpeg error".into();
        };
        // SAFETY: both types are C function pointers of the same ABI whose second argument is
        // a pointer to 80 bytes; only the Rust-side mutability differs.
        let fmt: FormatMessage = unsafe { std::mem::transmute(fmt) };
        let mut buffer = [0u8; JMSG_LENGTH_MAX];
        // SAFETY: `buffer` is a mutable local of JMSG_LENGTH_MAX bytes, the most libjpeg's
        // format_message writes (it NUL-terminates within them).
        unsafe { fmt(cinfo, &mut buffer) };
        let end = buffer.iter().position(|&c| c == 0).unwrap_or(buffer.len());
        String::from_utf8_lossy(&buffer[..end]).into_owned()
    }
    // SAFETY: jpeg_std_error only fills the struct in.
    unsafe {
        let mut err: mozjpeg_sys::jpeg_error_mgr = std::mem::zeroed();
        mozjpeg_sys::jpeg_std_error(&mut err);
        err.error_exit = Some(error_exit);
        err.emit_message = Some(emit_message);
        err
    }
}

fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    let fail = |message: String| ImageError::Decode {
        format: "JPEG",
        message,
    };
    pillow_opens_jpeg(bytes).map_err(fail)?;
    // Once every scanline is decoded, Pillow's decoder lets jpeg_finish_decompress run out of
    // data (it suspends, and Pillow takes the image) but fails on an error in what follows
    // the last scan: so does fruits.
    let finish = |started: mozjpeg::decompress::DecompressStarted<&[u8]>| match catch_unwind(
        AssertUnwindSafe(move || started.finish()),
    ) {
        Ok(done) => done,
        Err(fault) => match fault.downcast::<JpegFault>() {
            Ok(f) if f.ran_out() => Ok(()),
            Ok(f) => Err(std::io::Error::other(f.message)),
            Err(other) => std::panic::resume_unwind(other),
        },
    };
    let result = catch_unwind(AssertUnwindSafe(|| -> std::io::Result<RgbImage> {
        let d = mozjpeg::Decompress::builder()
            .with_err(jpeg_error_mgr())
            .from_mem(bytes)?;
        let (width, height) = (d.width(), d.height());
        check_size(width, height).map_err(std::io::Error::other)?;
        use mozjpeg_sys::J_COLOR_SPACE as Cs;
        let pixels = match d.color_space() {
            Cs::JCS_CMYK | Cs::JCS_YCCK => {
                let mut started = d.to_colorspace(Cs::JCS_CMYK)?;
                let cmyk: Vec<u8> = started.read_scanlines()?;
                finish(started)?;
                // Pillow reads every CMYK JPEG as inverted ink ("CMYK;I", Adobe's convention).
                cmyk_to_rgb(&cmyk, true)
            }
            _ => {
                let mut started = d.rgb()?;
                let rgb: Vec<u8> = started.read_scanlines()?;
                finish(started)?;
                rgb
            }
        };
        if pixels.len() != width * height * 3 {
            return Err(std::io::Error::other("image file is truncated"));
        }
        Ok(RgbImage {
            width,
            height,
            pixels,
        })
    }));
    match result {
        Ok(Ok(img)) => Ok(img),
        Ok(Err(e)) => Err(fail(e.to_string())),
        Err(panic) => Err(fail(
            panic
                .downcast_ref::<JpegFault>()
                .map(|f| f.message.clone())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "libjpeg error".into()),
        )),
    }
}

/// The checks Pillow's `JpegImagePlugin._open` (10.4) makes while it walks the markers up to
/// the first scan, before libjpeg sees the file: a file it refuses there is refused here too
/// (libjpeg alone would read some of them).
fn pillow_opens_jpeg(bytes: &[u8]) -> Result<(), String> {
    let cannot = |why: &str| Err(format!("cannot identify image file ({why})"));
    if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return cannot("not a JPEG file");
    }
    let mut at = 3;
    let byte = |at: &mut usize| -> Option<u8> {
        let b = bytes.get(*at).copied();
        *at += 1;
        b
    };
    let mut first = 0xFFu8;
    let (mut width, mut height, mut layers) = (0u16, 0u16, 0u8);
    loop {
        if first != 0xFF {
            // Skip non-0xFF junk.
            match byte(&mut at) {
                Some(b) => first = b,
                None => return cannot("no start of scan"),
            }
            continue;
        }
        let Some(second) = byte(&mut at) else {
            return cannot("no start of scan");
        };
        let marker = 0xFF00 | u16::from(second);
        match marker {
            0xFFC0..=0xFFFE => {
                let segment = |at: &mut usize| -> Result<&[u8], String> {
                    let len = bytes
                        .get(*at..*at + 2)
                        .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
                        .ok_or("truncated marker")?;
                    *at += 2;
                    let n = len.saturating_sub(2);
                    let s = bytes.get(*at..*at + n).ok_or("Truncated File Read")?;
                    *at += n;
                    Ok(s)
                };
                match marker {
                    0xFFC8 | 0xFFD0..=0xFFD9 | 0xFFF0..=0xFFFD => {}
                    // SOFn and DHP
                    0xFFC0..=0xFFC3
                    | 0xFFC5..=0xFFC7
                    | 0xFFC9..=0xFFCB
                    | 0xFFCD..=0xFFCF
                    | 0xFFDE => {
                        let s = segment(&mut at)?;
                        if s.len() < 6 {
                            return cannot("short frame header");
                        }
                        height = u16::from_be_bytes([s[1], s[2]]);
                        width = u16::from_be_bytes([s[3], s[4]]);
                        if s[0] != 8 {
                            return cannot(&format!("cannot handle {}-bit layers", s[0]));
                        }
                        layers = s[5];
                        if ![1, 3, 4].contains(&layers) {
                            return cannot(&format!("cannot handle {layers}-layer images"));
                        }
                    }
                    0xFFDB => {
                        let mut s = segment(&mut at)?;
                        while let Some(&v) = s.first() {
                            let qt_length = 1 + if v / 16 == 0 { 64 } else { 128 };
                            if s.len() < qt_length {
                                return cannot("bad quantization table marker");
                            }
                            s = &s[qt_length..];
                        }
                    }
                    0xFFE0..=0xFFEF => {
                        let s = segment(&mut at)?;
                        let short = s.len() < 7;
                        if (marker == 0xFFE0 && s.starts_with(b"JFIF") && short)
                            || (marker == 0xFFEE && s.starts_with(b"Adobe") && short)
                        {
                            return cannot("short APP segment");
                        }
                        // Pillow reads an ICC fragment's count at its byte 13.
                        if marker == 0xFFE2 && s.starts_with(b"ICC_PROFILE\0") && s.len() < 14 {
                            return cannot("short ICC profile fragment");
                        }
                    }
                    _ => {
                        segment(&mut at)?;
                    }
                }
                if marker == 0xFFDA {
                    if layers == 0 || width == 0 || height == 0 {
                        return cannot("not identified by this driver");
                    }
                    return Ok(());
                }
                match byte(&mut at) {
                    Some(b) => first = b,
                    None => return cannot("no start of scan"),
                }
            }
            0xFFFF | 0x0000 => first = 0xFF,
            0xFF00 => match byte(&mut at) {
                Some(b) => first = b,
                None => return cannot("no start of scan"),
            },
            _ => return cannot("no marker found"),
        }
    }
}

/// Pillow refuses images over twice `Image.MAX_IMAGE_PIXELS` (89,478,485) as decompression
/// bombs; so does fruits, before allocating anything.
const MAX_PIXELS: usize = 2 * 89_478_485;

/// The longest side fruits resizes (JPEG's own limit is 65,535). Resizing costs memory in
/// proportion to each side (a 1 x 60,000,000 PNG would need gigabytes of filter weights and
/// intermediate rows), so longer sides are refused from the header, before any allocation.
pub const MAX_SIDE: usize = 65_535;

fn check_size(width: usize, height: usize) -> Result<(), String> {
    if width.saturating_mul(height) > MAX_PIXELS {
        return Err(format!(
            "image of {width}x{height} pixels exceeds the {MAX_PIXELS}-pixel limit"
        ));
    }
    if width.max(height) > MAX_SIDE {
        return Err(format!(
            "image of {width}x{height} pixels has a side over {MAX_SIDE} pixels"
        ));
    }
    Ok(())
}

/// Width and height from the header of JPEG or PNG bytes, without decoding the pixels (to
/// refuse an image over a memory limit before it is decoded).
pub fn dimensions(bytes: &[u8]) -> Result<(usize, usize), ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        // IHDR is the first chunk: width and height big-endian at bytes 16..24.
        let be = |at: usize| {
            bytes
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        return match (bytes.get(12..16), be(16), be(20)) {
            (Some(b"IHDR"), Some(w), Some(h)) => Ok((w, h)),
            _ => Err(ImageError::Decode {
                format: "PNG",
                message: "no IHDR header".into(),
            }),
        };
    }
    if bytes.starts_with(&[0xFF, 0xD8]) {
        return jpeg_dimensions(bytes).ok_or_else(|| ImageError::Decode {
            format: "JPEG",
            message: "no frame header".into(),
        });
    }
    Err(ImageError::UnknownFormat)
}

/// The size in the first SOFn marker of a JPEG, walking the marker segments.
fn jpeg_dimensions(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut at = 2;
    loop {
        // Skip fill bytes before a marker.
        while *bytes.get(at)? == 0xFF && *bytes.get(at + 1)? == 0xFF {
            at += 1;
        }
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        let marker = *bytes.get(at + 1)?;
        let len = usize::from(u16::from_be_bytes([
            *bytes.get(at + 2)?,
            *bytes.get(at + 3)?,
        ]));
        let sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if sof {
            let h = u16::from_be_bytes([*bytes.get(at + 5)?, *bytes.get(at + 6)?]);
            let w = u16::from_be_bytes([*bytes.get(at + 7)?, *bytes.get(at + 8)?]);
            return Some((usize::from(w), usize::from(h)));
        }
        if marker == 0xDA || len < 2 {
            return None;
        }
        at += 2 + len;
    }
}

/// Pillow's `CMYK` → `RGB` (`cmyk2rgb` in `Convert.c`); JPEGs store inverted ink.
fn cmyk_to_rgb(cmyk: &[u8], adobe_inverted: bool) -> Vec<u8> {
    let muldiv255 = |a: u32, b: u32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    let mut out = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let [c, m, y, k] = if adobe_inverted {
            [255 - px[0], 255 - px[1], 255 - px[2], 255 - px[3]]
        } else {
            [px[0], px[1], px[2], px[3]]
        };
        let nk = 255 - k as u32;
        for ink in [c, m, y] {
            out.push((nk as i32 - muldiv255(ink as u32, nk) as i32).clamp(0, 255) as u8);
        }
    }
    out
}

fn decode_png(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    let fail = |e: png::DecodingError| ImageError::Decode {
        format: "PNG",
        message: e.to_string(),
    };
    // Pillow opens 16-bit grey as "I;16" and clips it to 255 when converting to RGB; every
    // other 16-bit PNG (grey + alpha, RGB, RGBA) it reads by the high byte of each sample.
    // IHDR: bit depth at byte 24, colour type at 25.
    let grey16 = bytes.get(24) == Some(&16) && bytes.get(25) == Some(&0);
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(if grey16 {
        png::Transformations::EXPAND
    } else {
        png::Transformations::EXPAND | png::Transformations::STRIP_16
    });
    let mut reader = decoder.read_info().map_err(fail)?;
    let header = reader.info();
    check_size(header.width as usize, header.height as usize).map_err(ImageError::Unsupported)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| ImageError::Unsupported("PNG too large".into()))?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(fail)?;
    buf.truncate(info.buffer_size());
    let (width, height) = (info.width as usize, info.height as usize);
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => {
            return Err(ImageError::Unsupported(
                "indexed PNG after expansion".into(),
            ))
        }
    };
    // Pillow's convert("RGB") replicates grey and drops alpha.
    let mut pixels = Vec::with_capacity(width * height * 3);
    let sample = if info.bit_depth == png::BitDepth::Sixteen {
        2
    } else {
        1
    };
    for row in buf.chunks_exact(info.line_size) {
        for px in row[..width * channels * sample].chunks_exact(channels * sample) {
            match (channels, sample) {
                (1 | 2, 2) => {
                    let v = u16::from_be_bytes([px[0], px[1]]).min(255) as u8;
                    pixels.extend_from_slice(&[v, v, v]);
                }
                (1 | 2, _) => pixels.extend_from_slice(&[px[0], px[0], px[0]]),
                _ => pixels.extend_from_slice(&px[..3]),
            }
        }
    }
    RgbImage::new(width, height, pixels)
}

/// Fixed-point precision of Pillow's 8-bit resampling (`PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bicubic kernel (`a = -0.5`).
fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output pixel: the first input index, the number of taps, and the fixed-point weights.
struct Coefficients {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` of Pillow's `Resample.c`, for the full box.
fn coefficients(in_size: usize, out_size: usize) -> Coefficients {
    const SUPPORT: f64 = 2.0;
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) cast truncates toward zero, as `as` does.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
        let (xmin, xmax) = (xmin as usize, xmax.max(0) as usize);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            let w = bicubic_filter(((x + xmin) as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for x in 0..xmax {
            let v = if ww != 0.0 { k[x] / ww } else { k[x] };
            let fixed = v * f64::from(1u32 << PRECISION_BITS);
            weights[xx * ksize + x] = if v < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        bounds.push((xmin, xmax));
    }
    Coefficients {
        ksize,
        bounds,
        weights,
    }
}

/// The vertical pass: output row `yy` of `out` from rows `first_row..` held in `temp`.
fn vertical_pass(
    temp: &[u8],
    row_len: usize,
    vert: &Coefficients,
    first_row: usize,
    out: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (32-bit multiplies 8 at a time instead of emulated ones).
        unsafe { vertical_pass_avx2(temp, row_len, vert, first_row, out) };
        return;
    }
    vertical_pass_generic(temp, row_len, vert, first_row, out);
}

/// The generic vertical pass, compiled for AVX2.
///
/// # Safety
/// The CPU must have AVX2 (the caller checks it just before).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn vertical_pass_avx2(
    temp: &[u8],
    row_len: usize,
    vert: &Coefficients,
    first_row: usize,
    out: &mut [u8],
) {
    vertical_pass_generic(temp, row_len, vert, first_row, out);
}

#[inline(always)]
fn vertical_pass_generic(
    temp: &[u8],
    row_len: usize,
    vert: &Coefficients,
    first_row: usize,
    out: &mut [u8],
) {
    let half = 1i32 << (PRECISION_BITS - 1);
    let mut acc = vec![0i32; row_len];
    for (yy, o) in out.chunks_exact_mut(row_len).enumerate() {
        let (ymin, n) = vert.bounds[yy];
        let k = &vert.weights[yy * vert.ksize..yy * vert.ksize + n];
        acc.fill(half);
        for (i, &w) in k.iter().enumerate() {
            let y = ymin + i - first_row;
            let src = &temp[y * row_len..(y + 1) * row_len];
            for (a, &p) in acc.iter_mut().zip(src) {
                *a += p as i32 * w;
            }
        }
        for (o, &a) in o.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
}

/// One row of the horizontal pass, any window size.
fn horizontal_row_generic(src: &[u8], c: &Coefficients, dst: &mut [u8]) {
    for (xx, d) in dst.chunks_exact_mut(3).enumerate() {
        let (xmin, n) = c.bounds[xx];
        let px = &src[xmin * 3..(xmin + n) * 3];
        weighted_pixel(px, &c.weights[xx * c.ksize..][..n], d);
    }
}

/// `d` = the RGB pixels `px` weighted by `w`, in Pillow's fixed point.
#[inline(always)]
fn weighted_pixel(px: &[u8], w: &[i32], d: &mut [u8]) {
    let half = 1i32 << (PRECISION_BITS - 1);
    let (mut s0, mut s1, mut s2) = (half, half, half);
    for (p, &w) in px.chunks_exact(3).zip(w) {
        s0 += p[0] as i32 * w;
        s1 += p[1] as i32 * w;
        s2 += p[2] as i32 * w;
    }
    d[0] = clip8(s0);
    d[1] = clip8(s1);
    d[2] = clip8(s2);
}

/// Each output column's taps as a window of exactly `K` input columns that lies inside the
/// row (moved left at the right edge, the extra taps weighted 0): the same integer sums.
fn fixed_windows<const K: usize>(c: &Coefficients, in_size: usize) -> Vec<(usize, [i32; K])> {
    c.bounds
        .iter()
        .enumerate()
        .map(|(xx, &(xmin, n))| {
            let start = xmin.min(in_size - K);
            let mut w = [0i32; K];
            w[xmin - start..xmin - start + n].copy_from_slice(&c.weights[xx * c.ksize..][..n]);
            (start, w)
        })
        .collect()
}

/// One row of the horizontal pass with [`fixed_windows`].
fn horizontal_row<const K: usize>(src: &[u8], windows: &[(usize, [i32; K])], dst: &mut [u8]) {
    for (&(start, ref w), d) in windows.iter().zip(dst.chunks_exact_mut(3)) {
        let Some(px) = src.get(start * 3..(start + K) * 3) else {
            continue; // never: windows lie inside the row
        };
        weighted_pixel(px, w, d);
    }
}

#[inline(always)]
fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Resizes like Pillow's `Image.resize((width, height), Image.BICUBIC)` on an RGB image:
/// a horizontal then a vertical fixed-point pass, each rounding to 8 bits.
pub fn resize_bicubic(img: &RgbImage, width: usize, height: usize) -> RgbImage {
    if (width, height) == (img.width, img.height) {
        return img.clone();
    }
    let horiz = coefficients(img.width, width);
    let vert = coefficients(img.height, height);
    let need_horizontal = width != img.width;
    let need_vertical = height != img.height;

    // Horizontal pass over the rows the vertical pass will read.
    let (first_row, temp, temp_width) = if need_horizontal {
        let first = vert.bounds[0].0;
        let last = vert.bounds[height - 1].0 + vert.bounds[height - 1].1;
        let (first, last) = if need_vertical {
            (first, last)
        } else {
            (0, img.height)
        };
        let mut out = vec![0u8; (last - first) * width * 3];
        // The usual case (a 5-tap window, upscaling): fixed-size windows, no bounds checks.
        let windows =
            (horiz.ksize == 5 && img.width >= 5).then(|| fixed_windows::<5>(&horiz, img.width));
        for (ty, y) in (first..last).enumerate() {
            let src = &img.pixels[y * img.width * 3..(y + 1) * img.width * 3];
            let dst = &mut out[ty * width * 3..(ty + 1) * width * 3];
            match &windows {
                Some(windows) => horizontal_row(src, windows, dst),
                None => horizontal_row_generic(src, &horiz, dst),
            }
        }
        (first, out, width)
    } else {
        (0, img.pixels.clone(), img.width)
    };
    if !need_vertical {
        return RgbImage {
            width,
            height,
            pixels: temp,
        };
    }

    // Vertical pass: column by column of taps, all channels of a row at once.
    let row_len = temp_width * 3;
    let mut out = vec![0u8; height * row_len];
    vertical_pass(&temp[..], row_len, &vert, first_row, &mut out);
    RgbImage {
        width,
        height,
        pixels: out,
    }
}

/// Keras' `preprocess_input` for MobileNetV2: `x / 127.5 - 1`, HWC, into `out`.
///
/// # Panics
/// If `out` is shorter than the image's `width * height * 3` values.
pub fn to_model_input(img: &RgbImage, out: &mut [f32]) {
    for (o, &p) in out[..img.pixels.len()].iter_mut().zip(&img.pixels) {
        *o = p as f32 / 127.5 - 1.0;
    }
}

/// A small JPEG of an image, for people to look at (a report's thumbnails): decoded as for the
/// model, scaled (bicubic) so its longer side is `side` pixels, encoded at quality 80.
pub fn thumbnail(bytes: &[u8], side: usize) -> Result<Vec<u8>, ImageError> {
    let img = decode(bytes)?;
    let scale = side as f64 / img.width.max(img.height) as f64;
    let (w, h) = (
        ((img.width as f64 * scale).round() as usize).max(1),
        ((img.height as f64 * scale).round() as usize).max(1),
    );
    let small = resize_bicubic(&img, w, h);
    let encode = || -> std::io::Result<Vec<u8>> {
        let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        c.set_size(w, h);
        c.set_quality(80.0);
        let mut started = c.start_compress(Vec::new())?;
        started.write_scanlines(&small.pixels)?;
        started.finish()
    };
    encode().map_err(|e| ImageError::Unsupported(format!("thumbnail: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_come_from_the_header_alone() {
        let jpeg = {
            let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
            c.set_size(37, 21);
            let mut started = c.start_compress(Vec::new()).unwrap();
            started.write_scanlines(&vec![128u8; 37 * 21 * 3]).unwrap();
            started.finish().unwrap()
        };
        assert_eq!(dimensions(&jpeg).unwrap(), (37, 21));
        assert_eq!(dimensions(&thumbnail(&jpeg, 16).unwrap()).unwrap(), (16, 9));
        assert_eq!(dimensions(&jpeg[..200.min(jpeg.len())]).unwrap(), (37, 21));
        let mut png = Vec::new();
        {
            let mut e = png::Encoder::new(&mut png, 5, 3);
            e.set_color(png::ColorType::Rgb);
            let mut w = e.write_header().unwrap();
            w.write_image_data(&[9u8; 5 * 3 * 3]).unwrap();
        }
        assert_eq!(dimensions(&png).unwrap(), (5, 3));
        assert!(dimensions(b"GIF89a").is_err());
        assert!(dimensions(&[0xFF, 0xD8, 0xFF]).is_err());
        // A side over MAX_SIDE is refused before decoding.
        let mut tall = Vec::new();
        {
            let mut e = png::Encoder::new(&mut tall, 1, MAX_SIDE as u32 + 1);
            e.set_color(png::ColorType::Grayscale);
            let mut w = e.write_header().unwrap();
            w.write_image_data(&vec![7u8; MAX_SIDE + 1]).unwrap();
        }
        assert_eq!(dimensions(&tall).unwrap(), (1, MAX_SIDE + 1));
        let err = decode(&tall).unwrap_err().to_string();
        assert!(err.contains("side over 65535"), "{err}");
    }

    #[test]
    fn jpeg_errors_carry_libjpeg_text() {
        // A JPEG start followed by a frame header whose length runs past the data.
        let bad = [0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x02, 0xFF, 0xD9];
        let err = decode(&bad).unwrap_err().to_string();
        assert!(err.starts_with("cannot decode JPEG: "), "{err}");
        let text = err.trim_start_matches("cannot decode JPEG: ");
        assert!(text.len() > 8 && text != "libjpeg error", "{err}");
        assert!(text.is_ascii() && !text.contains('\0'), "{err}");
    }

    #[test]
    fn fixed_windows_give_the_generic_sums() {
        for (w_in, w_out) in [(100, 224), (7, 224), (5, 9), (224, 300)] {
            let c = coefficients(w_in, w_out);
            assert_eq!(c.ksize, 5);
            let src: Vec<u8> = (0..w_in * 3).map(|i| (i * 37 % 256) as u8).collect();
            let (mut fast, mut slow) = (vec![0u8; w_out * 3], vec![0u8; w_out * 3]);
            horizontal_row(&src, &fixed_windows::<5>(&c, w_in), &mut fast);
            horizontal_row_generic(&src, &c, &mut slow);
            assert_eq!(fast, slow, "{w_in} -> {w_out}");
        }
    }

    #[test]
    fn coefficients_sum_to_one_in_fixed_point() {
        let c = coefficients(100, 224);
        assert_eq!(c.ksize, 5);
        for xx in 0..224 {
            let (_, n) = c.bounds[xx];
            let s: i32 = c.weights[xx * c.ksize..xx * c.ksize + n].iter().sum();
            assert!((s - (1 << PRECISION_BITS)).abs() <= 3, "{xx}: {s}");
        }
        // Edges are clipped to the image.
        assert_eq!(c.bounds[0].0, 0);
        assert_eq!(c.bounds[223].0 + c.bounds[223].1, 100);
    }

    #[test]
    fn flat_image_stays_flat() {
        let img = RgbImage::new(3, 5, [10u8, 20, 30].repeat(15)).unwrap();
        let out = resize_bicubic(&img, 7, 2);
        assert!(out.pixels.chunks(3).all(|p| p == [10, 20, 30]));
    }

    #[test]
    fn model_input_scaling() {
        let img = RgbImage::new(1, 1, vec![0, 255, 127]).unwrap();
        let mut x = [0.0f32; 3];
        to_model_input(&img, &mut x);
        assert_eq!(x, [-1.0, 1.0, 127.0 / 127.5 - 1.0]);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(decode(&[]), Err(ImageError::Empty));
        assert_eq!(decode(b"hello world"), Err(ImageError::UnknownFormat));
        let err = decode(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, 1, 2, 3]).unwrap_err();
        assert!(
            matches!(err, ImageError::Decode { format: "JPEG", .. }),
            "{err}"
        );
    }

    #[test]
    fn cmyk_conversion_matches_pillow() {
        // Pillow: CMYK (0,0,0,0) is white, (255,255,255,255) black; Adobe stores inverted ink.
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 0], false), vec![255, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[255, 0, 0, 0], false), vec![0, 255, 255]);
        assert_eq!(
            cmyk_to_rgb(&[255, 255, 255, 255], true),
            vec![255, 255, 255]
        );
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 127], false), vec![128, 128, 128]);
    }
}
