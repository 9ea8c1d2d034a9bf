//! The validation split: near-identical photos stay on the same side.
//!
//! Fruits-360 films each fruit rotating: `r_321_100.jpg` is frame 321 of the film `r` of its
//! class, and consecutive frames are near-duplicates. A random split puts frame 321 in
//! training and frame 322 in validation, and the accuracy it reports is that of recognising a
//! photo already seen. So photos are grouped into **runs**: same label, same film (the file
//! name before its frame number) and frame numbers in the same block of [`RUN_FRAMES`].
//! Class by class, the runs are put in a seeded, hashed order and moved to validation until
//! `fraction` of the class's photos are there (at least one run, if the class has two). A
//! name without a frame number is a run of its own. The same seed gives the same split.

use std::collections::BTreeMap;

/// Consecutive frame numbers per run.
pub const RUN_FRAMES: u64 = 32;

/// The run a photo belongs to: `label / film / block`, or `label / name` without a frame.
pub fn run_key(path: &str, label: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
    let tokens: Vec<&str> = stem.split('_').collect();
    let numeric = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    // `[film_]FRAME_SIZE` (Fruits-360) or `[film_]FRAME`.
    let at = match tokens.as_slice() {
        [.., f, s] if numeric(f) && numeric(s) => Some(tokens.len() - 2),
        [.., f] if numeric(f) => Some(tokens.len() - 1),
        _ => None,
    };
    match at.and_then(|i| tokens[i].parse::<u64>().ok().map(|f| (i, f))) {
        Some((i, frame)) => format!("{label}/{}/{}", tokens[..i].join("_"), frame / RUN_FRAMES),
        None => format!("{label}/{stem}"),
    }
}

fn hash(text: &str, seed: u64) -> u64 {
    // FNV-1a, seeded: stable across platforms and versions.
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// For each photo, whether it goes to validation (see the module doc).
pub fn split(paths: &[String], labels: &[String], fraction: f64, seed: u64) -> Vec<bool> {
    let mut runs: BTreeMap<&str, BTreeMap<String, Vec<usize>>> = BTreeMap::new();
    for (i, (path, label)) in paths.iter().zip(labels).enumerate() {
        runs.entry(label.as_str())
            .or_default()
            .entry(run_key(path, label))
            .or_default()
            .push(i);
    }
    let mut validation = vec![false; paths.len()];
    for class_runs in runs.values() {
        let total: usize = class_runs.values().map(Vec::len).sum();
        let mut order: Vec<(&String, &Vec<usize>)> = class_runs.iter().collect();
        order.sort_by_key(|(key, _)| hash(key, seed));
        let want = (fraction * total as f64).round() as usize;
        let mut taken = 0;
        for (k, (_, rows)) in order.iter().enumerate() {
            let last = k + 1 == order.len();
            if last || (taken >= want && k > 0) {
                break;
            }
            rows.iter().for_each(|&i| validation[i] = true);
            taken += rows.len();
        }
    }
    validation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_follow_film_and_frame_blocks() {
        assert_eq!(
            run_key("s3://b/Test/Kiwi/r_321_100.jpg", "Kiwi"),
            "Kiwi/r/10"
        );
        assert_eq!(run_key("Kiwi/322_100.jpg", "Kiwi"), "Kiwi//10");
        assert_eq!(run_key("Kiwi/r2_31_100.jpg", "Kiwi"), "Kiwi/r2/0");
        assert_eq!(run_key("Kiwi/7.png", "Kiwi"), "Kiwi//0");
        assert_eq!(run_key("Kiwi/IMG_a.jpg", "Kiwi"), "Kiwi/IMG_a");
    }

    #[test]
    fn whole_runs_move_and_every_class_keeps_both_sides() {
        let mut paths = Vec::new();
        let mut labels = Vec::new();
        for class in ["A", "B"] {
            for frame in 0..200 {
                paths.push(format!("{class}/r_{frame}_100.jpg"));
                labels.push(class.to_string());
            }
        }
        let v = split(&paths, &labels, 0.2, 7);
        assert_eq!(v, split(&paths, &labels, 0.2, 7), "deterministic");
        for class in ["A", "B"] {
            let rows: Vec<usize> = (0..paths.len()).filter(|&i| labels[i] == class).collect();
            let val = rows.iter().filter(|&&i| v[i]).count();
            assert!(val > 0 && val < rows.len(), "{class}: {val}");
            assert!(
                (val as f64 / rows.len() as f64 - 0.2).abs() < 0.2,
                "{class}: {val}"
            );
        }
        // A run is never cut: every block of frames is on one side.
        let mut side = BTreeMap::new();
        for (i, p) in paths.iter().enumerate() {
            let key = run_key(p, &labels[i]);
            assert_eq!(*side.entry(key).or_insert(v[i]), v[i], "{p}");
        }
    }
}
