//! Reading what a run printed and wrote, shared by the tests that run `fruits` (each uses
//! part of it).
#![allow(dead_code)]

use std::process::Output;

use fruits_testkit::Row;

/// What a run that could not complete printed: exactly one line on stderr, and exit 1.
pub fn one_line_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

/// Images per worker (by name), from the summary's `ran on cluster` lines.
pub fn workers(stdout: &str) -> std::collections::BTreeMap<String, u64> {
    stdout
        .lines()
        .filter_map(|l| {
            let (name, n) = l
                .strip_prefix("  ")?
                .strip_suffix(" images")?
                .rsplit_once(": ")?;
            Some((name.to_string(), n.parse().unwrap()))
        })
        .collect()
}

/// `(resumed, featurised)` of a run's `resumed N images from an interrupted run, featurised
/// M` line; `None` where it resumed nothing.
pub fn resumed(stdout: &str) -> Option<(u64, u64)> {
    let rest = stdout.lines().find_map(|l| l.strip_prefix("resumed "))?;
    let (resumed, featurised) = rest.split_once(" images from an interrupted run, featurised ")?;
    Some((resumed.parse().ok()?, featurised.trim().parse().ok()?))
}

/// The photos a failed run's error line says it kept staged for the same command to resume.
pub fn kept(line: &str) -> u64 {
    let (before, _) = line
        .split_once(" photos featurised so far are kept: the same command resumes them")
        .unwrap_or_else(|| panic!("nothing kept: {line}"));
    let n = before.rsplit(['(', ' ']).next().unwrap_or_default();
    n.parse().unwrap_or_else(|_| panic!("{line}"))
}

/// Same rows, identical features, PCA equal to `tol` up to the sign of each component.
pub fn assert_same_result(a: &[Row], b: &[Row], tol: f32) {
    assert_eq!(a.len(), b.len());
    let k = a[0].3.len();
    for j in 0..k {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| (x.3[j] * y.3[j]) as f64).sum();
        let sign = if dot < 0.0 { -1.0 } else { 1.0 };
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x.3[j] - sign * y.3[j]).abs() < tol,
                "component {j} of {}",
                x.0
            );
        }
    }
    for (x, y) in a.iter().zip(b) {
        assert_eq!((&x.0, &x.1), (&y.0, &y.1));
        assert_eq!(x.2, y.2, "features of {}", x.0);
    }
}
