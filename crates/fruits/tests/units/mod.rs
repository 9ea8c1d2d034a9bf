//! The systemd units under `deploy/systemd`, read as systemd reads them: shared by the tests
//! that start processes the way the units do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The repository's `deploy/` folder.
pub fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// `KEY=value` lines of an environment file (comments and blank lines skipped).
pub fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=value: {l}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The words of a unit's `ExecStart`, with `${VAR}` as they are (one word each, as systemd
/// splits them).
pub fn exec_start(unit: &str) -> Vec<String> {
    let text = std::fs::read_to_string(deploy().join("systemd").join(unit)).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("{unit} has no ExecStart"));
    line.split_whitespace().map(str::to_string).collect()
}

/// A unit's command line after `/usr/local/bin/fruits`, as systemd runs it: `${VAR}` from
/// `env`, and paths below /etc/fruits and /var/lib/fruits moved into `root`.
pub fn args(unit: &str, env: &BTreeMap<String, String>, root: &Path) -> Vec<String> {
    let words = exec_start(unit);
    assert_eq!(words[0], "/usr/local/bin/fruits", "{unit}");
    words[1..]
        .iter()
        .map(
            |w| match w.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
                Some(var) => env[var].clone(),
                None => w
                    .replace("/etc/fruits", &root.join("etc").display().to_string())
                    .replace("/var/lib/fruits", &root.join("lib").display().to_string()),
            },
        )
        .collect()
}
