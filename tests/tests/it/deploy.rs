//! The Kubernetes manifests (`deploy/k8s`) and the container image (`deploy/Containerfile`):
//!
//! - every overlay renders with `kubectl kustomize` and `kubernetes-validate --strict` accepts
//!   each document for Kubernetes [`KUBERNETES_VERSION`];
//! - what the pods mount is what the binary reads: the mounted `lake.toml` parses as the
//!   archiver's configuration file, its `tables_dir` holds the table definitions, the Indexed
//!   Job's shards cover every table once, no credential sits in a ConfigMap or an argument, the
//!   grace period outlasts the shutdown timeout, the CronJob's failure policy follows the exit
//!   codes of `loglake nightly`;
//! - the command line of every container parses with the real binary (its arguments plus
//!   `--help`: clap checks each flag and value before it reaches `--help`, and needs no Kafka or
//!   S3);
//! - `scripts/image.sh` builds the image with buildah, and `loglake version` and the quickstart run
//!   in it as the non-root user.
//!
//! Tools: `kubectl` (on the machine), buildah and kubernetes-validate (scripts/install-test-deps.sh
//! installs both; `LOGLAKE_KUBERNETES_VALIDATE` names the latter). A missing tool fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use loglake_tests::{announce, loglake_bin, unique_name};
use serde_json::Value;

/// The Kubernetes version the manifests are validated against: podFailurePolicy is GA from 1.31.
const KUBERNETES_VERSION: &str = "1.31.0";
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";
const OVERLAYS: &[&str] = &["example", "example-sasl", "example-backfill"];
/// The image's user (deploy/Containerfile, scripts/image.sh).
const IMAGE_UID: i64 = 65532;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// `kubernetes-validate` of scripts/install-test-deps.sh.
fn kubernetes_validate() -> PathBuf {
    let p = std::env::var_os("LOGLAKE_KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("LOGLAKE_CACHE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/loglake")
                });
            cache.join(format!(
                "venv-kubernetes-validate-{KUBERNETES_VALIDATE_VERSION}/bin/kubernetes-validate"
            ))
        });
    assert!(
        p.exists(),
        "kubernetes-validate not found at {}: run scripts/install-test-deps.sh (or set \
         LOGLAKE_KUBERNETES_VALIDATE)",
        p.display()
    );
    p
}

/// `kubectl kustomize deploy/k8s/overlays/<overlay>`.
fn render(overlay: &str) -> String {
    let dir = repo().join("deploy/k8s/overlays").join(overlay);
    let out = run(Command::new("kubectl").arg("kustomize").arg(&dir));
    check(&format!("kubectl kustomize {}", dir.display()), &out);
    text(&out.stdout)
}

/// The documents of a rendered overlay as JSON, read by PyYAML of kubernetes-validate's venv.
/// A Secret's base64 `data` is decoded into `stringData`.
fn documents(yaml: &str) -> Vec<Value> {
    const TO_JSON: &str = "import base64, json, sys, yaml\n\
        docs = [d for d in yaml.safe_load_all(sys.stdin) if d]\n\
        for d in docs:\n\
        \x20   if d.get('kind') == 'Secret' and d.get('data'):\n\
        \x20       d.setdefault('stringData', {}).update({k: base64.b64decode(v).decode() for k, v in d.pop('data').items()})\n\
        json.dump(docs, sys.stdout)\n";
    let python = kubernetes_validate().with_file_name("python");
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(TO_JSON)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(yaml.as_bytes()).expect("write yaml");
    }
    let out = child.wait_with_output().expect("python");
    check("YAML to JSON", &out);
    match serde_json::from_slice(&out.stdout).expect("JSON") {
        Value::Array(docs) => docs,
        other => panic!("not a list: {other}"),
    }
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v}"))
}

fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("no integer at {pointer} in {v}"))
}

fn list<'a>(v: &'a Value, pointer: &str) -> &'a Vec<Value> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no list at {pointer} in {v}"))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// A workload of a rendered overlay: its kind and name, and its pod spec.
struct Workload<'a> {
    doc: &'a Value,
    name: String,
    pod: &'a Value,
}

fn workloads(docs: &[Value]) -> Vec<Workload<'_>> {
    docs.iter()
        .filter_map(|d| {
            let pointer = match d["kind"].as_str()? {
                "Deployment" | "Job" => "/spec/template/spec",
                "CronJob" => "/spec/jobTemplate/spec/template/spec",
                _ => return None,
            };
            Some(Workload {
                doc: d,
                name: format!("{} {}", s(d, "/kind"), s(d, "/metadata/name")),
                pod: d.pointer(pointer).expect("pod spec"),
            })
        })
        .collect()
}

/// Kubernetes' `$(VAR)` expansion of a container argument: `vars` holds what the pod defines.
/// A reference to an undefined variable fails (Kubernetes would pass it on verbatim).
fn expand(arg: &str, vars: &BTreeMap<String, String>, what: &str) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(i) = rest.find("$(") {
        out.push_str(&rest[..i]);
        let end = rest[i..]
            .find(')')
            .unwrap_or_else(|| panic!("{what}: unclosed $( in {arg:?}"));
        let name = &rest[i + 2..i + end];
        let value = vars
            .get(name)
            .unwrap_or_else(|| panic!("{what}: {arg:?} refers to ${name}, which is not defined"));
        out.push_str(value);
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    out
}

/// The variables a container's arguments may refer to, with example values: its `env` (a
/// `valueFrom` gets a placeholder) and, in an Indexed Job, `JOB_COMPLETION_INDEX`.
fn container_vars(w: &Workload<'_>, container: &Value, index: usize) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = s(e, "/name").to_string();
        let value = match e.get("value").and_then(Value::as_str) {
            Some(v) => v.to_string(),
            None => format!("{}-example", name.to_lowercase().replace('_', "-")),
        };
        vars.insert(name, value);
    }
    if w.doc
        .pointer("/spec/completionMode")
        .and_then(Value::as_str)
        == Some("Indexed")
    {
        vars.insert("JOB_COMPLETION_INDEX".into(), index.to_string());
    }
    vars
}

/// Writes the files of a pod's ConfigMap, Secret and projected volumes under `root`, at their
/// containers' mount paths (`root/etc/loglake/lake.toml`, ...). Returns the mount paths of
/// each kind of source: a file from a Secret may hold credentials, one from a ConfigMap must not.
fn materialize(docs: &[Value], w: &Workload<'_>, container: &Value, root: &Path) -> Vec<Mounted> {
    let mut files = Vec::new();
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let volume = list(w.pod, "/volumes")
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap_or_else(|| panic!("{}: no volume {}", w.name, m["name"]));
        let mount = s(m, "/mountPath");
        let sources: Vec<&Value> = if let Some(p) = volume.get("projected") {
            list(p, "/sources").iter().collect()
        } else {
            vec![volume]
        };
        for src in sources {
            let (kind, body, data) = if let Some(c) = src.get("configMap") {
                ("ConfigMap", c, "/data")
            } else if let Some(c) = src.get("secret") {
                ("Secret", c, "/stringData")
            } else {
                continue;
            };
            let name = c_name(body);
            let doc = find(docs, kind, name);
            let data = doc
                .pointer(data)
                .and_then(Value::as_object)
                .unwrap_or_else(|| panic!("{kind} {name} has no data"));
            let items: Vec<(String, String)> = match body.get("items").and_then(Value::as_array) {
                Some(items) => items
                    .iter()
                    .map(|i| (s(i, "/key").to_string(), s(i, "/path").to_string()))
                    .collect(),
                None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
            };
            for (key, path) in items {
                let content = data
                    .get(&key)
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("{}: {kind} {name} has no key {key}", w.name));
                let target = format!("{mount}/{path}");
                let file = root.join(target.trim_start_matches('/'));
                std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
                std::fs::write(&file, content).expect("write");
                files.push(Mounted {
                    path: target,
                    from_secret: kind == "Secret",
                });
            }
        }
    }
    files
}

/// The object a volume source names: `name` in a projected volume and for a ConfigMap volume,
/// `secretName` for a Secret volume.
fn c_name(body: &Value) -> &str {
    body["name"]
        .as_str()
        .or(body["secretName"].as_str())
        .expect("volume source name")
}

struct Mounted {
    path: String,
    from_secret: bool,
}

/// `--flag VALUE` of an argument list.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn container_args(c: &Value) -> Vec<String> {
    list(c, "/args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

#[test]
fn manifests_render_and_validate_strictly() {
    let validate = kubernetes_validate();
    let dir = tempfile::tempdir().expect("tmp");
    for overlay in OVERLAYS {
        let started = Instant::now();
        let yaml = render(overlay);
        let docs = documents(&yaml);
        let file = dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, &yaml).expect("write");
        let out = run(Command::new(&validate)
            .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
            .arg(&file));
        check(&format!("kubernetes-validate --strict {overlay}"), &out);
        // One `passed` line per document: none was skipped (an unknown kind only warns).
        let stdout = text(&out.stdout) + &text(&out.stderr);
        let passed = stdout
            .lines()
            .filter(|l| l.contains("passed for resource"))
            .count();
        assert_eq!(passed, docs.len(), "{overlay}: {stdout}");
        assert!(
            !stdout.contains("WARN"),
            "{overlay}: kubernetes-validate warned:\n{stdout}"
        );
        let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        for kind in [
            "Namespace",
            "ServiceAccount",
            "ConfigMap",
            "Secret",
            "Service",
            "Deployment",
            "PodDisruptionBudget",
            "CronJob",
            "NetworkPolicy",
        ] {
            assert!(kinds.contains(kind), "{overlay}: no {kind} in {kinds:?}");
        }
        if *overlay == "example-backfill" {
            let job = find(&docs, "Job", "loglake-backfill");
            assert_eq!(s(job, "/spec/completionMode"), "Indexed");
        }
        announce(&format!(
            "deploy: {overlay}: {} documents valid for Kubernetes {KUBERNETES_VERSION} ({:?})",
            docs.len(),
            started.elapsed()
        ));
    }
}

#[test]
fn manifests_mount_what_the_binary_reads_and_keep_secrets_out_of_configmaps_and_arguments() {
    // The base's table definitions are copies of schemas/tables (kustomize reads no file outside
    // its folder): they must not drift.
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    };
    let schemas = repo().join("schemas/tables");
    let copies = repo().join("deploy/k8s/base/tables");
    assert_eq!(names(&schemas), names(&copies), "deploy/k8s/base/tables");
    for f in names(&schemas) {
        assert_eq!(
            std::fs::read(schemas.join(&f)).expect("read"),
            std::fs::read(copies.join(&f)).expect("read"),
            "deploy/k8s/base/tables/{f} differs from schemas/tables/{f}: copy it again"
        );
    }
    let all_tables: BTreeSet<String> = loglake_schemas::load_table_dir(&schemas)
        .expect("schemas/tables")
        .into_iter()
        .map(|d| d.name)
        .collect();

    for overlay in OVERLAYS {
        let docs = documents(&render(overlay));
        for w in workloads(&docs) {
            let what = format!("{overlay}: {}", w.name);
            // Non-root, read-only root filesystem, /tmp writable.
            assert_eq!(
                int(w.pod, "/securityContext/runAsUser"),
                IMAGE_UID,
                "{what}"
            );
            assert_eq!(
                w.pod.pointer("/securityContext/runAsNonRoot"),
                Some(&Value::Bool(true)),
                "{what}"
            );
            assert_eq!(
                w.pod.pointer("/automountServiceAccountToken"),
                Some(&Value::Bool(false)),
                "{what}"
            );
            for c in list(w.pod, "/containers") {
                let what = format!("{what} container {}", s(c, "/name"));
                assert_eq!(c["command"], serde_json::json!(["/usr/local/bin/loglake"]));
                assert_eq!(
                    c.pointer("/securityContext/readOnlyRootFilesystem"),
                    Some(&Value::Bool(true)),
                    "{what}"
                );
                let tmp = list(c, "/volumeMounts")
                    .iter()
                    .find(|m| m["mountPath"] == "/tmp")
                    .unwrap_or_else(|| panic!("{what}: nothing mounted at /tmp"));
                let tmp_volume = list(w.pod, "/volumes")
                    .iter()
                    .find(|v| v["name"] == tmp["name"])
                    .expect("tmp volume");
                assert!(tmp_volume.get("emptyDir").is_some(), "{what}: /tmp");

                // Credentials: from Secrets only, as environment variables.
                let args = container_args(c);
                for a in &args {
                    let lower = a.to_lowercase();
                    for word in ["password", "secret", "sasl.", "aws_"] {
                        assert!(!lower.contains(word), "{what}: argument {a:?}");
                    }
                }
                for e in c["env"].as_array().into_iter().flatten() {
                    let name = s(e, "/name");
                    if name.starts_with("AWS_") {
                        assert!(
                            e.pointer("/valueFrom/secretKeyRef").is_some(),
                            "{what}: {name} must come from a Secret: {e}"
                        );
                    }
                }
                for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
                    let e = c["env"]
                        .as_array()
                        .and_then(|env| env.iter().find(|e| e["name"] == key))
                        .unwrap_or_else(|| panic!("{what}: no {key}"));
                    let secret = s(e, "/valueFrom/secretKeyRef/name");
                    let doc = find(&docs, "Secret", secret);
                    assert!(
                        doc.pointer(&format!("/stringData/{key}")).is_some(),
                        "{what}: Secret {secret} has no {key}"
                    );
                }

                // The configuration the pod mounts is what the binary reads.
                let indexes = match w.doc.pointer("/spec/completionMode") {
                    Some(m) if m == "Indexed" => int(w.doc, "/spec/completions") as usize,
                    _ => 1,
                };
                let root = tempfile::tempdir().expect("tmp");
                let mounted = materialize(&docs, &w, c, root.path());
                let host = |p: &str| root.path().join(p.trim_start_matches('/'));
                let config_path = flag(&args, "--config")
                    .unwrap_or_else(|| panic!("{what}: no --config in {args:?}"));
                assert_eq!(config_path, "/etc/loglake/lake.toml", "{what}");
                let config = mounted
                    .iter()
                    .find(|m| m.path == config_path)
                    .unwrap_or_else(|| panic!("{what}: {config_path} is not mounted"));
                let file = loglake_archiver::config::read_file_config(&host(config_path))
                    .unwrap_or_else(|e| panic!("{what}: the mounted lake.toml: {e}"));
                if !config.from_secret {
                    // A ConfigMap: no credential in [kafka] or [storage].
                    for k in file.kafka.0.keys() {
                        assert!(
                            !k.contains("password") && !k.starts_with("sasl."),
                            "{what}: [kafka] {k} in a ConfigMap"
                        );
                    }
                    for k in file.storage.0.keys() {
                        assert!(
                            ![
                                "AWS_ACCESS_KEY_ID",
                                "AWS_SECRET_ACCESS_KEY",
                                "AWS_SESSION_TOKEN"
                            ]
                            .contains(&k.as_str()),
                            "{what}: [storage] {k} in a ConfigMap"
                        );
                    }
                }
                for m in &mounted {
                    if !m.from_secret {
                        let content = std::fs::read_to_string(host(&m.path)).expect("read");
                        assert!(
                            !content.contains("sasl.password"),
                            "{what}: sasl.password in a ConfigMap ({})",
                            m.path
                        );
                    }
                }
                // The table definitions: the file's tables_dir, or --tables-dir per index.
                let mut seen: Vec<String> = Vec::new();
                for index in 0..indexes {
                    let vars = container_vars(&w, c, index);
                    let args: Vec<String> = args.iter().map(|a| expand(a, &vars, &what)).collect();
                    let dir = flag(&args, "--tables-dir")
                        .map(PathBuf::from)
                        .or(file.tables_dir.clone())
                        .unwrap_or_else(|| panic!("{what}: no tables_dir"));
                    let defs = loglake_schemas::load_table_dir(host(&dir.to_string_lossy()))
                        .unwrap_or_else(|e| {
                            panic!("{what} (index {index}): {}: {e}", dir.display())
                        });
                    assert!(!defs.is_empty(), "{what} (index {index}): no table");
                    seen.extend(defs.into_iter().map(|d| d.name));
                }
                let unique: BTreeSet<String> = seen.iter().cloned().collect();
                assert_eq!(
                    unique.len(),
                    seen.len(),
                    "{what}: a table in two shards: {seen:?}"
                );
                assert_eq!(unique, all_tables, "{what}: tables");

                // SIGTERM: the archiver flushes and commits within its shutdown timeout, which
                // must end before the kubelet's SIGKILL.
                if args.first().map(String::as_str) == Some("archive") {
                    let shutdown = match flag(&args, "--shutdown-timeout")
                        .or(file.shutdown_timeout.as_deref())
                    {
                        Some(d) => loglake_archiver::config::parse_duration(d).expect("duration"),
                        None => loglake_archiver::archive::DEFAULT_SHUTDOWN_TIMEOUT,
                    };
                    let grace = int(w.pod, "/terminationGracePeriodSeconds") as u64;
                    assert!(
                        grace >= shutdown.as_secs() + 10,
                        "{what}: terminationGracePeriodSeconds {grace} leaves under 10 s after \
                         the shutdown timeout {shutdown:?}"
                    );
                }
            }
        }

        // The archiver: probes on /healthz at the --metrics-addr port, a PDB over its pods.
        let deployment = find(&docs, "Deployment", "loglake-archiver");
        let c = &list(deployment, "/spec/template/spec/containers")[0];
        let args = container_args(c);
        let addr: std::net::SocketAddr = flag(&args, "--metrics-addr")
            .expect("--metrics-addr")
            .parse()
            .expect("address");
        let port_name = list(c, "/ports")
            .iter()
            .find(|p| int(p, "/containerPort") == i64::from(addr.port()))
            .map(|p| s(p, "/name"))
            .expect("a container port for --metrics-addr");
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            let p = c
                .get(probe)
                .unwrap_or_else(|| panic!("{overlay}: no {probe}"));
            assert_eq!(s(p, "/httpGet/path"), "/healthz", "{overlay}: {probe}");
            assert_eq!(
                p.pointer("/httpGet/port").and_then(Value::as_str),
                Some(port_name),
                "{overlay}: {probe}"
            );
        }
        let pdb = find(&docs, "PodDisruptionBudget", "loglake-archiver");
        assert_eq!(
            pdb.pointer("/spec/selector/matchLabels"),
            deployment.pointer("/spec/selector/matchLabels"),
            "{overlay}: the PDB selects the archivers"
        );

        // The nightly CronJob: one at a time, UTC, bounded, and its failure policy follows the
        // exit codes of `loglake nightly` (README: 1 retryable, 2 bad configuration, 3 lease
        // held by another runner).
        let cron = find(&docs, "CronJob", "loglake-nightly");
        assert_eq!(s(cron, "/spec/concurrencyPolicy"), "Forbid");
        assert_eq!(s(cron, "/spec/timeZone"), "Etc/UTC");
        for key in [
            "/spec/startingDeadlineSeconds",
            "/spec/jobTemplate/spec/backoffLimit",
            "/spec/jobTemplate/spec/activeDeadlineSeconds",
            "/spec/jobTemplate/spec/ttlSecondsAfterFinished",
        ] {
            assert!(int(cron, key) > 0, "{overlay}: {key}");
        }
        assert_eq!(
            s(cron, "/spec/jobTemplate/spec/template/spec/restartPolicy"),
            "Never"
        );
        let mut action_of_exit = BTreeMap::new();
        for rule in list(cron, "/spec/jobTemplate/spec/podFailurePolicy/rules") {
            if let Some(codes) = rule.get("onExitCodes") {
                assert_eq!(s(codes, "/operator"), "In");
                for code in list(codes, "/values") {
                    action_of_exit
                        .entry(code.as_i64().expect("code"))
                        .or_insert_with(|| s(rule, "/action").to_string());
                }
            }
        }
        let expected: BTreeMap<i64, String> = [(1, "Count"), (2, "FailJob"), (3, "Count")]
            .into_iter()
            .map(|(c, a)| (c, a.to_string()))
            .collect();
        assert_eq!(action_of_exit, expected, "{overlay}: podFailurePolicy");
    }
}

#[test]
fn manifest_command_lines_parse_with_the_real_binary() {
    let bin = loglake_bin();
    // `loglake ARGS --help` prints the subcommand's help only if clap accepted every flag and
    // value before `--help`. LOGLAKE_* variables are clap defaults: none may leak in.
    let parse = |args: &[String]| -> Output {
        let mut cmd = Command::new(&bin);
        cmd.args(args).arg("--help");
        for (k, _) in std::env::vars() {
            if k.starts_with("LOGLAKE_") || k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        run(&mut cmd)
    };
    // The check can fail: a bad value or an unknown flag before --help is an error.
    for bad in [
        vec!["archive", "--metrics-addr", "not-an-address"],
        vec!["archive", "--no-such-flag"],
        vec!["no-such-subcommand"],
    ] {
        let bad: Vec<String> = bad.into_iter().map(String::from).collect();
        let out = parse(&bad);
        assert!(!out.status.success(), "{bad:?} --help was accepted");
    }

    let mut checked = BTreeSet::new();
    for overlay in OVERLAYS {
        let docs = documents(&render(overlay));
        for w in workloads(&docs) {
            for c in list(w.pod, "/containers") {
                let indexes = match w.doc.pointer("/spec/completionMode") {
                    Some(m) if m == "Indexed" => int(w.doc, "/spec/completions") as usize,
                    _ => 1,
                };
                for index in 0..indexes {
                    let what = format!("{overlay}: {} (index {index})", w.name);
                    let vars = container_vars(&w, c, index);
                    let args: Vec<String> = container_args(c)
                        .iter()
                        .map(|a| expand(a, &vars, &what))
                        .collect();
                    let out = parse(&args);
                    check(&format!("{what}: loglake {} --help", args.join(" ")), &out);
                    let usage = format!("Usage: loglake {}", args[0]);
                    assert!(
                        text(&out.stdout).contains(&usage),
                        "{what}: not the help of `{}`:\n{}",
                        args[0],
                        text(&out.stdout)
                    );
                    checked.insert(format!("{}: loglake {}", w.name, args.join(" ")));
                }
            }
        }
    }
    for line in &checked {
        announce(&format!("deploy: parses: {line}"));
    }
    for sub in ["archive ", "nightly "] {
        assert!(
            checked
                .iter()
                .any(|l| l.contains(&format!("loglake {sub}"))),
            "no `loglake {sub}` command line checked"
        );
    }
}

#[test]
fn the_image_builds_with_buildah_and_runs_version_and_the_quickstart() {
    let started = Instant::now();
    let buildah_found = Command::new("buildah")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        buildah_found,
        "buildah not found: scripts/install-test-deps.sh installs it (apt-get install buildah)"
    );
    // A storage root of its own: the test leaves no image behind.
    let dir = tempfile::tempdir().expect("tmp");
    let storage = dir.path().join("storage");
    let tag = format!("localhost/{}:it", unique_name("loglake"));
    let buildah = || {
        let mut c = Command::new("buildah");
        c.arg("--storage-driver")
            .arg("vfs")
            .arg("--root")
            .arg(&storage)
            .arg("--runroot")
            .arg(storage.join("run"));
        c
    };
    let out = run(Command::new(repo().join("scripts/image.sh"))
        .arg("--binary")
        .arg(loglake_bin())
        .arg("--tag")
        .arg(&tag)
        .arg("--storage-root")
        .arg(&storage));
    check("scripts/image.sh", &out);
    announce(&format!(
        "deploy: image built in {:?}: {}",
        started.elapsed(),
        text(&out.stderr)
            .lines()
            .filter(|l| l.starts_with("image.sh: "))
            .collect::<Vec<_>>()
            .join(" | ")
    ));

    let out = run(buildah().args([
        "inspect",
        "--type",
        "image",
        "--format",
        "{{.OCIv1.Config.User}} {{.OCIv1.Config.Entrypoint}}",
        &tag,
    ]));
    check("buildah inspect", &out);
    assert_eq!(
        text(&out.stdout).trim(),
        format!("{IMAGE_UID}:{IMAGE_UID} [/usr/local/bin/loglake]")
    );

    let name = unique_name("loglake-it");
    check(
        "buildah from",
        &run(buildah().args(["from", "--name", &name, &tag])),
    );
    let in_image = |args: &[&str]| -> Output {
        run(buildah()
            .args([
                "run",
                "--isolation",
                "chroot",
                &name,
                "--",
                "/usr/local/bin/loglake",
            ])
            .args(args))
    };

    let out = in_image(&["version"]);
    check("loglake version in the image", &out);
    let host = run(Command::new(loglake_bin()).arg("version"));
    check("loglake version", &host);
    assert_eq!(text(&out.stdout), text(&host.stdout));
    announce(&format!(
        "deploy: in the image: {}",
        text(&out.stdout).trim()
    ));

    // The quickstart as the image's user: embedded Kafka, a local lake under /tmp.
    let out = in_image(&["quickstart", "--lake", "/tmp/quickstart-lake"]);
    check("loglake quickstart in the image", &out);
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .contains("archived 175 records into /tmp/quickstart-lake: 173 rows, 2 dead letters, "),
        "{stdout}"
    );
    assert!(
        stdout.contains("The lake is at /tmp/quickstart-lake/"),
        "{stdout}"
    );
    // Written by the non-root user.
    let out = run(buildah().args(["mount", &name]));
    check("buildah mount", &out);
    let rootfs = PathBuf::from(text(&out.stdout).trim());
    let owner = {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(rootfs.join("tmp/quickstart-lake/access/_delta_log"))
            .expect("the quickstart's lake in the container");
        (m.uid(), m.gid())
    };
    assert_eq!(owner, (IMAGE_UID as u32, IMAGE_UID as u32));
    check("buildah umount", &run(buildah().args(["umount", &name])));
    check("buildah rm", &run(buildah().args(["rm", &name])));
    announce(&format!(
        "deploy: image built, version and quickstart run in {:?}",
        started.elapsed()
    ));
}
