//! The deploy folder as an operator applies it: the alert rules load and fire only when they
//! should, the manifests parse and agree with the code (names, ports, probes, settings), and
//! the image runs `ledger serve` as an unprivileged user.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every YAML document of a file (`---` separated).
fn documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
        })
        .collect()
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut at = v;
    for key in path {
        at = &at[*key];
    }
    at.as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string in {v:?}"))
}

/// `promtool`, from Debian's prometheus package (scripts/services.sh installs it).
fn promtool(args: &[&str]) -> std::process::Output {
    std::process::Command::new("promtool")
        .args(args)
        .current_dir(repo().join("deploy/prometheus"))
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool cannot run ({e}): run scripts/services.sh, which installs it")
        })
}

/// The headings of the runbook as GitHub anchors.
fn runbook_anchors() -> Vec<String> {
    read(&repo().join("docs/runbook.md"))
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| {
            h.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

/// The source of the crate, to check that a metric an alert reads is one the code records.
fn source_text() -> String {
    fn walk(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&read(&path));
            }
        }
    }
    let mut out = String::new();
    walk(&repo().join("src"), &mut out);
    out
}

#[test]
fn the_alert_rules_load_and_fire_only_when_they_should() {
    let checked = promtool(&["check", "rules", "ledger-alerts.yml"]);
    let said = String::from_utf8_lossy(&checked.stdout).into_owned()
        + String::from_utf8_lossy(&checked.stderr).as_ref();
    assert!(checked.status.success(), "promtool check rules: {said}");
    assert!(said.contains("SUCCESS: 6 rules found"), "{said}");
    let tested = promtool(&["test", "rules", "ledger-alerts.test.yml"]);
    assert!(
        tested.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&tested.stdout),
        String::from_utf8_lossy(&tested.stderr)
    );

    let rules = documents(&repo().join("deploy/prometheus/ledger-alerts.yml"));
    let anchors = runbook_anchors();
    let source = source_text();
    let mut names = Vec::new();
    for rule in rules[0]["groups"][0]["rules"].as_sequence().unwrap() {
        let name = str_at(rule, &["alert"]);
        names.push(name.to_owned());
        let runbook = str_at(rule, &["annotations", "runbook"]);
        let anchor = runbook
            .strip_prefix("docs/runbook.md#")
            .unwrap_or_else(|| panic!("{name}: runbook {runbook} is not a runbook section"));
        assert_eq!(anchor, name.to_lowercase(), "{name}");
        assert!(
            anchors.iter().any(|a| a == anchor),
            "{name}: docs/runbook.md has no section #{anchor}"
        );
        assert!(!str_at(rule, &["labels", "severity"]).is_empty());
        // Every metric the rule reads is one the service records.
        let expr = str_at(rule, &["expr"]);
        let mut rest = expr;
        while let Some(at) = rest.find("ledger_") {
            let metric: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            assert!(
                source.contains(&format!("\"{metric}\"")),
                "{name} reads {metric}, which the code never records"
            );
            rest = &rest[at + metric.len()..];
        }
    }
    assert_eq!(
        names,
        [
            "ledgerJobRejectedSpike",
            "ledgerStalledJobs",
            "ledgerConsumerLag",
            "ledgerWsNotReady",
            "ledgerWebhookBacklog",
            "ledgerKeyUnavailable"
        ]
    );
}

/// Manifests of `deploy/k8s` by kind and name.
struct Manifests {
    by_name: HashMap<(String, String), Value>,
}

impl Manifests {
    fn load(files: &[PathBuf]) -> Self {
        let mut by_name = HashMap::new();
        for file in files {
            for doc in documents(file) {
                let kind = str_at(&doc, &["kind"]).to_owned();
                let name = str_at(&doc, &["metadata", "name"]).to_owned();
                assert!(
                    by_name.insert((kind.clone(), name.clone()), doc).is_none(),
                    "{kind}/{name} defined twice"
                );
            }
        }
        Manifests { by_name }
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.by_name
            .get(&(kind.to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("no {kind}/{name} in deploy/k8s"))
    }
}

/// The container's environment as the process sees it: the ConfigMap and the Secret it
/// loads (the example's placeholders replaced by well-formed values), then its own `env`.
fn environment(container: &Value, config: &Value, secret: &Value) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    for from in container["envFrom"].as_sequence().unwrap() {
        let source = if from["configMapRef"]["name"].as_str() == Some("ledger-config") {
            &config["data"]
        } else if from["secretRef"]["name"].as_str() == Some("ledger-secrets") {
            &secret["stringData"]
        } else {
            panic!("unknown envFrom {from:?}");
        };
        for (k, v) in source.as_mapping().unwrap() {
            let (k, v) = (k.as_str().unwrap(), v.as_str().unwrap());
            let v = if k == "APP_ENV_LEDGER_ENCRYPTION_KEY" {
                ledger::crypto::generate_key_base64()
            } else if k == "APP_ENV_SIGNING_KEY" {
                ledger::manifest::generate_key_pem()
            } else {
                v.to_owned()
            };
            vars.insert(k.to_owned(), v);
        }
    }
    for e in container["env"].as_sequence().unwrap() {
        vars.insert(
            str_at(e, &["name"]).to_owned(),
            str_at(e, &["value"]).to_owned(),
        );
    }
    vars
}

#[tokio::test]
async fn the_manifests_agree_with_the_code() {
    let dir = repo().join("deploy/k8s");
    let kustomization = &documents(&dir.join("kustomization.yaml"))[0];
    let listed: Vec<&str> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    // Every manifest is applied by the kustomization, but for the example Secret (real
    // secrets come from the secret store) and the Cilium policy (needs Cilium's CRDs).
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml"))
        .filter(|f| {
            !matches!(
                f.as_str(),
                "kustomization.yaml" | "secret.example.yaml" | "cilium-networkpolicy.yaml"
            )
        })
        .collect();
    on_disk.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, on_disk, "kustomization.yaml lists every manifest");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    let m = Manifests::load(&files);

    let defaults = ledger::config::Config::from_vars(&HashMap::new()).unwrap();
    let port = i64::from(defaults.port);
    let config = m.get("ConfigMap", "ledger-config");
    let secret = m.get("Secret", "ledger-secrets");

    for (name, role) in [("ledger-api", "api"), ("ledger-worker", "worker")] {
        let d = m.get("Deployment", name);
        let pod = &d["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["args"][0], "serve", "{name}");
        let http = c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "http")
            .unwrap_or_else(|| panic!("{name}: no port named http"));
        assert_eq!(http["containerPort"].as_i64(), Some(port), "{name}");
        for (probe, path) in [
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("startupProbe", "/healthz"),
        ] {
            assert_eq!(c[probe]["httpGet"]["path"], path, "{name} {probe}");
            assert_eq!(c[probe]["httpGet"]["port"], "http", "{name} {probe}");
        }
        // The settings the process starts with are valid, and give it its role.
        let vars = environment(c, config, secret);
        let parsed = ledger::config::Config::from_vars(&vars)
            .unwrap_or_else(|e| panic!("{name}: the manifests' settings are refused: {e}"));
        assert_eq!(
            (parsed.roles.api, parsed.roles.worker),
            (role == "api", role == "worker"),
            "{name}"
        );
        assert_eq!(parsed.port, defaults.port, "{name}");
        // And hold the production posture: an https JWKS and an audience, no dev key.
        assert_eq!(parsed.serving_problems(), Vec::<String>::new(), "{name}");
        // SIGTERM: the grace period outlasts the jobs' shutdown timeout.
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(
            grace * 1000 > parsed.shutdown_timeout.as_millis() as u64,
            "{name}: {grace}s does not cover {:?}",
            parsed.shutdown_timeout
        );
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_ne!(pod["securityContext"]["runAsUser"].as_i64(), Some(0));
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        // The pod template carries the labels the Service and policies select.
        assert_eq!(
            d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"],
            role
        );
        // Every path the read-only image writes to is a volume.
        let mounts: Vec<&str> = c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v["mountPath"].as_str().unwrap())
            .collect();
        assert!(
            mounts.contains(&"/tmp") && mounts.contains(&"/app/data"),
            "{name}"
        );
    }
    // XLSX rows are staged in a memory-backed /dev/shm on the workers.
    let worker = &m.get("Deployment", "ledger-worker")["spec"]["template"]["spec"];
    let shm = worker["containers"][0]["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["mountPath"] == "/dev/shm")
        .expect("the worker mounts /dev/shm");
    let volume = worker["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == shm["name"])
        .unwrap();
    assert_eq!(volume["emptyDir"]["medium"], "Memory");

    // The Service: the api only, on the code's port inside and 31060 outside.
    let service = m.get("Service", "ledger-api");
    assert_eq!(
        service["spec"]["selector"]["app.kubernetes.io/component"],
        "api"
    );
    let sp = &service["spec"]["ports"][0];
    assert_eq!(sp["port"].as_i64(), Some(port));
    assert_eq!(sp["targetPort"], "http");
    assert_eq!(sp["nodePort"].as_i64(), Some(31060));
    assert_eq!(service["spec"]["type"], "NodePort");

    // Traefik: PathPrefix of the API's base path, to the api's Service, and nothing else.
    let routes = m.get("IngressRoute", "ledger")["spec"]["routes"]
        .as_sequence()
        .unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(
        routes[0]["match"],
        format!("PathPrefix(`{}`)", ledger::api::BASE).as_str()
    );
    assert_eq!(routes[0]["services"][0]["name"], "ledger-api");
    assert_eq!(routes[0]["services"][0]["port"].as_i64(), Some(port));
    assert!(
        !m.by_name.keys().any(
            |(kind, name)| matches!(kind.as_str(), "IngressRoute" | "Ingress")
                && name.contains("worker")
        ),
        "worker pods take no HTTP traffic"
    );

    // The migration Job migrates.
    let job = m.get("Job", "ledger-migrate");
    let vars = environment(
        &job["spec"]["template"]["spec"]["containers"][0],
        config,
        secret,
    );
    let parsed = ledger::config::Config::from_vars(&vars)
        .unwrap_or_else(|e| panic!("ledger-migrate: settings refused: {e}"));
    assert!(parsed.run_mode_migrate, "RUN_MODE=migrate");

    // Network policy: the gateway reaches the api on the code's port; nothing reaches the
    // worker but the scrape.
    let api_policy = m.get("NetworkPolicy", "ledger-api");
    assert_eq!(
        api_policy["spec"]["ingress"][0]["ports"][0]["port"].as_i64(),
        Some(port)
    );
    let worker_policy = m.get("NetworkPolicy", "ledger-worker");
    let worker_from = serde_yaml_ng::to_string(&worker_policy["spec"]["ingress"]).unwrap();
    assert!(!worker_from.contains("traefik"), "{worker_from}");
    // Workers deliver webhooks to receivers anywhere: HTTPS egress to any address.
    let worker_to = serde_yaml_ng::to_string(&worker_policy["spec"]["egress"]).unwrap();
    assert!(
        worker_to.contains("0.0.0.0/0") && worker_to.contains("port: 443"),
        "{worker_to}"
    );

    // The probe paths answer on a running service.
    let app = crate::helpers::spawn_app().await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = reqwest::get(format!("{}{path}", app.base)).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    app.stop().await;
}

#[test]
fn the_image_runs_ledger_serve_as_an_unprivileged_user() {
    let dockerfile = read(&repo().join("deploy/Dockerfile"));
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let stages: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("FROM "))
        .map(|(i, _)| i)
        .collect();
    assert!(stages.len() >= 2, "multi-stage");
    assert!(dockerfile.contains("cargo build --release --locked"));
    let runtime = &lines[*stages.last().unwrap()..];
    assert!(
        runtime.iter().any(|l| l.starts_with("COPY --from=")),
        "the runtime stage takes the binary from the build stage"
    );
    let user = runtime
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets a USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("numeric uid");
    assert_ne!(uid, 0, "not root");
    let defaults = ledger::config::Config::from_vars(&HashMap::new()).unwrap();
    assert!(runtime.contains(&format!("EXPOSE {}", defaults.port).as_str()));
    assert!(runtime.contains(&r#"ENTRYPOINT ["/usr/local/bin/ledger"]"#));
    assert!(runtime.contains(&r#"CMD ["serve"]"#));
    // The build context leaves the developer's target dir and data out.
    let ignore = read(&repo().join(".dockerignore"));
    for path in ["target/", "data/", ".git/"] {
        assert!(ignore.lines().any(|l| l.trim() == path), "{path}");
    }
}

/// The argv the migration Job's container runs: its `args`, or else the image's `CMD`
/// (a Job without `command` keeps the image's `ENTRYPOINT`, the `ledger` binary).
fn job_arguments(job: &Value) -> Vec<String> {
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert!(
        container["command"].is_null(),
        "the Job keeps the image's entrypoint"
    );
    if let Some(args) = container["args"].as_sequence() {
        return args
            .iter()
            .map(|a| a.as_str().expect("string args").to_owned())
            .collect();
    }
    let dockerfile = read(&repo().join("deploy/Dockerfile"));
    let cmd = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("CMD "))
        .expect("the image has a CMD");
    serde_json::from_str(cmd).expect("CMD in exec form")
}

#[test]
fn the_migration_job_migrates_and_exits_instead_of_serving() {
    let job = documents(&repo().join("deploy/k8s/migrate-job.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "Job")
        .expect("a Job in migrate-job.yaml");
    let args = job_arguments(&job);
    let run_mode = job["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "RUN_MODE")
        .map(|e| str_at(e, &["value"]).to_owned());
    // The real binary with the Job's arguments and RUN_MODE, on a SQLite job store; the
    // port settings only matter if it wrongly serves.
    let data = tempfile::tempdir().expect("tempdir");
    let mut cmd = crate::helpers::ledger_command();
    cmd.args(&args)
        .env("APP_ENV_DATA_DIR", data.path())
        .env("APP_ENV_HOST", "127.0.0.1")
        .env("APP_ENV_PORT", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(mode) = &run_mode {
        cmd.env("RUN_MODE", mode);
    }
    let mut child = cmd.spawn().expect("ledger runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`ledger {}` with RUN_MODE={run_mode:?} was still running after 30 s: the Job would serve instead of migrating",
                args.join(" ")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let output = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        status.success(),
        "ledger {args:?}: {status}\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("migrations: applied"),
        "the Job applies the migrations: {stdout}"
    );
}
