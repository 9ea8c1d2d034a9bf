//! The deployment files under `deploy/` against the binary they deploy: the systemd units'
//! command lines, with the variables of `fruits.env`, start a real scheduler and a real
//! executor that registers with it; the settings file names every variable the units use.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// `KEY=value` lines of an environment file (comments and blank lines skipped).
fn env_file(path: &Path) -> BTreeMap<String, String> {
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
fn exec_start(unit: &str) -> Vec<String> {
    let text = std::fs::read_to_string(deploy().join("systemd").join(unit)).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("{unit} has no ExecStart"));
    line.split_whitespace().map(str::to_string).collect()
}

/// The variables `${VAR}` a command line uses.
fn variables(words: &[String]) -> Vec<String> {
    words
        .iter()
        .filter_map(|w| w.strip_prefix("${")?.strip_suffix('}').map(str::to_string))
        .collect()
}

/// Runs a unit's command line as systemd would: `/usr/local/bin/fruits` is the binary under
/// test, `${VAR}` comes from `env`, and paths below /etc/fruits and /var/lib/fruits are moved
/// into `root`.
fn start_unit(unit: &str, env: &BTreeMap<String, String>, root: &Path) -> (Child, String) {
    let words = exec_start(unit);
    assert_eq!(words[0], "/usr/local/bin/fruits", "{unit}");
    let args: Vec<String> = words[1..]
        .iter()
        .map(
            |w| match w.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
                Some(var) => env[var].clone(),
                None => w
                    .replace("/etc/fruits", &root.join("etc").display().to_string())
                    .replace("/var/lib/fruits", &root.join("lib").display().to_string()),
            },
        )
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fruits"))
        .args(&args)
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_settings_file_names_every_variable_of_the_units() {
    let env = env_file(&deploy().join("systemd/fruits.env"));
    for unit in ["fruits-scheduler.service", "fruits-executor.service"] {
        for var in variables(&exec_start(unit)) {
            assert!(
                env.contains_key(&var),
                "{unit} uses {var}, absent from fruits.env"
            );
        }
    }
    // The bootstrap script writes the same variables.
    let bootstrap = std::fs::read_to_string(deploy().join("bootstrap.sh")).unwrap();
    for var in env
        .keys()
        .filter(|k| k.starts_with("FRUITS_") && *k != "FRUITS_WEIGHTS")
    {
        assert!(
            bootstrap.contains(&format!("{var}=")),
            "bootstrap.sh does not set {var}"
        );
    }
}

#[test]
fn the_units_command_lines_start_a_cluster() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::create_dir_all(root.path().join("lib/work")).unwrap();
    std::fs::write(
        root.path().join("etc/cluster.token"),
        "deploy-test-token-0123456789abcdef",
    )
    .unwrap();
    // The example settings, with this machine's loopback addresses.
    let mut env = env_file(&deploy().join("systemd/fruits.env"));
    let (scheduler, flight) = (free_port(), free_port());
    env.insert(
        "FRUITS_SCHEDULER_BIND".into(),
        format!("127.0.0.1:{scheduler}"),
    );
    env.insert("FRUITS_SCHEDULER".into(), format!("127.0.0.1:{scheduler}"));
    env.insert("FRUITS_EXECUTOR_BIND".into(), format!("127.0.0.1:{flight}"));
    env.insert("FRUITS_EXTERNAL_HOST".into(), "127.0.0.1".into());
    let (mut s, line) = start_unit("fruits-scheduler.service", &env, root.path());
    assert!(
        line.contains(&format!("listening on 127.0.0.1:{scheduler}")),
        "{line}"
    );
    let (mut e, line) = start_unit("fruits-executor.service", &env, root.path());
    assert!(
        line.contains(&format!("registered with 127.0.0.1:{scheduler}")),
        "{line}"
    );
    // systemd stops them with SIGTERM: both exit.
    for child in [&mut e, &mut s] {
        // SAFETY: kill(2) of a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        let status = child.wait().unwrap();
        assert!(
            status.success()
                || std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGTERM),
            "{status}"
        );
    }
}
