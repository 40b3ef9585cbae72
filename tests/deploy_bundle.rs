//! The deployment bundle as a user runs it: the Kubernetes manifests and the README's `kubectl`
//! steps, the compose stack, and the Dockerfile.
//!
//! No cluster and no Docker daemon are needed. The README's commands are parsed literally and run
//! against a small model of a cluster (what `kubectl apply -k`, `kubectl create secret` and
//! `kubectl delete` do to the set of objects), and the shell scripts of the init container, the
//! re-seed Job and the compose `token-seed` service are taken out of the YAML and run with `sh`
//! against temporary directories standing for the volumes they mount.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::{Value, json};

/// The binary under test: only asked whether it has a `healthcheck` subcommand.
const BIN: &str = env!("CARGO_BIN_EXE_qonto-exporter");
/// The claim that holds the rotating refresh token.
const STATE_CLAIM: &str = "qonto-exporter-state";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn k8s_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every non-empty YAML document of `text`, as JSON values.
fn yaml_docs(text: &str, origin: &Path) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| {
            Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", origin.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml_file(path: &Path) -> Vec<Value> {
    yaml_docs(&read(path), path)
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or_default()
}

fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or_default()
}

/// `a/./b/../c` → `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

// ---------------------------------------------------------------------------------- kustomize

/// The objects `kubectl apply -k dir` sends, as far as this repository's kustomizations go:
/// `resources` (files, or directories holding a kustomization) and the `images` transformer. Any
/// other field fails the test, so the rendering can never silently differ from kustomize's.
fn kustomize(dir: &Path) -> Vec<Value> {
    let file = dir.join("kustomization.yaml");
    let docs = yaml_file(&file);
    assert_eq!(docs.len(), 1, "{} must hold one document", file.display());
    let k = &docs[0];
    let known: BTreeSet<&str> = ["apiVersion", "kind", "resources", "images"].into();
    for key in k.as_object().expect("kustomization is a mapping").keys() {
        assert!(
            known.contains(key.as_str()),
            "{}: field `{key}` is not modelled by this test's kustomize rendering; extend \
             kustomize() in tests/deploy_bundle.rs",
            file.display()
        );
    }
    assert_eq!(kind(k), "Kustomization");
    let mut objects = Vec::new();
    for res in k["resources"].as_array().expect("resources is a list") {
        let path = dir.join(res.as_str().expect("a resource is a path"));
        if path.is_dir() {
            objects.extend(kustomize(&path));
        } else {
            objects.extend(yaml_file(&path));
        }
    }
    for image in k["images"].as_array().cloned().unwrap_or_default() {
        let from = image["name"].as_str().expect("images[].name");
        for obj in &mut objects {
            for c in pod_containers_mut(obj) {
                let current = c["image"].as_str().unwrap_or_default().to_owned();
                if image_name(&current) != from {
                    continue;
                }
                let base = image["newName"].as_str().unwrap_or(from);
                let reference = if let Some(d) = image["digest"].as_str() {
                    format!("{base}@{d}")
                } else if let Some(t) = image["newTag"].as_str() {
                    format!("{base}:{t}")
                } else {
                    format!("{base}{}", &current[image_name(&current).len()..])
                };
                c["image"] = json!(reference);
            }
        }
    }
    objects
}

/// `registry/name:tag@sha256:…` → `registry/name`.
fn image_name(reference: &str) -> &str {
    let no_digest = reference.split('@').next().unwrap_or_default();
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

/// The tag of an image reference, if it has one.
fn image_tag(reference: &str) -> Option<&str> {
    let no_digest = reference.split('@').next().unwrap_or_default();
    let name = image_name(reference);
    no_digest.get(name.len() + 1..).filter(|t| !t.is_empty())
}

fn pod_spec(obj: &Value) -> Option<&Value> {
    match kind(obj) {
        "Pod" => Some(&obj["spec"]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicaSet" => {
            Some(&obj["spec"]["template"]["spec"])
        }
        "CronJob" => Some(&obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        _ => None,
    }
}

fn pod_containers(obj: &Value) -> Vec<&Value> {
    let Some(spec) = pod_spec(obj) else {
        return Vec::new();
    };
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec[*k].as_array())
        .flatten()
        .collect()
}

fn pod_containers_mut(obj: &mut Value) -> Vec<&mut Value> {
    let spec = match kind(obj) {
        "Pod" => &mut obj["spec"],
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicaSet" => {
            &mut obj["spec"]["template"]["spec"]
        }
        _ => return Vec::new(),
    };
    let Some(spec) = spec.as_object_mut() else {
        return Vec::new();
    };
    spec.iter_mut()
        .filter(|(k, _)| *k == "initContainers" || *k == "containers")
        .filter_map(|(_, v)| v.as_array_mut())
        .flatten()
        .collect()
}

/// The objects of the kustomization the README applies.
fn applied_set() -> Vec<Value> {
    kustomize(&k8s_dir())
}

fn find<'a>(objects: &'a [Value], k: &str, n: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| kind(o) == k && name(o) == n)
        .unwrap_or_else(|| panic!("no {k} {n} in the set"))
}

fn container<'a>(obj: &'a Value, n: &str) -> &'a Value {
    pod_containers(obj)
        .into_iter()
        .find(|c| c["name"] == n)
        .unwrap_or_else(|| panic!("{} {} has no container {n}", kind(obj), name(obj)))
}

// ------------------------------------------------------------------------- the docs' commands

/// A shell word or an operator (`&&`, `||`, `|`, `;`, newline).
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Op(&'static str),
}

/// Splits shell text into words and operators the way `sh` would for the commands the docs hold:
/// quotes, backslashes, line continuations, comments, `$(…)` kept as one literal word.
fn shell_tokens(text: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars().peekable();
    fn flush(word: &mut Option<String>, toks: &mut Vec<Tok>) {
        if let Some(w) = word.take() {
            toks.push(Tok::Word(w));
        }
    }
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\n') | None => {}
                Some(n) => word.get_or_insert_with(String::new).push(n),
            },
            '\n' => {
                flush(&mut word, &mut toks);
                toks.push(Tok::Op("\n"));
            }
            c if c.is_whitespace() => flush(&mut word, &mut toks),
            '#' if word.is_none() => {
                while chars.peek().is_some_and(|&n| n != '\n') {
                    chars.next();
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                for n in chars.by_ref() {
                    if n == '\'' {
                        break;
                    }
                    w.push(n);
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(n) = chars.next() {
                    match n {
                        '"' => break,
                        '\\' if matches!(chars.peek(), Some('"' | '\\' | '$' | '`')) => {
                            w.push(chars.next().unwrap());
                        }
                        _ => w.push(n),
                    }
                }
            }
            '$' if chars.peek() == Some(&'(') => {
                let w = word.get_or_insert_with(String::new);
                w.push('$');
                let mut depth = 0;
                for n in chars.by_ref() {
                    w.push(n);
                    match n {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            '&' if chars.peek() == Some(&'&') => {
                chars.next();
                flush(&mut word, &mut toks);
                toks.push(Tok::Op("&&"));
            }
            '|' => {
                flush(&mut word, &mut toks);
                if chars.peek() == Some(&'|') {
                    chars.next();
                    toks.push(Tok::Op("||"));
                } else {
                    toks.push(Tok::Op("|"));
                }
            }
            ';' => {
                flush(&mut word, &mut toks);
                toks.push(Tok::Op(";"));
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    flush(&mut word, &mut toks);
    toks
}

/// One simple command of the docs, with the directory it runs in.
#[derive(Debug, Clone)]
struct Cmd {
    words: Vec<String>,
    cwd: PathBuf,
    /// Where it was found, for failure messages.
    origin: String,
}

/// The commands of one piece of shell text, run from the repository's root (as the README says);
/// a `cd` moves the later commands of the same text.
fn commands(text: &str, origin: &str) -> Vec<Cmd> {
    let mut cwd = repo();
    let mut out = Vec::new();
    let mut words = Vec::new();
    let mut toks = shell_tokens(text);
    toks.push(Tok::Op("\n"));
    for t in toks {
        match t {
            Tok::Word(w) => words.push(w),
            Tok::Op(_) => {
                if words.is_empty() {
                    continue;
                }
                let ws = std::mem::take(&mut words);
                if ws[0] == "cd" && ws.len() == 2 {
                    cwd = normalize(&cwd.join(&ws[1]));
                    continue;
                }
                out.push(Cmd {
                    words: ws,
                    cwd: cwd.clone(),
                    origin: origin.to_owned(),
                });
            }
        }
    }
    out
}

/// The fenced ```sh / ```bash / ```shell blocks of a markdown text.
fn shell_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    // None: outside a fence; Some(None): in a fence of another language; Some(Some(text)): in a
    // shell fence.
    let mut fence: Option<Option<String>> = None;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            fence = match fence.take() {
                Some(Some(block)) => {
                    blocks.push(block);
                    None
                }
                Some(None) => None,
                None if matches!(info.trim(), "sh" | "bash" | "shell") => Some(Some(String::new())),
                None => Some(None),
            };
            continue;
        }
        if let Some(Some(block)) = fence.as_mut() {
            block.push_str(trimmed);
            block.push('\n');
        }
    }
    blocks
}

/// The inline code spans of a markdown text that hold a command (`kubectl …`, `docker …`),
/// outside fenced blocks.
fn inline_commands(markdown: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 1 && (part.starts_with("kubectl ") || part.starts_with("docker ")) {
                spans.push(part.to_owned());
            }
        }
    }
    spans
}

/// Every command of a document: its shell blocks and its inline commands.
fn doc_commands(rel: &str) -> Vec<Cmd> {
    let text = read(&repo().join(rel));
    let mut out = Vec::new();
    for (i, block) in shell_blocks(&text).iter().enumerate() {
        out.extend(commands(block, &format!("{rel}, shell block {}", i + 1)));
    }
    for span in inline_commands(&text) {
        out.extend(commands(&span, &format!("{rel}, inline `{span}`")));
    }
    out
}

/// What a set of `kubectl -f/-k` arguments names.
#[derive(Debug)]
enum Source {
    Path { path: PathBuf, recursive: bool },
    Kustomization(PathBuf),
    Stdin,
}

/// The parsed `kubectl` commands the model knows.
#[derive(Debug)]
enum Kubectl {
    /// `apply`, `create` or `replace` of files, directories or a kustomization.
    Apply(Vec<Source>),
    /// `kubectl create secret generic NAME --from-literal=K=V --from-file=K=PATH`.
    CreateSecret {
        name: String,
        literals: Vec<(String, String)>,
        files: Vec<(String, PathBuf)>,
    },
    Delete {
        kind: String,
        name: String,
    },
    Other,
}

fn parse_kubectl(cmd: &Cmd) -> Option<Kubectl> {
    if cmd.words.first().map(String::as_str) != Some("kubectl") {
        return None;
    }
    let args = &cmd.words[1..];
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let verb = positional.first().map(|s| s.as_str()).unwrap_or_default();
    let flag_values = |short: &str, long: &str| -> Vec<String> {
        let mut values = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == short || a == long {
                values.extend(it.next().cloned());
            } else if let Some(v) = a
                .strip_prefix(&format!("{long}="))
                .or_else(|| a.strip_prefix(&format!("{short}=")))
            {
                values.push(v.to_owned());
            }
        }
        values
    };
    let recursive = args.iter().any(|a| a == "-R" || a == "--recursive");
    match verb {
        "create" if positional.get(1).map(|s| s.as_str()) == Some("secret") => {
            if args.iter().any(|a| a.starts_with("--dry-run")) {
                return Some(Kubectl::Other);
            }
            let name = positional.get(3).unwrap_or_else(|| {
                panic!("{}: `kubectl create secret` without a name", cmd.origin)
            });
            let mut literals = Vec::new();
            let mut files = Vec::new();
            for a in args {
                if let Some(kv) = a.strip_prefix("--from-literal=") {
                    let (k, v) = kv.split_once('=').expect("--from-literal=KEY=VALUE");
                    literals.push((k.to_owned(), v.to_owned()));
                } else if let Some(kv) = a.strip_prefix("--from-file=") {
                    let (k, p) = kv.split_once('=').unwrap_or_else(|| {
                        let file = Path::new(kv).file_name().unwrap().to_str().unwrap();
                        (file, kv)
                    });
                    files.push((k.to_owned(), PathBuf::from(p)));
                } else if a.starts_with("--from-env-file") {
                    panic!("{}: --from-env-file is not modelled", cmd.origin);
                }
            }
            Some(Kubectl::CreateSecret {
                name: name.to_string(),
                literals,
                files,
            })
        }
        "apply" | "create" | "replace" => {
            let mut sources = Vec::new();
            for f in flag_values("-f", "--filename") {
                sources.push(if f == "-" {
                    Source::Stdin
                } else {
                    Source::Path {
                        path: normalize(&cmd.cwd.join(f)),
                        recursive,
                    }
                });
            }
            for k in flag_values("-k", "--kustomize") {
                sources.push(Source::Kustomization(normalize(&cmd.cwd.join(k))));
            }
            Some(if sources.is_empty() {
                Kubectl::Other
            } else {
                Kubectl::Apply(sources)
            })
        }
        "delete" if positional.len() >= 3 && !args.iter().any(|a| a == "-f" || a == "-k") => {
            Some(Kubectl::Delete {
                kind: positional[1].to_string(),
                name: positional[2].to_string(),
            })
        }
        _ => Some(Kubectl::Other),
    }
}

/// The objects a `-f`/`-k` source sends to the cluster.
fn objects_of(source: &Source, origin: &str) -> Vec<Value> {
    match source {
        Source::Stdin => panic!(
            "{origin}: `-f -` applies whatever comes on stdin, which this test cannot check; \
             document a `kubectl create` of the user's own values or a file of the repository"
        ),
        Source::Kustomization(dir) => kustomize(dir),
        Source::Path { path, recursive } => {
            assert!(path.exists(), "{origin}: {} does not exist", path.display());
            if path.is_file() {
                return yaml_file(path);
            }
            let mut out = Vec::new();
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for p in entries {
                if p.is_dir() {
                    if *recursive {
                        out.extend(objects_of(
                            &Source::Path {
                                path: p,
                                recursive: true,
                            },
                            origin,
                        ));
                    }
                } else if p
                    .extension()
                    .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
                {
                    out.extend(yaml_file(&p));
                }
            }
            out
        }
    }
}

/// A model of the namespace the README's commands act on: objects by kind and name, and the
/// content of the token volume.
#[derive(Default)]
struct Cluster {
    objects: BTreeMap<(String, String), Value>,
    /// The files the user holds locally (`--from-file` paths), relative to the command's cwd.
    local_files: BTreeMap<PathBuf, String>,
}

impl Cluster {
    fn kind_key(k: &str) -> String {
        match k {
            "secret" | "secrets" => "Secret".into(),
            "job" | "jobs" | "job.batch" => "Job".into(),
            "deployment" | "deployments" | "deploy" => "Deployment".into(),
            other => other.into(),
        }
    }

    fn secret(&self, n: &str) -> Option<&Value> {
        self.objects.get(&("Secret".to_owned(), n.to_owned()))
    }

    /// Runs one command of the docs; returns the objects it created or replaced from files.
    /// Like kubectl, `create` of an object that exists fails and changes nothing.
    fn run(&mut self, cmd: &Cmd) -> Vec<Value> {
        let Some(k) = parse_kubectl(cmd) else {
            return Vec::new();
        };
        let verb = cmd.words.iter().skip(1).find(|w| !w.starts_with('-'));
        let create_only = verb.is_some_and(|v| v == "create");
        match k {
            Kubectl::Apply(sources) => {
                let mut sent = Vec::new();
                for s in &sources {
                    for obj in objects_of(s, &cmd.origin) {
                        let key = (kind(&obj).to_owned(), name(&obj).to_owned());
                        if create_only && self.objects.contains_key(&key) {
                            continue;
                        }
                        self.objects.insert(key, obj.clone());
                        sent.push(obj);
                    }
                }
                sent
            }
            Kubectl::CreateSecret {
                name,
                literals,
                files,
            } => {
                let key = ("Secret".to_owned(), name.clone());
                if self.objects.contains_key(&key) {
                    return Vec::new(); // AlreadyExists: kubectl create never overwrites.
                }
                let mut data = serde_json::Map::new();
                for (k, v) in literals {
                    data.insert(k, json!(v));
                }
                for (k, p) in files {
                    let content = self.local_files.get(&p).unwrap_or_else(|| {
                        panic!("{}: the user has no file {}", cmd.origin, p.display())
                    });
                    data.insert(k, json!(content));
                }
                self.objects.insert(
                    key,
                    json!({"apiVersion": "v1", "kind": "Secret",
                           "metadata": {"name": name}, "stringData": data}),
                );
                Vec::new()
            }
            Kubectl::Delete { kind, name } => {
                self.objects.remove(&(Self::kind_key(&kind), name));
                Vec::new()
            }
            Kubectl::Other => Vec::new(),
        }
    }
}

// ----------------------------------------------------------------------- running the scripts

/// A fake volume on the host: a directory standing for what a container sees at a mount path.
struct Mounts(Vec<(String, PathBuf)>);

impl Mounts {
    /// The host path of a path inside the container.
    fn host(&self, inside: &str) -> PathBuf {
        let (mount, dir) = self
            .0
            .iter()
            .filter(|(m, _)| Path::new(inside).starts_with(m))
            .max_by_key(|(m, _)| m.len())
            .unwrap_or_else(|| panic!("{inside} is on no volume of the container"));
        dir.join(Path::new(inside).strip_prefix(mount).unwrap())
    }
}

/// Runs `sh <flags> <script>` with `env` (container paths turned into host paths through
/// `mounts`), PATH led by `shims`.
fn run_sh(command: &[String], env: &[(String, String)], mounts: &Mounts, shims: &Path) -> Output {
    assert!(
        command.len() == 3 && command[0] == "sh" && command[1].starts_with('-'),
        "expected [sh, -…c, script], got {command:?}"
    );
    assert!(command[1].ends_with('c'), "{command:?}");
    let mut cmd = Command::new("sh");
    cmd.args(&command[1..]).env_clear().env(
        "PATH",
        format!("{}:/usr/local/bin:/usr/bin:/bin", shims.display()),
    );
    for (k, v) in env {
        let value = if v.starts_with('/') {
            mounts.host(v).display().to_string()
        } else {
            v.clone()
        };
        cmd.env(k, value);
    }
    cmd.env("SHIM_LOG", shims.join("log"));
    cmd.output().expect("sh runs")
}

/// A directory with a `chown` that only records its arguments (the scripts hand the volume to
/// uid 65532, which a test running as an ordinary user may not do).
fn shims(dir: &Path) -> PathBuf {
    let shims = dir.join("shims");
    std::fs::create_dir_all(&shims).unwrap();
    let chown = shims.join("chown");
    std::fs::write(&chown, "#!/bin/sh\necho \"chown $*\" >> \"$SHIM_LOG\"\n").unwrap();
    std::fs::set_permissions(&chown, std::fs::Permissions::from_mode(0o755)).unwrap();
    shims
}

fn output_text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs one container of a pod-bearing manifest the way the kubelet would for these scripts:
/// the token claim is `state`, secret volumes are filled from the model cluster's Secrets.
fn run_k8s_container(
    obj: &Value,
    container_name: &str,
    cluster: &Cluster,
    state: &Path,
    scratch: &Path,
) -> Output {
    let c = container(obj, container_name);
    let spec = pod_spec(obj).unwrap();
    let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
    let mut mounts = Vec::new();
    for m in c["volumeMounts"].as_array().cloned().unwrap_or_default() {
        let vname = m["name"].as_str().unwrap();
        let mount_path = m["mountPath"].as_str().unwrap().to_owned();
        let vol = volumes
            .iter()
            .find(|v| v["name"] == vname)
            .unwrap_or_else(|| panic!("volume {vname} is not declared"));
        if vol["persistentVolumeClaim"]["claimName"] == STATE_CLAIM {
            mounts.push((mount_path, state.to_owned()));
        } else if let Some(secret_name) = vol["secret"]["secretName"].as_str() {
            let dir = scratch.join(format!("secret-{vname}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            match cluster.secret(secret_name) {
                Some(secret) => {
                    let data = secret["stringData"]
                        .as_object()
                        .cloned()
                        .unwrap_or_default();
                    let items: Vec<(String, String)> = match vol["secret"]["items"].as_array() {
                        Some(items) => items
                            .iter()
                            .map(|i| {
                                (
                                    i["key"].as_str().unwrap().to_owned(),
                                    i["path"].as_str().unwrap().to_owned(),
                                )
                            })
                            .collect(),
                        None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
                    };
                    for (key, path) in items {
                        // A missing key makes the kubelet fail the pod unless the volume is
                        // optional, in which case the key is left out.
                        match data.get(&key).and_then(Value::as_str) {
                            Some(value) => std::fs::write(dir.join(path), value).unwrap(),
                            None => assert!(
                                vol["secret"]["optional"] == true,
                                "Secret {secret_name} has no key {key}, and the volume is not optional"
                            ),
                        }
                    }
                }
                None => assert!(
                    vol["secret"]["optional"] == true,
                    "Secret {secret_name} does not exist, and the volume is not optional: the pod \
                     would not start"
                ),
            }
            mounts.push((mount_path, dir));
        } else {
            panic!("volume {vname} is neither the token claim nor a Secret");
        }
    }
    let command: Vec<String> = c["command"]
        .as_array()
        .expect("the container has a command")
        .iter()
        .chain(c["args"].as_array().into_iter().flatten())
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let env: Vec<(String, String)> = c["env"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    run_sh(&command, &env, &Mounts(mounts), &shims(scratch))
}

fn deployment() -> Value {
    find(&applied_set(), "Deployment", "qonto-exporter").clone()
}

fn reseed_job() -> Value {
    let docs = yaml_file(&k8s_dir().join("maintenance/reseed-refresh-token.yaml"));
    assert_eq!(docs.len(), 1);
    assert_eq!(kind(&docs[0]), "Job");
    docs[0].clone()
}

/// The init container's view: the token file on the claim, as the exporter reads it.
fn token_path(state: &Path) -> PathBuf {
    let d = deployment();
    let init = container(&d, "seed-refresh-token");
    let inside = init["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "TOKEN_FILE")
        .and_then(|e| e["value"].as_str())
        .expect("TOKEN_FILE")
        .to_owned();
    let mount = init["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "state")
        .unwrap()["mountPath"]
        .as_str()
        .unwrap()
        .to_owned();
    state.join(Path::new(&inside).strip_prefix(mount).unwrap())
}

fn cluster_with_seed(token: Option<&str>) -> Cluster {
    let mut c = Cluster::default();
    if let Some(t) = token {
        c.objects.insert(
            ("Secret".into(), "qonto-exporter-refresh-token".into()),
            json!({"kind": "Secret", "metadata": {"name": "qonto-exporter-refresh-token"},
                   "stringData": {"refresh-token": t}}),
        );
    }
    c
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// ------------------------------------------------------------------------- Kubernetes: tests

#[test]
fn no_command_of_the_docs_applies_a_secret() {
    let mut applied_kustomization = false;
    for doc in ["README.md", "docs/runbook.md"] {
        for cmd in doc_commands(doc) {
            let Some(Kubectl::Apply(sources)) = parse_kubectl(&cmd) else {
                continue;
            };
            for s in &sources {
                for obj in objects_of(s, &cmd.origin) {
                    assert_ne!(
                        kind(&obj),
                        "Secret",
                        "{}: `{}` sends Secret {} from the repository: it would overwrite the \
                         user's real Secret with a placeholder",
                        cmd.origin,
                        cmd.words.join(" "),
                        name(&obj)
                    );
                    applied_kustomization |= kind(&obj) == "Deployment";
                }
            }
        }
    }
    assert!(
        applied_kustomization,
        "no documented kubectl command applies the Deployment: the README's steps are missing"
    );
}

#[test]
fn following_the_readme_keeps_the_users_secrets_and_the_rotated_token() {
    let readme = read(&repo().join("README.md"));
    let blocks = shell_blocks(&readme);
    let install = blocks
        .iter()
        .find(|b| b.contains("kubectl apply -k"))
        .expect("the README has a shell block with `kubectl apply -k`");
    let install = commands(install, "README.md, Kubernetes install block");

    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let mut cluster = Cluster {
        local_files: [
            ("./refresh-token", "first-refresh-token"),
            ("./client-secret", "the-client-secret"),
        ]
        .into_iter()
        .map(|(p, c)| (PathBuf::from(p), c.to_owned()))
        .collect(),
        ..Cluster::default()
    };

    // A fresh install, step by step.
    for cmd in &install {
        cluster.run(cmd);
    }
    let d = deployment();
    let mut referenced = BTreeSet::new();
    for c in pod_containers(&d) {
        for e in c["env"].as_array().into_iter().flatten() {
            if let Some(n) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                referenced.insert(n.to_owned());
            }
        }
    }
    for v in pod_spec(&d).unwrap()["volumes"].as_array().unwrap() {
        if let Some(n) = v["secret"]["secretName"].as_str() {
            referenced.insert(n.to_owned());
        }
    }
    for n in &referenced {
        assert!(
            cluster.secret(n).is_some(),
            "after the README's steps, Secret {n} (used by the Deployment) does not exist"
        );
    }
    let users = cluster
        .objects
        .iter()
        .filter(|((k, _), _)| k == "Secret")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect::<BTreeMap<_, _>>();
    assert_eq!(
        cluster.secret("qonto-exporter-refresh-token").unwrap()["stringData"]["refresh-token"],
        "first-refresh-token"
    );

    // The pod starts: the init container seeds the empty volume.
    let out = run_k8s_container(&d, "seed-refresh-token", &cluster, &state, tmp.path());
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(read(&token_path(&state)), "first-refresh-token");

    // The exporter rotates the token; then the user runs the documented steps again (an
    // upgrade) and the pod restarts.
    std::fs::write(token_path(&state), "rotated-refresh-token\n").unwrap();
    for cmd in &install {
        cluster.run(cmd);
    }
    let after: BTreeMap<_, _> = cluster
        .objects
        .iter()
        .filter(|((k, _), _)| k == "Secret")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(
        after, users,
        "re-running the README's steps changed a Secret"
    );
    let out = run_k8s_container(&d, "seed-refresh-token", &cluster, &state, tmp.path());
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(
        read(&token_path(&state)),
        "rotated-refresh-token\n",
        "a restart after re-applying the manifests replaced the rotated token:\n{}",
        output_text(&out)
    );

    // A new oauth-login, then the README's re-seed steps: the new token is on the volume.
    let reseed = blocks
        .iter()
        .find(|b| b.contains("maintenance/reseed-refresh-token.yaml"))
        .expect("the README has a shell block re-seeding the token");
    cluster
        .local_files
        .insert(PathBuf::from("./refresh-token"), "new-refresh-token".into());
    let mut job_ran = false;
    for cmd in commands(reseed, "README.md, re-seed block") {
        for obj in cluster.run(&cmd) {
            if kind(&obj) == "Job" {
                let out =
                    run_k8s_container(&obj, "remove-refresh-token", &cluster, &state, tmp.path());
                assert!(out.status.success(), "{}", output_text(&out));
                job_ran = true;
            }
        }
    }
    assert!(job_ran, "the re-seed steps create no Job");
    let out = run_k8s_container(&d, "seed-refresh-token", &cluster, &state, tmp.path());
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(read(&token_path(&state)), "new-refresh-token");
    assert_eq!(
        cluster.secret("qonto-exporter").unwrap()["stringData"],
        users[&("Secret".to_owned(), "qonto-exporter".to_owned())]["stringData"],
        "re-seeding touched the credentials Secret"
    );
}

#[test]
fn init_container_seeds_only_a_volume_without_a_token() {
    let d = deployment();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let token = token_path(&state);
    let run = |seed: Option<&str>| {
        let out = run_k8s_container(
            &d,
            "seed-refresh-token",
            &cluster_with_seed(seed),
            &state,
            tmp.path(),
        );
        assert!(out.status.success(), "{}", output_text(&out));
    };

    // No token anywhere (an API-key setup): nothing is written.
    run(None);
    assert!(!token.exists());

    // An empty volume is seeded, readable by its owner only.
    run(Some("seed-1"));
    assert_eq!(read(&token), "seed-1");
    assert_eq!(mode(&token), 0o600);

    // A token on the volume is never replaced, whatever the Secret holds: the same token, a
    // different one, or none at all.
    std::fs::write(&token, "rotated\n").unwrap();
    for seed in [Some("seed-1"), Some("a-different-seed"), None] {
        run(seed);
        assert_eq!(
            read(&token),
            "rotated\n",
            "seed {seed:?} replaced the live token"
        );
    }

    // An empty token file counts as no token.
    std::fs::write(&token, "").unwrap();
    run(Some("seed-2"));
    assert_eq!(read(&token), "seed-2");

    let leftovers: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != token.file_name().unwrap())
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn exporter_job_and_init_container_agree_on_the_token_file() {
    let d = deployment();
    let init = container(&d, "seed-refresh-token");
    let exporter = container(&d, "qonto-exporter");
    let job = reseed_job();
    let remover = container(&job, "remove-refresh-token");
    let env = |c: &Value, n: &str| -> String {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("{} has no {n}", c["name"]))
            .to_owned()
    };
    let token = env(init, "TOKEN_FILE");
    assert_eq!(env(remover, "TOKEN_FILE"), token);
    let flag = exporter["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix("--qonto.oauth.refresh-token-file="))
        .expect("the exporter reads --qonto.oauth.refresh-token-file");
    assert_eq!(
        flag, token,
        "the exporter reads another file than the one seeded"
    );
    let claim_mount = |obj: &Value, c: &Value| -> String {
        let spec = pod_spec(obj).unwrap();
        let vol = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["persistentVolumeClaim"]["claimName"] == STATE_CLAIM)
            .expect("the token claim is a volume");
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == vol["name"])
            .and_then(|m| m["mountPath"].as_str())
            .unwrap_or_else(|| panic!("{} does not mount the token claim", c["name"]))
            .to_owned()
    };
    for (obj, c) in [(&d, init), (&d, exporter), (&job, remover)] {
        assert!(
            Path::new(&token).starts_with(claim_mount(obj, c)),
            "{}: {token} is not on the token claim",
            c["name"]
        );
    }
    // The Job is never part of what the README applies, or it would wipe the token each time.
    assert!(
        !applied_set().iter().any(|o| kind(o) == "Job"),
        "a Job is in the applied set"
    );
}

#[test]
fn token_claim_is_read_write_once_pod() {
    let pvc = find(&applied_set(), "PersistentVolumeClaim", STATE_CLAIM).clone();
    assert_eq!(
        pvc["spec"]["accessModes"],
        json!(["ReadWriteOncePod"]),
        "only one pod may ever mount the refresh token"
    );
    let d = deployment();
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
}

#[test]
fn network_policy_admits_only_prometheus_to_the_metrics_port() {
    let set = applied_set();
    let d = deployment();
    let pod_labels = d["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap()
        .clone();
    let policies: Vec<&Value> = set
        .iter()
        .filter(|o| kind(o) == "NetworkPolicy")
        .filter(|p| {
            p["spec"]["podSelector"]["matchLabels"]
                .as_object()
                .is_some_and(|m| {
                    !m.is_empty() && m.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
                })
        })
        .collect();
    assert_eq!(
        policies.len(),
        1,
        "one NetworkPolicy selects the exporter's pod"
    );
    let spec = &policies[0]["spec"];
    assert!(
        spec["policyTypes"]
            .as_array()
            .unwrap()
            .contains(&json!("Ingress"))
    );
    let port_names: BTreeSet<&str> = container(&d, "qonto-exporter")["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    let readme = read(&repo().join("README.md"));
    let rules = spec["ingress"].as_array().expect("ingress rules");
    assert!(!rules.is_empty());
    for rule in rules {
        let ports = rule["ports"]
            .as_array()
            .expect("every rule names its ports");
        for p in ports {
            let port = p["port"].as_str().expect("the port by name");
            assert!(
                port_names.contains(port),
                "{port} is not a port of the exporter"
            );
            assert_eq!(port, "metrics");
        }
        let peers = rule["from"].as_array().expect("every rule names its peers");
        assert!(!peers.is_empty(), "a rule without `from` admits everyone");
        for peer in peers {
            assert!(peer.get("ipBlock").is_none(), "no ipBlock peer: {peer}");
            for selector in ["podSelector", "namespaceSelector"] {
                let labels = peer[selector]["matchLabels"]
                    .as_object()
                    .unwrap_or_else(|| panic!("peer {peer} has no {selector}.matchLabels"));
                assert!(!labels.is_empty(), "an empty {selector} admits every pod");
                for (k, v) in labels {
                    let v = v.as_str().unwrap();
                    assert!(
                        readme.contains(&format!("{k}: {v}"))
                            || readme.contains(&format!("{k}:\n{v}")),
                        "the README does not document the admitted label `{k}: {v}`"
                    );
                }
            }
        }
    }
    assert_eq!(
        container(&d, "qonto-exporter")["ports"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "the NetworkPolicy covers one port"
    );
}

/// The `-t` image of the `docker build` and the image of the `docker push` commands in the
/// README's blocks that mention `block_marker`.
fn readme_built_and_pushed(block_marker: &str) -> (Vec<String>, Vec<String>) {
    let readme = read(&repo().join("README.md"));
    let mut built = Vec::new();
    let mut pushed = Vec::new();
    for block in shell_blocks(&readme)
        .iter()
        .filter(|b| b.contains(block_marker))
    {
        for cmd in commands(block, "README.md") {
            let w = &cmd.words;
            if w.len() > 2 && w[0] == "docker" && w[1] == "build" {
                let i = w.iter().position(|a| a == "-t").expect("docker build -t");
                built.push(w[i + 1].clone());
            } else if w.len() == 3 && w[0] == "docker" && w[1] == "push" {
                pushed.push(w[2].clone());
            }
        }
    }
    (built, pushed)
}

#[test]
fn image_is_a_versioned_reference_the_readme_builds_and_pushes() {
    let set = applied_set();
    let version = env!("CARGO_PKG_VERSION");
    let d = deployment();
    let image = container(&d, "qonto-exporter")["image"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        image_tag(&image),
        Some(version),
        "the deployed image {image} is not tagged with the crate's version {version}"
    );
    assert!(
        image_name(&image).contains('/'),
        "{image}: a bare name is pulled from Docker Hub, where no such image is published"
    );
    let mut all: Vec<Value> = set.clone();
    all.push(reseed_job());
    for obj in &all {
        for c in pod_containers(obj) {
            let i = c["image"].as_str().unwrap();
            let tag = image_tag(i);
            assert!(
                i.contains("@sha256:") || tag.is_some_and(|t| t != "latest"),
                "{} {}: image {i} has no version tag or digest",
                kind(obj),
                name(obj)
            );
            assert!(
                tag.is_some_and(|t| t.chars().any(|ch| ch.is_ascii_digit())),
                "{i}: a tag without a version"
            );
        }
    }
    let (built, pushed) = readme_built_and_pushed("kubectl apply -k");
    assert_eq!(
        built,
        vec![image.clone()],
        "the README must build exactly the image the kustomization deploys"
    );
    assert_eq!(pushed, vec![image.clone()], "and push it");
    let (built, _) = readme_built_and_pushed("docker run");
    assert!(!built.is_empty(), "the README shows how to build the image");
    for b in built {
        assert_eq!(image_tag(&b), Some(version), "README builds {b}");
    }
}

#[test]
fn manifests_pass_kubernetes_validate() {
    let tool = which("kubernetes-validate").unwrap_or_else(|| {
        panic!(
            "`kubernetes-validate` is required by this test: `python3 -m pip install \
             kubernetes-validate` (scripts/test installs it)"
        )
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    // What the README applies, as rendered (images replaced), one object per file.
    for (i, obj) in applied_set().iter().enumerate() {
        let path = tmp
            .path()
            .join(format!("{i:02}-{}-{}.json", kind(obj), name(obj)));
        std::fs::write(&path, serde_json::to_string_pretty(obj).unwrap()).unwrap();
        files.push(path);
    }
    for sub in ["examples", "maintenance"] {
        for e in std::fs::read_dir(k8s_dir().join(sub)).unwrap() {
            files.push(e.unwrap().path());
        }
    }
    let out = Command::new(tool)
        .arg("--strict")
        .args(&files)
        .output()
        .expect("kubernetes-validate runs");
    let log = output_text(&out);
    assert!(out.status.success(), "kubernetes-validate failed:\n{log}");
    // The prometheus-operator kinds have no schema in the tool: it skips them with a warning.
    // Everything else must be reported as passed.
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    for f in &files {
        let f = f.display().to_string();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(&f)).collect();
        assert!(!lines.is_empty(), "no verdict for {f}:\n{log}");
        for l in lines {
            let crd = l.contains("ServiceMonitor") || l.contains("PrometheusRule");
            assert!(
                l.starts_with("INFO") && l.contains(" passed ")
                    || crd && l.contains("Couldn't find schema"),
                "{l}\n{log}"
            );
        }
    }
}

/// kubectl reads YAML 1.1 (`0440` is octal 288, `on` is true); this test, compose and many tools
/// read YAML 1.2 (`0440` is 440, `on` a string). Every manifest of ours must mean the same in both,
/// or the model above would check something other than what the cluster gets.
#[test]
fn manifests_mean_the_same_in_yaml_1_1_and_1_2() {
    let mut files = vec![repo().join("deploy/compose.yaml")];
    for dir in [
        k8s_dir(),
        k8s_dir().join("examples"),
        k8s_dir().join("maintenance"),
    ] {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            // prometheusrule.yaml is rendered by another tool and checked by its own test.
            if path.extension().is_some_and(|x| x == "yaml")
                && !path.ends_with("prometheusrule.yaml")
            {
                files.push(path);
            }
        }
    }
    for f in files {
        let out = Command::new("python3")
            .args([
                "-c",
                "import json, sys, yaml\n\
                 docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
                 print(json.dumps(docs))",
            ])
            .arg(&f)
            .output()
            .expect("python3 with PyYAML runs");
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            output_text(&out)
        );
        let yaml_1_1: Value = serde_json::from_slice(&out.stdout).unwrap();
        let yaml_1_2 = Value::Array(yaml_file(&f));
        assert_eq!(
            yaml_1_1,
            yaml_1_2,
            "{} reads differently as YAML 1.1 (kubectl, PyYAML) and YAML 1.2",
            f.display()
        );
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------- compose: tests

fn compose() -> Value {
    let docs = yaml_file(&repo().join("deploy/compose.yaml"));
    assert_eq!(docs.len(), 1);
    docs[0].clone()
}

fn services(c: &Value) -> Vec<(String, Value)> {
    c["services"]
        .as_object()
        .expect("services")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

#[test]
fn compose_publishes_every_port_on_loopback_only() {
    let mut published = 0;
    for (svc, s) in services(&compose()) {
        for p in s["ports"].as_array().into_iter().flatten() {
            published += 1;
            let host_ip = match p {
                Value::String(short) => {
                    let parts: Vec<&str> = short.split(':').collect();
                    (parts.len() == 3).then(|| parts[0].to_owned())
                }
                Value::Object(long) => long
                    .get("host_ip")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                other => panic!("{svc}: port {other} is neither short nor long syntax"),
            };
            assert_eq!(
                host_ip.as_deref(),
                Some("127.0.0.1"),
                "service {svc} publishes {p} beyond the loopback interface"
            );
        }
        assert!(
            s.get("network_mode").is_none_or(|m| m != "host"),
            "{svc} uses the host network"
        );
    }
    assert!(published >= 4, "the stack publishes its UIs on loopback");
}

#[test]
fn compose_services_drop_capabilities_and_privileges() {
    for (svc, s) in services(&compose()) {
        assert!(
            strings(&s["cap_drop"]).contains(&"ALL".to_owned()),
            "{svc}: no cap_drop: [ALL]"
        );
        let opts = strings(&s["security_opt"]);
        assert!(
            opts.iter()
                .any(|o| o == "no-new-privileges:true" || o == "no-new-privileges"),
            "{svc}: no security_opt no-new-privileges:true"
        );
        assert!(
            s.get("privileged").is_none_or(|p| p == false),
            "{svc} is privileged"
        );
        let added = strings(&s["cap_add"]);
        if svc == "token-seed" {
            let allowed: BTreeSet<&str> = ["CHOWN", "DAC_OVERRIDE", "FOWNER"].into();
            for cap in &added {
                assert!(allowed.contains(cap.as_str()), "token-seed adds {cap}");
            }
            assert_eq!(s["network_mode"], "none", "token-seed needs no network");
            assert_eq!(s["read_only"], true);
        } else {
            assert!(added.is_empty(), "{svc} adds capabilities {added:?}");
        }
    }
}

/// (service, host source resolved from deploy/, container target) of every bind mount.
fn bind_mounts(c: &Value) -> Vec<(String, PathBuf, String)> {
    let deploy = repo().join("deploy");
    let named: BTreeSet<String> = c["volumes"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (svc, s) in services(c) {
        for v in s["volumes"].as_array().into_iter().flatten() {
            let (source, target, bind) = match v {
                Value::String(short) => {
                    let parts: Vec<&str> = short.split(':').collect();
                    let source = parts[0].to_owned();
                    let bind = !named.contains(&source);
                    (
                        source,
                        parts.get(1).copied().unwrap_or_default().to_owned(),
                        bind,
                    )
                }
                Value::Object(long) => (
                    long["source"].as_str().unwrap_or_default().to_owned(),
                    long["target"].as_str().unwrap().to_owned(),
                    long["type"] == "bind",
                ),
                other => panic!("{svc}: volume {other}"),
            };
            if bind {
                out.push((svc.clone(), normalize(&deploy.join(source)), target));
            }
        }
    }
    out
}

#[test]
fn compose_mounts_only_the_files_each_container_needs() {
    let c = compose();
    let deploy = repo().join("deploy");
    let secrets = [deploy.join("qonto.env"), deploy.join("qonto.env.example")];
    for (svc, source, target) in bind_mounts(&c) {
        assert!(
            !deploy.starts_with(&source),
            "{svc} mounts {} at {target}: the whole deploy/ folder, credentials included",
            source.display()
        );
        for secret in &secrets {
            assert!(
                !secret.starts_with(&source),
                "{svc} mounts {} at {target}, which holds {}",
                source.display(),
                secret.display()
            );
        }
        assert!(
            !source.ends_with("docker.sock"),
            "{svc} mounts the Docker socket"
        );
    }
    let seed: Vec<_> = bind_mounts(&c)
        .into_iter()
        .filter(|(svc, _, _)| svc == "token-seed")
        .collect();
    assert_eq!(seed.len(), 1, "token-seed binds exactly one host directory");
    assert_eq!(seed[0].1, deploy.join("token-seed"));
    let ignore = read(&deploy.join("token-seed/.gitignore"));
    assert!(
        ignore.lines().any(|l| l.trim() == "*"),
        "deploy/token-seed/.gitignore must ignore the token put there"
    );
}

/// True when the binary has a `healthcheck` subcommand a container healthcheck can run.
fn binary_has_healthcheck() -> bool {
    let out = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("the binary runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim_start().starts_with("healthcheck "))
}

#[test]
fn compose_services_have_healthchecks_and_pinned_images() {
    let version_tag = |t: &str| {
        let t = t.strip_prefix('v').unwrap_or(t);
        let parts: Vec<&str> = t.split('.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    };
    for (svc, s) in services(&compose()) {
        let one_shot = s["restart"] == "no";
        if !one_shot {
            let exempt = svc == "qonto-exporter" && !binary_has_healthcheck();
            if !exempt {
                let test = strings(&s["healthcheck"]["test"]);
                assert!(
                    !test.is_empty() && test[0] != "NONE",
                    "{svc} has no healthcheck (for the exporter: [\"CMD\", \"/qonto-exporter\", \
                     \"healthcheck\", …] now that the binary has the subcommand)"
                );
            }
        }
        if s.get("build").is_some() {
            continue;
        }
        let image = s["image"].as_str().unwrap_or_default();
        assert!(
            image.contains("@sha256:") || image_tag(image).is_some_and(version_tag),
            "{svc}: image {image} is neither pinned by digest nor by an exact x.y.z tag"
        );
    }
}

#[test]
fn compose_prometheus_and_grafana_are_not_open_for_administration() {
    for (svc, s) in services(&compose()) {
        let args = match &s["command"] {
            Value::String(c) => vec![c.clone()],
            other => strings(other),
        };
        assert!(
            !args.iter().any(|a| a.contains("--web.enable-lifecycle")),
            "{svc} runs with --web.enable-lifecycle (POST /-/quit for anyone)"
        );
    }
    let grafana = services(&compose())
        .into_iter()
        .find(|(n, _)| n == "grafana")
        .expect("a grafana service")
        .1;
    let env = &grafana["environment"];
    let password = env["GF_SECURITY_ADMIN_PASSWORD"].as_str();
    assert_ne!(password, Some("admin"), "Grafana admin/admin");
    let no_admin = env["GF_SECURITY_DISABLE_INITIAL_ADMIN_CREATION"] == "true";
    let required = password.is_some_and(|p| p.starts_with("${") && p.contains(":?"));
    assert!(
        no_admin || required || env.get("GF_SECURITY_ADMIN_PASSWORD__FILE").is_some(),
        "Grafana would create admin/admin: disable the initial admin or require a password"
    );
    if env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" {
        assert_eq!(
            env["GF_AUTH_ANONYMOUS_ORG_ROLE"], "Viewer",
            "anonymous users may only view"
        );
    }
}

/// The token-seed service's script as the container's shell gets it (compose turns `$$` into
/// `$`), its environment and its mounts mapped onto `state` and `seed`.
fn token_seed(state: &Path, seed: &Path) -> (Vec<String>, Vec<(String, String)>, Mounts) {
    let c = compose();
    let s = &c["services"]["token-seed"];
    let command = strings(&s["command"]);
    let script = &command[2];
    let bare_dollar = script.replace("$$", "").contains('$');
    assert!(
        !bare_dollar,
        "a single $ in token-seed's script is interpolated by compose, not by the shell"
    );
    let command: Vec<String> = command.iter().map(|w| w.replace("$$", "$")).collect();
    let env: Vec<(String, String)> = s["environment"]
        .as_object()
        .expect("environment as a mapping")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let mut mounts = Vec::new();
    for v in strings(&s["volumes"]) {
        let parts: Vec<&str> = v.split(':').collect();
        let host = match parts[0] {
            "qonto-exporter-state" => state.to_owned(),
            "./token-seed" => seed.to_owned(),
            other => panic!("token-seed mounts {other}"),
        };
        mounts.push((parts[1].to_owned(), host));
    }
    (command, env, Mounts(mounts))
}

#[test]
fn compose_token_seed_seeds_only_a_volume_without_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let seed = tmp.path().join("seed");
    std::fs::create_dir(&state).unwrap();
    std::fs::create_dir(&seed).unwrap();
    let shim = shims(tmp.path());
    let (command, env, mounts) = token_seed(&state, &seed);
    let token_inside = &env.iter().find(|(k, _)| k == "TOKEN_FILE").unwrap().1;
    let token = mounts.host(token_inside);
    let run = |cmd: &[String]| {
        let out = run_sh(cmd, &env, &mounts, &shim);
        assert!(out.status.success(), "{}", output_text(&out));
    };

    // The exporter reads the file token-seed writes (qonto.env.example's flag, same volume).
    let c = compose();
    let exporter_mount = strings(&c["services"]["qonto-exporter"]["volumes"])
        .into_iter()
        .find_map(|v| v.strip_prefix("qonto-exporter-state:").map(str::to_owned))
        .expect("the exporter mounts the state volume");
    let seed_mount = strings(&c["services"]["token-seed"]["volumes"])
        .into_iter()
        .find_map(|v| v.strip_prefix("qonto-exporter-state:").map(str::to_owned))
        .unwrap();
    let relative = Path::new(token_inside).strip_prefix(&seed_mount).unwrap();
    let example = read(&repo().join("deploy/qonto.env.example"));
    let flag = format!(
        "--qonto.oauth.refresh-token-file={}",
        Path::new(&exporter_mount).join(relative).display()
    );
    assert!(example.contains(&flag), "qonto.env.example lacks {flag}");

    run(&command); // demo mode: nothing to seed
    assert!(!token.exists());
    let chowned = read(&shim.join("log"));
    assert!(
        chowned.contains(&format!("chown -R 65532:65532 {}", state.display())),
        "token-seed hands the volume to the exporter's user: {chowned}"
    );

    std::fs::write(seed.join("refresh-token"), "first\n").unwrap();
    run(&command);
    assert_eq!(read(&token), "first\n");
    assert_eq!(mode(&token), 0o600);
    assert_eq!(mode(&state), 0o700);

    std::fs::write(&token, "rotated\n").unwrap();
    std::fs::write(seed.join("refresh-token"), "a-different-token\n").unwrap();
    run(&command);
    assert_eq!(
        read(&token),
        "rotated\n",
        "token-seed replaced the live token"
    );

    // The README's compose re-seed steps, literally: remove the token, start again.
    let readme = read(&repo().join("README.md"));
    let reseed: Vec<Cmd> = shell_blocks(&readme)
        .iter()
        .flat_map(|b| commands(b, "README.md"))
        .filter(|c| {
            c.words
                .starts_with(&["docker".into(), "compose".into(), "run".into()])
        })
        .filter(|c| c.words.contains(&"token-seed".to_owned()))
        .collect();
    assert_eq!(
        reseed.len(),
        1,
        "the README re-seeds with one `docker compose run … token-seed`"
    );
    let w = &reseed[0].words;
    let at = w.iter().position(|a| a == "token-seed").unwrap();
    std::fs::write(seed.join("refresh-token"), "new\n").unwrap();
    run(&w[at + 1..]);
    run(&command);
    assert_eq!(
        read(&token),
        "new\n",
        "the README's re-seed steps did not install the new token"
    );
}

// ---------------------------------------------------------------------------- Dockerfile

#[test]
fn dockerfile_says_what_it_ships_and_hadolint_is_clean() {
    let text = read(&repo().join("Dockerfile"));
    let lower = text.to_lowercase();
    for claim in ["static binary", "statically linked", "fully static"] {
        assert!(!lower.contains(claim), "the Dockerfile claims a {claim}");
    }
    assert!(
        lower.contains("glibc"),
        "the Dockerfile says the binary needs glibc"
    );
    let runtime = text
        .lines()
        .rfind(|l| l.starts_with("FROM "))
        .expect("a FROM line");
    // The binary as cargo builds it for this target: its shared libraries must all be in the
    // runtime image. distroless/static has none, base has glibc, cc adds libgcc_s.
    let out = Command::new("ldd").arg(BIN).output().expect("ldd runs");
    let libs = String::from_utf8_lossy(&out.stdout).to_string();
    let needs_gcc_s = libs.contains("libgcc_s");
    for line in libs.lines() {
        let lib = line.split_whitespace().next().unwrap_or_default();
        assert!(
            [
                "linux-vdso",
                "libc.so",
                "libm.so",
                "libgcc_s.so",
                "ld-linux",
                "libdl.so",
                "libpthread.so",
                "librt.so"
            ]
            .iter()
            .any(|l| lib.contains(l)),
            "the binary needs {lib}, which distroless/cc does not carry"
        );
    }
    if needs_gcc_s {
        assert!(
            runtime.contains("distroless/cc"),
            "the binary needs libgcc_s: the runtime image must be distroless/cc, not {runtime}"
        );
    }
    let rust = text
        .lines()
        .find_map(|l| l.strip_prefix("ARG RUST_VERSION="))
        .expect("ARG RUST_VERSION");
    assert_eq!(
        rust.split('.').count(),
        3,
        "the Rust image is pinned to x.y.z, not {rust}"
    );
    let hadolint = which("hadolint").unwrap_or_else(|| {
        panic!("`hadolint` is required by this test (scripts/test installs it from PyPI)")
    });
    let out = Command::new(hadolint)
        .arg(repo().join("Dockerfile"))
        .output()
        .expect("hadolint runs");
    assert!(out.status.success(), "hadolint:\n{}", output_text(&out));
}

/// True when an ignore file (`.gitignore` or `.dockerignore` syntax) ignores the file `name` at
/// the root of the repository or build context. Only the forms that can name a root file are
/// recognised (`name`, `/name`, `**/name`); a later `!` line for it re-includes it.
fn ignores_root_file(ignore_file: &str, name: &str) -> bool {
    let mut ignored = false;
    for line in ignore_file.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (negated, pattern) = match line.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, line),
        };
        let pattern = pattern
            .strip_prefix("**/")
            .or_else(|| pattern.strip_prefix('/'))
            .unwrap_or(pattern);
        if pattern == name {
            ignored = !negated;
        }
    }
    ignored
}

#[test]
fn ignores_root_file_reads_the_forms_that_name_a_root_file() {
    assert!(ignores_root_file("a\n", "a"));
    assert!(ignores_root_file("/a\n", "a"));
    assert!(ignores_root_file("# x\n**/a\n", "a"));
    assert!(!ignores_root_file("a\n!a\n", "a"));
    assert!(!ignores_root_file("ab\n# a\n", "a"));
}

#[test]
fn local_files_the_readme_makes_secrets_from_are_ignored_by_git_and_docker() {
    // The README's steps run from the repository's root, which is also the build context of its
    // `docker build .`: a credential file there must neither be committed nor sent to the builder.
    let gitignore = read(&repo().join(".gitignore"));
    let dockerignore = read(&repo().join(".dockerignore"));
    let mut files = BTreeSet::new();
    for cmd in doc_commands("README.md") {
        if let Some(Kubectl::CreateSecret { files: f, .. }) = parse_kubectl(&cmd) {
            for (_, path) in f {
                files.insert(path);
            }
        }
    }
    assert!(
        files.len() >= 2,
        "the README creates its Secrets from no local file: {files:?}"
    );
    for path in &files {
        let rel = path.strip_prefix("./").unwrap_or(path);
        assert_eq!(
            rel.components().count(),
            1,
            "{}: the README's Secret files are expected in the repository's root",
            path.display()
        );
        let name = rel.to_str().unwrap();
        assert!(
            ignores_root_file(&gitignore, name),
            ".gitignore does not ignore {name}, which the README has users create in the \
             repository's root (`git add .` would commit a credential)"
        );
        assert!(
            ignores_root_file(&dockerignore, name),
            ".dockerignore does not ignore {name}: `docker build .` from the repository's root \
             would send that credential in the build context"
        );
    }
}
