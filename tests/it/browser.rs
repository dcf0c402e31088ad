//! A headless Chromium driven over WebDriver (Debian's `chromium` and `chromedriver`, which
//! scripts/services.sh installs): just the commands the console's tests use, spoken as the
//! W3C WebDriver protocol over HTTP. Elements are found the way a user finds them — by the
//! text of their label or button — so a control without an accessible name cannot be found.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
    pub downloads: tempfile::TempDir,
}

fn binary(var: &str) -> String {
    let path = std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the suite through scripts/run-tests.sh (scripts/services.sh installs Chromium and ChromeDriver)")
    });
    assert!(Path::new(&path).is_file(), "{path} does not exist");
    path
}

impl Browser {
    /// A fresh browser (its own profile and download directory) at `width`×`height`.
    pub async fn start(width: u32, height: u32) -> Browser {
        let chromium = binary("LEDGER_TEST_CHROMIUM");
        let driver_bin = binary("LEDGER_TEST_CHROMEDRIVER");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let downloads = tempfile::tempdir().unwrap();
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:loggingPrefs": {"browser": "ALL"},
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", format!("--window-size={width},{height}")],
                    "prefs": {"download.default_directory": downloads.path(),
                              "download.prompt_for_download": false},
                },
            }}}))
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        Browser {
            driver,
            http,
            session: format!("{base}/session/{session}"),
            downloads,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .expect("webdriver")
            .json()
            .await
            .unwrap();
        if answer["value"].get("error").is_some() {
            panic!("webdriver {path}: {}", answer["value"]);
        }
        answer["value"].clone()
    }

    async fn try_command(&self, method: reqwest::Method, path: &str, body: Value) -> Option<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if !body.is_null() {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.ok()?.json().await.ok()?;
        (answer["value"].get("error").is_none()).then(|| answer["value"].clone())
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// The first element of an XPath, waiting up to 10 s for it to be there and shown.
    pub async fn find(&self, xpath: &str) -> Element<'_> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(found) = self
                .try_command(
                    reqwest::Method::POST,
                    "/element",
                    json!({"using": "xpath", "value": xpath}),
                )
                .await
            {
                let el = Element {
                    browser: self,
                    id: found[ELEMENT].as_str().unwrap().to_owned(),
                };
                if el.shown().await {
                    return el;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "no visible element {xpath}\npage: {}\nbrowser log: {}",
                    self.text().await,
                    self.log().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The form control labelled `label` (its `<label for>`).
    pub async fn field(&self, label: &str) -> Element<'_> {
        self.find(&format!(
            "//*[@id=//label[normalize-space()='{label}']/@for]"
        ))
        .await
    }

    /// The button (or link styled as one) named `name`, by its text or aria-label.
    pub async fn button(&self, name: &str) -> Element<'_> {
        self.find(&format!(
            "//*[(self::button or self::a) and (normalize-space()='{name}' or @aria-label='{name}')]"
        ))
        .await
    }

    /// Confirms the open dialog with its button `verb`.
    pub async fn confirm(&self, verb: &str) {
        self.find(&format!("//dialog//button[normalize-space()='{verb}']"))
            .await
            .click()
            .await;
    }

    /// Waits up to `secs` for the page's text to contain `text`.
    pub async fn wait_text(&self, text: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let body = self.run("return document.body.innerText;", json!([])).await;
            if body.as_str().is_some_and(|b| b.contains(text)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the page did not show {text:?} within {secs}s: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every shown control without an accessible name (as Chromium computes it for assistive
    /// technology), by its HTML.
    pub async fn unnamed_controls(&self) -> Vec<String> {
        let found = self
            .command(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "xpath", "value": "//a | //button | //input | //select | //textarea | //summary"})),
            )
            .await;
        let mut unnamed = Vec::new();
        for item in found.as_array().unwrap() {
            let el = Element {
                browser: self,
                id: item[ELEMENT].as_str().unwrap().to_owned(),
            };
            if !el.shown().await {
                continue;
            }
            let label = self
                .try_command(
                    reqwest::Method::GET,
                    &format!("/element/{}/computedlabel", el.id),
                    json!(null),
                )
                .await
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            if label.trim().is_empty() {
                let html = self
                    .run("return arguments[0].outerHTML;", json!([{ELEMENT: el.id}]))
                    .await;
                unnamed.push(html.as_str().unwrap_or_default().to_owned());
            }
        }
        unnamed
    }

    /// The page's script errors and policy refusals so far (network answers such as the
    /// API's 4xx are not errors of the page).
    pub async fn page_errors(&self) -> Vec<String> {
        let log = self
            .try_command(reqwest::Method::POST, "/se/log", json!({"type": "browser"}))
            .await
            .unwrap_or(json!([]));
        log.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["level"] == "SEVERE" && e["source"] != "network")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Presses keys in the focused element (`\u{E004}` Tab, `\u{E007}` Enter, or text).
    pub async fn keys(&self, keys: &str) {
        let active = self
            .command(reqwest::Method::GET, "/element/active", None)
            .await;
        let id = active[ELEMENT].as_str().unwrap().to_owned();
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": keys})),
        )
        .await;
    }

    /// The accessible name of the focused element.
    pub async fn focused(&self) -> String {
        let active = self
            .command(reqwest::Method::GET, "/element/active", None)
            .await;
        let id = active[ELEMENT].as_str().unwrap().to_owned();
        self.command(
            reqwest::Method::GET,
            &format!("/element/{id}/computedlabel"),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// What the page wrote to its console (errors, CSP refusals), for failure messages.
    pub async fn log(&self) -> String {
        self.try_command(reqwest::Method::POST, "/se/log", json!({"type": "browser"}))
            .await
            .map(|v| v.to_string())
            .unwrap_or_default()
    }

    pub async fn text(&self) -> String {
        self.run("return document.body.innerText;", json!([]))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A PNG of the viewport, saved at `path`.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let data = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// The file that appears in the download directory within 20 s, under its final name.
    pub async fn downloaded(&self) -> PathBuf {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let done: Vec<PathBuf> = std::fs::read_dir(self.downloads.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                // Chromium writes to a hidden or `.crdownload` file, then renames it.
                .filter(|p| p.extension().is_none_or(|e| e != "crdownload"))
                .filter(|p| {
                    !p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect();
            if let Some(file) = done.into_iter().next() {
                return file;
            }
            assert!(Instant::now() < deadline, "nothing was downloaded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session ends with the driver; chromedriver takes its browser down with it.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Element<'_> {
    async fn shown(&self) -> bool {
        self.browser
            .try_command(
                reqwest::Method::GET,
                &format!("/element/{}/displayed", self.id),
                json!(null),
            )
            .await
            .is_some_and(|v| v == true)
    }

    pub async fn click(&self) {
        self.browser
            .command(
                reqwest::Method::POST,
                &format!("/element/{}/click", self.id),
                Some(json!({})),
            )
            .await;
    }

    pub async fn type_text(&self, text: &str) {
        self.browser
            .command(
                reqwest::Method::POST,
                &format!("/element/{}/clear", self.id),
                Some(json!({})),
            )
            .await;
        self.browser
            .command(
                reqwest::Method::POST,
                &format!("/element/{}/value", self.id),
                Some(json!({"text": text})),
            )
            .await;
    }

    /// Chooses the `<option>` whose text is `text`.
    pub async fn choose(&self, text: &str) {
        let option = self
            .browser
            .command(
                reqwest::Method::POST,
                &format!("/element/{}/element", self.id),
                Some(json!({"using": "xpath", "value": format!("./option[normalize-space()='{text}']")})),
            )
            .await;
        let id = option[ELEMENT].as_str().unwrap().to_owned();
        self.browser
            .command(
                reqwest::Method::POST,
                &format!("/element/{id}/click"),
                Some(json!({})),
            )
            .await;
    }

    pub async fn attribute(&self, name: &str) -> Option<String> {
        self.browser
            .command(
                reqwest::Method::GET,
                &format!("/element/{}/attribute/{name}", self.id),
                None,
            )
            .await
            .as_str()
            .map(str::to_owned)
    }
}
