//! Keras HDF5 weights files, read without the HDF5 C library.
//!
//! Keras 2 (`model.save_weights` / the files `keras.applications` downloads) writes HDF5 with
//! the original file format: a version-0 superblock, groups as symbol tables (v1 B-trees and
//! local heaps), version-1 object headers, and each weight as a contiguous (or compact)
//! little-endian `float32` dataset at `<layer>/<layer>/<weight>:0`. This module walks exactly
//! that subset and maps Keras layer names to the TF-slim names the network uses. Anything else
//! (chunked or compressed data, newer superblocks) is refused with a clear error.

use std::path::Path;

use fruits_model::Tensors;

use crate::WeightsError;

/// Reads every float32 dataset of a Keras weights file into TF-slim named tensors.
pub(crate) fn read(path: &Path) -> Result<Tensors, WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let fail = |m: String| WeightsError::Format(format!("{}: {m}", path.display()));
    let file = H5 { b: &bytes };
    let mut datasets = Vec::new();
    file.walk_root(&mut datasets).map_err(fail)?;
    let mut t = Tensors::new(path.display().to_string());
    for (name, header) in datasets {
        let Some(slim) = slim_name(&name) else {
            continue;
        };
        let (shape, values) = file
            .read_f32_dataset(header)
            .map_err(|m| fail(format!("{name}: {m}")))?;
        t.insert(slim, shape, values);
    }
    if t.is_empty() {
        return Err(fail(
            "no Keras MobileNetV2 weights found in this HDF5 file".into(),
        ));
    }
    Ok(t)
}

/// `block_3_expand/block_3_expand/kernel:0` → `expanded_conv_3_expand_weights`, etc.
fn slim_name(dataset: &str) -> Option<String> {
    let mut parts = dataset.rsplit('/');
    let weight = parts.next()?.strip_suffix(":0")?;
    let layer = parts.next()?;
    let (layer, bn) = match layer
        .strip_suffix("_BN")
        .or_else(|| layer.strip_suffix("_bn"))
    {
        Some(l) => (l, true),
        None => match layer.strip_prefix("bn_") {
            Some(l) => (l, true),
            None => (layer, false),
        },
    };
    let prefix = match layer {
        "Conv1" => "Conv".to_string(),
        "Conv_1" => "Conv_1".to_string(),
        l if l.starts_with("expanded_conv_") => l.to_string(),
        l => {
            let rest = l.strip_prefix("block_")?;
            format!("expanded_conv_{rest}")
        }
    };
    let suffix = match (bn, weight) {
        (false, "kernel") => "weights".to_string(),
        (false, "depthwise_kernel") => "depthwise_weights".to_string(),
        (true, w @ ("gamma" | "beta" | "moving_mean" | "moving_variance")) => {
            format!("BatchNorm_{w}")
        }
        _ => return None,
    };
    Some(format!("{prefix}_{suffix}"))
}

type R<T> = Result<T, String>;

struct H5<'a> {
    b: &'a [u8],
}

impl<'a> H5<'a> {
    fn bytes(&self, at: usize, n: usize) -> R<&'a [u8]> {
        at.checked_add(n)
            .and_then(|end| self.b.get(at..end))
            .ok_or_else(|| format!("truncated file (needed {n} bytes at offset {at})"))
    }
    fn u8(&self, at: usize) -> R<u8> {
        Ok(self.bytes(at, 1)?[0])
    }
    fn u16(&self, at: usize) -> R<u16> {
        let b = self.bytes(at, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&self, at: usize) -> R<u32> {
        let b = self.bytes(at, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&self, at: usize) -> R<usize> {
        let b = self.bytes(at, 8)?;
        usize::try_from(u64::from_le_bytes(b.try_into().map_err(|_| "short read")?))
            .map_err(|e| e.to_string())
    }

    /// Checks the superblock and walks the root group.
    fn walk_root(&self, out: &mut Vec<(String, usize)>) -> R<()> {
        if self.bytes(0, 8)? != b"\x89HDF\r\n\x1a\n" {
            return Err("not an HDF5 file".into());
        }
        let version = self.u8(8)?;
        if version > 1 {
            return Err(format!(
                "HDF5 superblock version {version} is not supported (Keras 2 writes 0)"
            ));
        }
        if self.u8(13)? != 8 || self.u8(14)? != 8 {
            return Err("only 8-byte offsets and lengths are supported".into());
        }
        // Version 0: 24 bytes of fixed fields + 4 addresses, then the root symbol table entry;
        // version 1 adds 4 bytes (indexed storage K + reserved).
        let root_entry = 24 + if version == 1 { 4 } else { 0 } + 4 * 8;
        let header = self.u64(root_entry + 8)?;
        self.walk_group(header, "", out, 0)
    }

    fn walk_group(
        &self,
        header: usize,
        path: &str,
        out: &mut Vec<(String, usize)>,
        depth: usize,
    ) -> R<()> {
        if depth > 16 {
            return Err("groups nested too deep".into());
        }
        let messages = self.messages(header)?;
        let Some(&(_, st)) = messages.iter().find(|(t, _)| *t == 0x0011) else {
            // Not a group: a dataset (it has a layout message) or something to ignore.
            if messages.iter().any(|(t, _)| *t == 0x0008) {
                out.push((path.to_string(), header));
            }
            return Ok(());
        };
        let (btree, heap) = (self.u64(st)?, self.u64(st + 8)?);
        if self.bytes(heap, 4)? != b"HEAP" {
            return Err(format!("bad local heap at {heap}"));
        }
        let heap_data = self.u64(heap + 24)?;
        let mut entries = Vec::new();
        self.group_btree(btree, &mut entries, 0)?;
        for (name_offset, child) in entries {
            let name = self.c_string(heap_data + name_offset)?;
            let child_path = if path.is_empty() {
                name
            } else {
                format!("{path}/{name}")
            };
            self.walk_group(child, &child_path, out, depth + 1)?;
        }
        Ok(())
    }

    /// Collects `(link name heap offset, object header address)` of a group's v1 B-tree.
    fn group_btree(&self, node: usize, out: &mut Vec<(usize, usize)>, depth: usize) -> R<()> {
        if depth > 32 {
            return Err("B-tree too deep".into());
        }
        if self.bytes(node, 4)? != b"TREE" || self.u8(node + 4)? != 0 {
            return Err(format!("bad group B-tree node at {node}"));
        }
        let level = self.u8(node + 5)?;
        let used = self.u16(node + 6)? as usize;
        // Keys (8 bytes) and children (8 bytes) alternate after the 24-byte node header.
        for i in 0..used {
            let child = self.u64(node + 24 + 8 + i * 16)?;
            if level > 0 {
                self.group_btree(child, out, depth + 1)?;
                continue;
            }
            if self.bytes(child, 4)? != b"SNOD" {
                return Err(format!("bad symbol table node at {child}"));
            }
            let n = self.u16(child + 6)? as usize;
            for e in 0..n {
                let entry = child + 8 + e * 40;
                out.push((self.u64(entry)?, self.u64(entry + 8)?));
            }
        }
        Ok(())
    }

    fn c_string(&self, at: usize) -> R<String> {
        let rest = self.b.get(at..).ok_or("name outside the file")?;
        let end = rest
            .iter()
            .position(|&c| c == 0)
            .ok_or("unterminated name")?;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    }

    /// `(message type, data offset)` of a version-1 object header, following continuations.
    fn messages(&self, header: usize) -> R<Vec<(u16, usize)>> {
        if self.u8(header)? != 1 {
            return Err(format!(
                "object header at {header}: only version 1 headers are supported"
            ));
        }
        let total = self.u16(header + 2)? as usize;
        let mut blocks = vec![(header + 16, self.u32(header + 8)? as usize)];
        let mut out = Vec::new();
        while let Some((start, len)) = blocks.pop() {
            let mut at = start;
            while at + 8 <= start + len && out.len() < total {
                let (kind, size) = (self.u16(at)?, self.u16(at + 2)? as usize);
                let data = at + 8;
                if kind == 0x0010 {
                    blocks.push((self.u64(data)?, self.u64(data + 8)?));
                }
                out.push((kind, data));
                at = data + size.div_ceil(8) * 8;
            }
        }
        Ok(out)
    }

    /// Shape and values of a little-endian float32 dataset.
    fn read_f32_dataset(&self, header: usize) -> R<(Vec<usize>, Vec<f32>)> {
        let messages = self.messages(header)?;
        let find = |t: u16| messages.iter().find(|(k, _)| *k == t).map(|(_, d)| *d);
        let space = find(0x0001).ok_or("no dataspace")?;
        let dtype = find(0x0003).ok_or("no datatype")?;
        let layout = find(0x0008).ok_or("no data layout")?;
        if find(0x000B).is_some() {
            return Err("filtered (compressed) datasets are not supported".into());
        }
        // Dataspace v1: version, rank, flags, 5 reserved; v2: version, rank, flags, type.
        let rank = self.u8(space + 1)? as usize;
        let dims_at = space + if self.u8(space)? == 1 { 8 } else { 4 };
        let shape = (0..rank)
            .map(|i| self.u64(dims_at + i * 8))
            .collect::<R<Vec<_>>>()?;
        let class = self.u8(dtype)? & 0x0F;
        let big_endian = self.u8(dtype + 1)? & 1 == 1;
        let size = self.u32(dtype + 4)?;
        if class != 1 || size != 4 || big_endian {
            return Err(format!(
                "expected little-endian float32, found class {class} of {size} bytes"
            ));
        }
        let bytes = shape
            .iter()
            .try_fold(4usize, |acc, d| acc.checked_mul(*d))
            .ok_or("dataset shape too large")?;
        let data = match (self.u8(layout)?, self.u8(layout + 1)?) {
            // Version 3: class 1 = contiguous (address, size), 0 = compact (size, data).
            (3, 1) => {
                let addr = self.u64(layout + 2)?;
                if addr == usize::MAX {
                    return Err("dataset has no data".into());
                }
                self.bytes(addr, bytes)?
            }
            (3, 0) => self.bytes(layout + 4, bytes)?,
            (1 | 2, _) if self.u8(layout + 2)? == 1 => self.bytes(self.u64(layout + 8)?, bytes)?,
            (v, c) => {
                return Err(format!(
                    "data layout version {v} class {c} is not supported"
                ))
            }
        };
        Ok((
            shape,
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keras_names_map_to_slim_names() {
        let cases = [
            ("Conv1/Conv1/kernel:0", "Conv_weights"),
            ("bn_Conv1/bn_Conv1/gamma:0", "Conv_BatchNorm_gamma"),
            (
                "expanded_conv_depthwise/expanded_conv_depthwise/depthwise_kernel:0",
                "expanded_conv_depthwise_depthwise_weights",
            ),
            (
                "expanded_conv_project_BN/expanded_conv_project_BN/moving_variance:0",
                "expanded_conv_project_BatchNorm_moving_variance",
            ),
            (
                "block_12_expand/block_12_expand/kernel:0",
                "expanded_conv_12_expand_weights",
            ),
            (
                "block_3_depthwise_BN/block_3_depthwise_BN/beta:0",
                "expanded_conv_3_depthwise_BatchNorm_beta",
            ),
            ("Conv_1/Conv_1/kernel:0", "Conv_1_weights"),
            (
                "Conv_1_bn/Conv_1_bn/moving_mean:0",
                "Conv_1_BatchNorm_moving_mean",
            ),
        ];
        for (keras, slim) in cases {
            assert_eq!(slim_name(keras).as_deref(), Some(slim), "{keras}");
        }
        assert_eq!(slim_name("Logits/Logits/bias:0"), None);
    }

    #[test]
    fn refuses_what_is_not_hdf5() {
        let dir = std::env::temp_dir().join(format!("fruits-h5-{}", std::process::id()));
        std::fs::write(&dir, b"<html>not weights</html>").unwrap();
        let err = read(&dir).unwrap_err().to_string();
        std::fs::remove_file(&dir).ok();
        assert!(
            err.contains("not an HDF5 file") || err.contains("truncated"),
            "{err}"
        );
    }
}
