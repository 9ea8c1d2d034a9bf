//! Read and write numpy `.npy` arrays.
//!
//! Only what fruits needs: version 1/2/3 headers, C order, little-endian `f4`, `f8` and `u1`
//! element types. Weights files, reference features and the saved PCA all use this format,
//! so every array fruits writes opens with `numpy.load`.
//!
//! ```
//! let bytes = fruits_npy::to_bytes_f32(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
//! let a = fruits_npy::Array::parse(&bytes).unwrap();
//! assert_eq!(a.shape, vec![2, 2]);
//! assert_eq!(a.to_f32().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
//! ```

#![deny(missing_docs)]

use std::path::Path;

/// What can go wrong reading an `.npy` file.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The bytes are not an `.npy` array fruits understands.
    #[error("not a supported .npy array: {0}")]
    Format(String),
}

/// Element type of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// `<f4`
    F32,
    /// `<f8`
    F64,
    /// `|u1`
    U8,
}

impl DType {
    fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
            DType::U8 => 1,
        }
    }
    fn descr(self) -> &'static str {
        match self {
            DType::F32 => "<f4",
            DType::F64 => "<f8",
            DType::U8 => "|u1",
        }
    }
}

/// A parsed array: its shape, element type and raw little-endian data.
#[derive(Debug, Clone)]
pub struct Array {
    /// Dimensions, outermost first (C order).
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: DType,
    /// Raw element bytes, little-endian, C order.
    pub data: Vec<u8>,
}

impl Array {
    /// Reads and parses an `.npy` file.
    pub fn read(path: impl AsRef<Path>) -> Result<Array, NpyError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Array::parse(&bytes).map_err(|e| NpyError::Format(format!("{}: {e}", path.display())))
    }

    /// Parses the bytes of an `.npy` file.
    pub fn parse(bytes: &[u8]) -> Result<Array, NpyError> {
        let bad = |m: &str| NpyError::Format(m.to_string());
        if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
            return Err(bad("missing \\x93NUMPY magic"));
        }
        let major = bytes[6];
        let (header_len, start) = match major {
            1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
            2 | 3 => {
                if bytes.len() < 12 {
                    return Err(bad("truncated header"));
                }
                (
                    u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                    12,
                )
            }
            v => return Err(NpyError::Format(format!("unknown version {v}"))),
        };
        let end = start + header_len;
        let header = bytes
            .get(start..end)
            .ok_or_else(|| bad("truncated header"))?;
        let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
        let descr = dict_value(header, "descr").ok_or_else(|| bad("no 'descr' in header"))?;
        let dtype = match descr.trim_matches(|c| c == '\'' || c == '"') {
            "<f4" => DType::F32,
            "<f8" => DType::F64,
            "|u1" | "<u1" | "u1" => DType::U8,
            other => return Err(NpyError::Format(format!("unsupported dtype {other}"))),
        };
        let fortran = dict_value(header, "fortran_order").ok_or_else(|| bad("no fortran_order"))?;
        if fortran.trim() != "False" {
            return Err(bad("Fortran-ordered arrays are not supported"));
        }
        let shape_text = dict_value(header, "shape").ok_or_else(|| bad("no 'shape' in header"))?;
        let shape = shape_text
            .trim_matches(|c| c == '(' || c == ')')
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>().map_err(|_| bad("bad shape")))
            .collect::<Result<Vec<_>, _>>()?;
        let size = shape
            .iter()
            .try_fold(dtype.size(), |acc, d| acc.checked_mul(*d))
            .ok_or_else(|| bad("shape too large"))?;
        let data = bytes
            .get(end..end.saturating_add(size))
            .ok_or_else(|| bad("data shorter than its shape says"))?
            .to_vec();
        Ok(Array { shape, dtype, data })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as `f32` (from `f4`, or `f8` narrowed).
    pub fn to_f32(&self) -> Result<Vec<f32>, NpyError> {
        match self.dtype {
            DType::F32 => Ok(self
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()),
            DType::F64 => Ok(self.to_f64()?.into_iter().map(|v| v as f32).collect()),
            DType::U8 => Err(NpyError::Format("expected floats, found u8".into())),
        }
    }

    /// The elements as `f64` (from `f8`, or `f4` widened).
    pub fn to_f64(&self) -> Result<Vec<f64>, NpyError> {
        match self.dtype {
            DType::F64 => Ok(self
                .data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")))
                .collect()),
            DType::F32 => Ok(self.to_f32()?.into_iter().map(f64::from).collect()),
            DType::U8 => Err(NpyError::Format("expected floats, found u8".into())),
        }
    }
}

/// Finds the value text of `'key': value` in a numpy header dict.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("'{key}':");
    let at = header.find(&pat)? + pat.len();
    let rest = header[at..].trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(&rest[..end])
}

fn to_bytes(shape: &[usize], dtype: DType, data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
        dtype.descr(),
        shape_text
    );
    // Pad so that the data starts on a 64-byte boundary, header ends with '\n'.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Serialises an `f32` array as `.npy` bytes.
pub fn to_bytes_f32(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    to_bytes(shape, DType::F32, &data)
}

/// Serialises an `f64` array as `.npy` bytes.
pub fn to_bytes_f64(shape: &[usize], values: &[f64]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    to_bytes(shape, DType::F64, &data)
}

/// Serialises a `u8` array as `.npy` bytes.
pub fn to_bytes_u8(shape: &[usize], values: &[u8]) -> Vec<u8> {
    to_bytes(shape, DType::U8, values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_each_dtype() {
        let a = Array::parse(&to_bytes_f64(&[3], &[1.5, -2.0, 3.25])).unwrap();
        assert_eq!(a.shape, vec![3]);
        assert_eq!(a.to_f64().unwrap(), vec![1.5, -2.0, 3.25]);
        let b = Array::parse(&to_bytes_u8(&[1, 2, 2], &[1, 2, 3, 4])).unwrap();
        assert_eq!(
            (b.dtype, b.shape.clone(), b.data),
            (DType::U8, vec![1, 2, 2], vec![1, 2, 3, 4])
        );
        let c = to_bytes_f32(&[2, 3], &[0.0; 6]);
        assert_eq!((c.len() - 24) % 64, 0, "data is 64-byte aligned");
    }

    #[test]
    fn rejects_bad_input() {
        assert!(Array::parse(b"not numpy at all").is_err());
        let mut short = to_bytes_f32(&[4], &[1.0, 2.0, 3.0, 4.0]);
        short.truncate(short.len() - 3);
        assert!(Array::parse(&short)
            .unwrap_err()
            .to_string()
            .contains("shorter"));
    }
}
