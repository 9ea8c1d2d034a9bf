//! Debian's headless chromium driven through chromedriver (fantoccini), shared by the browser
//! tests: the page of `fruits serve` and the run report.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder};

const DRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver on a free port, killed when dropped (even when an assertion fails).
pub struct Browser {
    driver: Child,
    port: u16,
    profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts chromedriver, or says why not (`None`: skipped, a failure under `CI=true`).
    pub fn start() -> Option<Browser> {
        if !Path::new(DRIVER).exists() || !Path::new(CHROMIUM).exists() {
            fruits_testkit::skip(
                "chromium and chromium-driver (Debian packages) are not installed",
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(DRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        Some(Browser {
            driver,
            port,
            profile: tempfile::tempdir().unwrap(),
        })
    }

    /// A headless chromium session in a `width` x `height` window, recording the console and
    /// the network (see [`log`]).
    pub async fn session(&self, width: u32, height: u32) -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", self.profile.path().display()),
                ],
            }),
        );
        caps.insert(
            "goog:loggingPrefs".into(),
            serde_json::json!({"browser": "ALL", "performance": "ALL"}),
        );
        for _ in 0..50 {
            match ClientBuilder::rustls()
                .expect("a TLS backend")
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{}", self.port))
                .await
            {
                Ok(c) => return c,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        panic!("chromedriver does not answer");
    }
}

/// chromedriver's log of `kind` (`browser`: the console; `performance`: DevTools events,
/// the network among them) since the last call.
#[derive(Debug)]
struct GetLog(&'static str);

impl WebDriverCompatibleCommand for GetLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(serde_json::json!({ "type": self.0 }).to_string()),
        )
    }
}

/// The entries of log `kind` ([`GetLog`]).
pub async fn log(c: &Client, kind: &'static str) -> Vec<serde_json::Value> {
    match c.issue_cmd(GetLog(kind)).await.expect("chromedriver's log") {
        serde_json::Value::Array(entries) => entries,
        other => panic!("a log is a list, not {other}"),
    }
}

/// Console messages at level SEVERE (errors) in the `browser` log entries.
pub fn console_errors(entries: &[serde_json::Value]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].to_string())
        .collect()
}

/// The URLs of every request the page made, from `performance` log entries.
pub fn requests(entries: &[serde_json::Value]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(e["message"].as_str()?).ok())
        .filter(|m| m["message"]["method"] == "Network.requestWillBeSent")
        .filter_map(|m| {
            m["message"]["params"]["request"]["url"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}
