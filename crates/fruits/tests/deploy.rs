//! The deployment files under `deploy/` against the binary they deploy: the systemd units'
//! command lines, with the variables of `fruits.env`, start a real scheduler and a real
//! executor that registers with it; the settings file names every variable the units use.

mod units;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use units::{deploy, env_file, exec_start};

/// The variables `${VAR}` a command line uses.
fn variables(words: &[String]) -> Vec<String> {
    words
        .iter()
        .filter_map(|w| w.strip_prefix("${")?.strip_suffix('}').map(str::to_string))
        .collect()
}

/// Runs a unit's command line as systemd would ([`units::args`]); returns the process and
/// its first line on stdout, or, where it printed none, what it wrote to stderr.
fn start_unit(unit: &str, env: &BTreeMap<String, String>, root: &Path) -> (Child, String) {
    let args = units::args(unit, env, root);
    let stderr = root.join(format!("{unit}.stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_fruits"))
        .args(&args)
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.is_empty() {
        line = format!(
            "{unit} ended without a line; its stderr: {}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
    }
    (child, line)
}

/// A free port on the loopback whose next port is free too: an executor serves Flight on
/// the port it is given and gRPC on the next one.
fn free_port_pair() -> u16 {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
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
    let scheduler = free_port_pair();
    // Neither port of the executor may be the scheduler's.
    let flight = std::iter::repeat_with(free_port_pair)
        .find(|p| p.abs_diff(scheduler) > 1)
        .unwrap();
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
        fruits_testkit::signal(child, libc::SIGTERM);
        let status = child.wait().unwrap();
        assert!(
            status.success()
                || std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGTERM),
            "{status}"
        );
    }
}

/// `fruits SUBCOMMAND --help`.
fn help(subcommand: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fruits"))
        .args([subcommand, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "fruits {subcommand} --help");
    String::from_utf8(out.stdout).unwrap()
}

/// Every `fruits` command line in the compose file and the Kubernetes manifests.
fn container_commands(docs: &serde_json::Value) -> Vec<Vec<String>> {
    let words = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_string())
            .collect()
    };
    let mut found = Vec::new();
    let mut visit = vec![docs];
    while let Some(v) = visit.pop() {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map {
                    if (k == "command" || k == "args") && child.is_array() {
                        found.push(words(child));
                    } else {
                        visit.push(child);
                    }
                }
            }
            serde_json::Value::Array(items) => visit.extend(items),
            _ => {}
        }
    }
    found
}

#[test]
fn container_files_are_well_formed_and_use_flags_fruits_has() {
    let Some(python) = std::env::var_os("FRUITS_PYTHON") else {
        fruits_testkit::skip("FRUITS_PYTHON (a python with PyYAML) not set");
        return;
    };
    let files = [
        deploy().join("compose.yaml"),
        deploy().join("kubernetes/fruits.yaml"),
    ];
    let out = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([list(yaml.safe_load_all(open(f))) for f in sys.argv[1:]]))",
        ])
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let commands = container_commands(&docs);
    let subcommands: Vec<&str> = commands.iter().map(|c| c[0].as_str()).collect();
    for want in ["scheduler", "executor", "extract"] {
        assert!(subcommands.contains(&want), "no {want} in {subcommands:?}");
    }
    for command in &commands {
        let text = help(&command[0]);
        for flag in command.iter().filter(|w| w.starts_with("--")) {
            assert!(
                text.contains(flag.as_str()),
                "fruits {} has no {flag}",
                command[0]
            );
        }
    }
    // The image runs the binary the units name, as the user they name.
    let dockerfile = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/fruits\"]"));
    assert!(dockerfile.contains("USER fruits"));
    assert_eq!(
        exec_start("fruits-executor.service")[0],
        "/usr/local/bin/fruits"
    );
}
