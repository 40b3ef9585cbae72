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
/// `resources` (files, or directories holding a kustomization), `components` (directories holding
/// a kustomize Component: its resources, then its patches over everything so far), `patches`
/// (JSON patches, RFC 6902, of `add` operations, on a target by kind and name) and the `images`
/// transformer. Any other field fails the test, so the rendering can never silently differ from
/// kustomize's (`webhooks_component_renders_as_kubectl_kustomize_does` compares the two).
fn kustomize(dir: &Path) -> Vec<Value> {
    let k = kustomization(dir, "Kustomization");
    let mut objects = Vec::new();
    for res in k["resources"].as_array().expect("resources is a list") {
        let path = dir.join(res.as_str().expect("a resource is a path"));
        if path.is_dir() {
            objects.extend(kustomize(&path));
        } else {
            objects.extend(yaml_file(&path));
        }
    }
    for c in k["components"].as_array().cloned().unwrap_or_default() {
        let path = dir.join(c.as_str().expect("a component is a path"));
        let comp = kustomization(&path, "Component");
        assert!(
            comp.get("components").is_none() && comp.get("images").is_none(),
            "{}: nested components and images in a component are not modelled",
            path.display()
        );
        for res in comp["resources"].as_array().cloned().unwrap_or_default() {
            objects.extend(yaml_file(
                &path.join(res.as_str().expect("a resource is a path")),
            ));
        }
        apply_patches(&path, &comp, &mut objects);
    }
    apply_patches(dir, &k, &mut objects);
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

/// The kustomization file of `dir`, checked to be of `expected_kind` and to hold only the fields
/// [`kustomize`] models.
fn kustomization(dir: &Path, expected_kind: &str) -> Value {
    let file = dir.join("kustomization.yaml");
    let docs = yaml_file(&file);
    assert_eq!(docs.len(), 1, "{} must hold one document", file.display());
    let k = docs[0].clone();
    let known: BTreeSet<&str> = [
        "apiVersion",
        "kind",
        "resources",
        "images",
        "components",
        "patches",
    ]
    .into();
    for key in k.as_object().expect("kustomization is a mapping").keys() {
        assert!(
            known.contains(key.as_str()),
            "{}: field `{key}` is not modelled by this test's kustomize rendering; extend \
             kustomize() in tests/deploy_bundle.rs",
            file.display()
        );
    }
    assert_eq!(kind(&k), expected_kind, "{}", file.display());
    k
}

/// Applies the `patches` of kustomization `k` (in `dir`) to `objects`: each a file of JSON patch
/// operations (RFC 6902) on the objects of its target's kind and name, at least one.
fn apply_patches(dir: &Path, k: &Value, objects: &mut [Value]) {
    for patch in k["patches"].as_array().cloned().unwrap_or_default() {
        let keys: BTreeSet<&str> = patch
            .as_object()
            .expect("a patch is a mapping")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["path", "target"].into(),
            "{}: only `path` + `target` patches are modelled",
            dir.display()
        );
        let target = &patch["target"];
        let target_keys: BTreeSet<&str> = target
            .as_object()
            .expect("target is a mapping")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(target_keys, ["kind", "name"].into(), "{}", dir.display());
        let file = dir.join(patch["path"].as_str().expect("patches[].path"));
        let docs = yaml_file(&file);
        assert_eq!(docs.len(), 1, "{}: one document", file.display());
        let ops = docs[0]
            .as_array()
            .unwrap_or_else(|| panic!("{}: a JSON patch is a list of operations", file.display()));
        let mut matched = 0;
        for obj in objects.iter_mut() {
            if kind(obj) == target["kind"] && name(obj) == target["name"] {
                for op in ops {
                    json_patch_add(obj, op, &file);
                }
                matched += 1;
            }
        }
        assert!(
            matched > 0,
            "{}: its target matches no object",
            file.display()
        );
    }
}

/// One RFC 6902 `add` operation on `obj`: into an object by key, into an array at an index or at
/// its end (`-`). The parent must exist, as kustomize requires.
fn json_patch_add(obj: &mut Value, op: &Value, origin: &Path) {
    assert_eq!(
        op["op"],
        "add",
        "{}: only `add` operations are modelled",
        origin.display()
    );
    let path = op["path"].as_str().expect("op.path");
    assert!(
        !path.contains('~'),
        "{}: escaped pointers are not modelled",
        origin.display()
    );
    let (parent, last) = path.rsplit_once('/').expect("an absolute JSON pointer");
    let value = op["value"].clone();
    let object = name(obj).to_owned();
    let target = obj
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("{}: {parent} does not exist in {object}", origin.display()));
    match target {
        Value::Array(a) if last == "-" => a.push(value),
        Value::Array(a) => {
            let i: usize = last.parse().expect("an array index");
            assert!(i <= a.len(), "{}: index {i} out of range", origin.display());
            a.insert(i, value);
        }
        Value::Object(m) => {
            m.insert(last.to_owned(), value);
        }
        other => panic!("{}: cannot add into {other}", origin.display()),
    }
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
    /// `kubectl delete -f/-k …`: the objects those files name.
    DeleteFiles(Vec<Source>),
    /// `kubectl scale KIND/NAME --replicas=N`.
    Scale {
        kind: String,
        name: String,
        replicas: u64,
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
        "apply" | "create" | "replace" | "delete"
            if verb != "delete" || args.iter().any(|a| a == "-f" || a == "-k") =>
        {
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
            } else if verb == "delete" {
                Kubectl::DeleteFiles(sources)
            } else {
                Kubectl::Apply(sources)
            })
        }
        "delete" if positional.len() >= 3 => Some(Kubectl::Delete {
            kind: positional[1].to_string(),
            name: positional[2].to_string(),
        }),
        "scale" => {
            let target = positional
                .get(1)
                .unwrap_or_else(|| panic!("{}: `kubectl scale` without KIND/NAME", cmd.origin));
            let (kind, name) = target.split_once('/').unwrap_or_else(|| {
                panic!(
                    "{}: `kubectl scale {target}`: expected KIND/NAME",
                    cmd.origin
                )
            });
            let replicas = flag_values("--replicas", "--replicas");
            let replicas = replicas
                .first()
                .and_then(|r| r.parse().ok())
                .unwrap_or_else(|| panic!("{}: `kubectl scale` without --replicas=N", cmd.origin));
            Some(Kubectl::Scale {
                kind: kind.to_owned(),
                name: name.to_owned(),
                replicas,
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
            "statefulset" | "statefulsets" | "sts" => "StatefulSet".into(),
            "pvc" | "persistentvolumeclaim" | "persistentvolumeclaims" => {
                "PersistentVolumeClaim".into()
            }
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
            Kubectl::DeleteFiles(sources) => {
                for source in &sources {
                    for obj in objects_of(source, &cmd.origin) {
                        self.objects
                            .remove(&(kind(&obj).to_owned(), name(&obj).to_owned()));
                    }
                }
                Vec::new()
            }
            Kubectl::Scale {
                kind: k,
                name: n,
                replicas,
            } => {
                let key = (Self::kind_key(&k), n.clone());
                let obj = self.objects.get_mut(&key).unwrap_or_else(|| {
                    panic!(
                        "{}: `kubectl scale` of {k}/{n}, which does not exist",
                        cmd.origin
                    )
                });
                obj["spec"]["replicas"] = json!(replicas);
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
    let claims = BTreeMap::from([(STATE_CLAIM.to_owned(), state.to_owned())]);
    run_k8s_container_with(obj, container_name, cluster, &claims, scratch)
}

/// Writes a Secret volume's files as the kubelet does: into a timestamped directory, published
/// by the symlink `..data`, each key a symlink `KEY -> ..data/KEY`. Scripts that list the
/// directory see the dot entries too.
fn write_secret_volume(dir: &Path, files: &[(String, String)]) {
    let stamp = dir.join("..2024_01_01_00_00_00.000000001");
    std::fs::create_dir_all(&stamp).unwrap();
    for (path, value) in files {
        std::fs::write(stamp.join(path), value).unwrap();
        std::os::unix::fs::symlink(Path::new("..data").join(path), dir.join(path)).unwrap();
    }
    std::os::unix::fs::symlink(stamp.file_name().unwrap(), dir.join("..data")).unwrap();
}

/// [`run_k8s_container`] with the claims given by name: a `persistentVolumeClaim` volume's
/// `claimName`, or a StatefulSet's volumeClaimTemplate name (the replica's own claim).
fn run_k8s_container_with(
    obj: &Value,
    container_name: &str,
    cluster: &Cluster,
    claims: &BTreeMap<String, PathBuf>,
    scratch: &Path,
) -> Output {
    let c = container(obj, container_name);
    let spec = pod_spec(obj).unwrap();
    let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
    let templates: Vec<Value> = obj["spec"]["volumeClaimTemplates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut mounts = Vec::new();
    for m in c["volumeMounts"].as_array().cloned().unwrap_or_default() {
        let vname = m["name"].as_str().unwrap();
        let mount_path = m["mountPath"].as_str().unwrap().to_owned();
        if templates.iter().any(|t| t["metadata"]["name"] == vname) {
            let dir = claims
                .get(vname)
                .unwrap_or_else(|| panic!("no directory for the claim template {vname}"));
            mounts.push((mount_path, dir.clone()));
            continue;
        }
        let vol = volumes
            .iter()
            .find(|v| v["name"] == vname)
            .unwrap_or_else(|| panic!("volume {vname} is not declared"));
        if let Some(claim) = vol["persistentVolumeClaim"]["claimName"].as_str() {
            let dir = claims
                .get(claim)
                .unwrap_or_else(|| panic!("volume {vname}: claim {claim} is not modelled"));
            mounts.push((mount_path, dir.clone()));
        } else if let Some(secret_name) = vol["secret"]["secretName"].as_str() {
            let dir = scratch.join(format!("secret-{vname}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let mut files = Vec::new();
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
                            Some(value) => files.push((path, value.to_owned())),
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
            write_secret_volume(&dir, &files);
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
    network_policy_admits_only_prometheus(&applied_set(), &deployment());
}

#[test]
fn sharded_network_policy_admits_only_prometheus_to_the_metrics_port() {
    let set = sharded_set();
    network_policy_admits_only_prometheus(&set, &statefulset());
    assert_eq!(
        find(&set, "NetworkPolicy", "qonto-exporter")["spec"],
        find(&applied_set(), "NetworkPolicy", "qonto-exporter")["spec"],
        "the sharded NetworkPolicy differs from the single one: change both"
    );
}

/// One NetworkPolicy of `set` selects the pods of `d`, and admits only Prometheus's pods (with
/// labels the README documents) to the metrics port.
fn network_policy_admits_only_prometheus(set: &[Value], d: &Value) {
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
    let port_names: BTreeSet<&str> = container(d, "qonto-exporter")["ports"]
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
        container(d, "qonto-exporter")["ports"]
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
    for (i, obj) in sharded_set().iter().enumerate() {
        let path = tmp
            .path()
            .join(format!("sharded-{i:02}-{}-{}.json", kind(obj), name(obj)));
        std::fs::write(&path, serde_json::to_string_pretty(obj).unwrap()).unwrap();
        files.push(path);
    }
    // The webhooks component, as rendered into the set (its patch file is not an object).
    for (i, obj) in webhooks_set().iter().enumerate() {
        let path = tmp
            .path()
            .join(format!("webhooks-{i:02}-{}-{}.json", kind(obj), name(obj)));
        std::fs::write(&path, serde_json::to_string_pretty(obj).unwrap()).unwrap();
        files.push(path);
    }
    for sub in ["examples", "maintenance", "sharded/maintenance"] {
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
        sharded_dir(),
        sharded_dir().join("maintenance"),
        k8s_dir().join("webhooks"),
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

/// `text` as compose interpolates it with no variable set: `${VAR:-default}` and
/// `${VAR-default}` become their default, `${VAR}` and `$VAR` become empty (compose warns), `$$`
/// is a literal `$`. `${VAR:?message}` is refused: it would not start without the variable.
fn interpolate_unset(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(a) = after.strip_prefix('{') {
            let end = a.find('}').expect("an unclosed ${");
            let inner = &a[..end];
            assert!(
                !inner.contains(":?") && !inner.contains('?'),
                "${{{inner}}} is required"
            );
            if let Some((_, default)) = inner.split_once(":-").or_else(|| inner.split_once('-')) {
                out.push_str(default);
            }
            rest = &a[end + 1..];
        } else {
            let name_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            rest = &after[name_len..];
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn interpolate_unset_takes_the_defaults() {
    assert_eq!(
        interpolate_unset("${QONTO_WEBHOOK_BIND:-127.0.0.1}:10160:10160"),
        "127.0.0.1:10160:10160"
    );
    assert_eq!(interpolate_unset("${A-x}:$B:$${C}"), "x::${C}");
    assert_eq!(
        interpolate_unset("127.0.0.1:10157:10157"),
        "127.0.0.1:10157:10157"
    );
}

#[test]
fn compose_publishes_every_port_on_loopback_only() {
    let mut published = 0;
    for (svc, s) in services(&compose()) {
        for p in s["ports"].as_array().into_iter().flatten() {
            published += 1;
            let host_ip = match p {
                Value::String(short) => {
                    let short = interpolate_unset(short);
                    let parts: Vec<&str> = short.split(':').collect();
                    (parts.len() == 3).then(|| parts[0].to_owned())
                }
                Value::Object(long) => long
                    .get("host_ip")
                    .and_then(Value::as_str)
                    .map(interpolate_unset),
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

/// The exporter's published ports of compose, as (raw host IP, host port, container port).
fn exporter_ports() -> Vec<(String, String, String)> {
    let c = compose();
    c["services"]["qonto-exporter"]["ports"]
        .as_array()
        .expect("the exporter publishes ports")
        .iter()
        .map(|p| {
            let short = p.as_str().expect("short syntax");
            let mut parts: Vec<&str> = short.rsplitn(3, ':').collect();
            parts.reverse();
            assert_eq!(parts.len(), 3, "{short}: HOST_IP:HOST_PORT:CONTAINER_PORT");
            (
                parts[0].to_owned(),
                parts[1].to_owned(),
                parts[2].to_owned(),
            )
        })
        .collect()
}

#[test]
fn compose_publishes_the_webhook_receiver_on_loopback_unless_told_and_metrics_only_on_loopback() {
    let ports = exporter_ports();
    let webhook = ports
        .iter()
        .find(|(_, _, container)| container == "10160")
        .expect("compose publishes the webhook port 10160");
    // The host address is a variable the user may set (a reverse proxy on another interface),
    // with loopback as its default.
    assert!(
        webhook.0.starts_with("${") && webhook.0.contains(":-"),
        "{webhook:?}: the webhook port's host address is a ${{VAR:-default}}"
    );
    assert_eq!(interpolate_unset(&webhook.0), "127.0.0.1");
    let var = webhook.0[2..webhook.0.find(":-").unwrap()].to_owned();
    let example = read(&repo().join("deploy/qonto.env.example"));
    assert!(
        example.contains(&format!("# {var}=127.0.0.1")),
        "qonto.env.example documents {var}, commented out at its default"
    );
    // /metrics is never behind a variable: loopback, whatever qonto.env says.
    let metrics = ports
        .iter()
        .find(|(_, _, container)| container == "10157")
        .expect("compose publishes the metrics port");
    assert_eq!(metrics.0, "127.0.0.1");
    // The default command does not start the receiver (it needs a secret); qonto.env.example
    // says how, with the same port, and holds a placeholder secret only, commented out.
    let c = compose();
    let command = c["services"]["qonto-exporter"]["command"].as_str().unwrap();
    assert!(!command.contains("--webhook."), "{command}");
    assert!(example.contains("--webhook.listen-address=0.0.0.0:10160"));
    let secret_lines: Vec<&str> = example
        .lines()
        .filter(|l| l.contains("QONTO_WEBHOOK_SECRET="))
        .collect();
    assert!(
        !secret_lines.is_empty(),
        "qonto.env.example shows QONTO_WEBHOOK_SECRET"
    );
    for l in secret_lines {
        assert!(l.starts_with("# ") && l.contains("replace-with"), "{l}");
    }
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
    // Files under $HOME (the sharded subsection keeps its credentials there) are outside the
    // repository: neither committed nor in the build context.
    let files: BTreeSet<PathBuf> = files
        .into_iter()
        .filter(|p| !p.starts_with("$HOME"))
        .collect();
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

// ------------------------------------------------------------ Kubernetes, sharded: StatefulSet

fn sharded_dir() -> PathBuf {
    k8s_dir().join("sharded")
}

/// What `kubectl apply -k deploy/kubernetes/sharded/` sends.
fn sharded_set() -> Vec<Value> {
    kustomize(&sharded_dir())
}

fn statefulset() -> Value {
    find(&sharded_set(), "StatefulSet", "qonto-exporter").clone()
}

fn sharded_reseed_jobs() -> Vec<Value> {
    let docs = yaml_file(&sharded_dir().join("maintenance/reseed-refresh-tokens.yaml"));
    assert!(docs.iter().all(|d| kind(d) == "Job"), "only Jobs there");
    docs
}

fn args_of(c: &Value) -> Vec<String> {
    strings(&c["args"])
}

/// The value of `--flag=value` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(flag)?.strip_prefix('='))
}

fn replicas(sts: &Value) -> u64 {
    sts["spec"]["replicas"]
        .as_u64()
        .expect("the StatefulSet sets spec.replicas")
}

fn env_value<'a>(c: &'a Value, n: &str) -> &'a str {
    c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == n)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("{} has no {n}", c["name"]))
}

/// Where a container mounts a volume, by volume name.
fn mount_of<'a>(c: &'a Value, volume: &str) -> &'a str {
    c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == volume)
        .and_then(|m| m["mountPath"].as_str())
        .unwrap_or_else(|| panic!("{} does not mount {volume}", c["name"]))
}

/// The configuration file of the ConfigMap the StatefulSet mounts at --config.file.
fn sharded_config_text() -> String {
    let sts = statefulset();
    let exporter = container(&sts, "qonto-exporter");
    let args = args_of(exporter);
    let file = flag_value(&args, "--config.file").expect("--config.file");
    let spec = pod_spec(&sts).unwrap();
    let (vol, mount) = exporter["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| {
            let mp = m["mountPath"].as_str()?;
            Path::new(file)
                .starts_with(mp)
                .then(|| (m["name"].as_str().unwrap().to_owned(), mp.to_owned()))
        })
        .next()
        .expect("--config.file is on a mounted volume");
    let v = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == vol.as_str())
        .unwrap();
    assert!(
        exporter["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m.get("subPath").is_none() && m.get("subPathExpr").is_none()),
        "a subPath mount never sees an edited ConfigMap or Secret: reloads would read the old file"
    );
    let cm_name = v["configMap"]["name"]
        .as_str()
        .expect("--config.file comes from a ConfigMap");
    let set = sharded_set();
    let cm = find(&set, "ConfigMap", cm_name);
    let key = Path::new(file).strip_prefix(&mount).unwrap();
    cm["data"][key.to_str().unwrap()]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap {cm_name} has no key {}", key.display()))
        .to_owned()
}

/// The StatefulSet's exporter arguments as the exporter parses them, for the replica of
/// `ordinal` (its --shard.index as the pod name gives it).
fn replica_args(ordinal: u32) -> qonto_exporter::config::RunArgs {
    use clap::Parser;
    let sts = statefulset();
    let pod = format!("{}-{ordinal}", name(&sts));
    let index =
        qonto_exporter::shard::ordinal(&pod).expect("a StatefulSet pod name ends in its ordinal");
    let mut argv = vec!["qonto-exporter".to_owned()];
    argv.extend(args_of(container(&sts, "qonto-exporter")));
    argv.push(format!("--shard.index={index}"));
    let cli = qonto_exporter::config::Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("the StatefulSet's arguments do not parse: {e}"));
    assert!(cli.command.is_none());
    cli.run
}

/// The organisations of the ConfigMap, with the container's mount paths turned into `dirs`
/// (mount path → host directory), as the replica of `ordinal` checks them.
fn parse_sharded_config(
    dirs: &[(String, PathBuf)],
    ordinal: u32,
) -> Result<Vec<qonto_exporter::organizations::Organization>, String> {
    let mut text = sharded_config_text();
    for (mount, dir) in dirs {
        text = text.replace(&format!("{mount}/"), &format!("{}/", dir.display()));
    }
    let args = replica_args(ordinal);
    args.validate().map_err(|e| e.to_string())?;
    let shard = args.shard().map_err(|e| e.to_string())?;
    qonto_exporter::organizations::parse(&text, &args, shard).map_err(|e| e.0)
}

/// The lines of README.md under the heading `heading`, up to the next heading (`#`… outside
/// code fences).
fn readme_section(heading: &str) -> String {
    let readme = read(&repo().join("README.md"));
    let mut out = String::new();
    let mut inside = false;
    let mut fenced = false;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if !fenced && line.starts_with('#') {
            if inside {
                break;
            }
            inside = line.trim_end() == heading;
            continue;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(!out.is_empty(), "README.md has no section {heading:?}");
    out
}

const SHARDED_HEADING: &str = "#### Kubernetes, sharded across replicas";

/// Every command of the README's sharded subsection, by shell block (inline ones last).
fn sharded_readme_blocks() -> Vec<Vec<Cmd>> {
    let text = readme_section(SHARDED_HEADING);
    let mut blocks: Vec<Vec<Cmd>> = shell_blocks(&text)
        .iter()
        .enumerate()
        .map(|(i, b)| {
            commands(
                b,
                &format!("README.md, sharded subsection, shell block {}", i + 1),
            )
        })
        .collect();
    let inline: Vec<Cmd> = inline_commands(&text)
        .iter()
        .flat_map(|span| commands(span, &format!("README.md, sharded subsection, `{span}`")))
        .collect();
    blocks.push(inline);
    blocks
}

#[test]
fn sharded_kustomization_renders_without_secrets_jobs_or_the_single_deployment() {
    let set = sharded_set();
    let kinds: BTreeSet<(&str, &str)> = set.iter().map(|o| (kind(o), name(o))).collect();
    for want in [
        ("StatefulSet", "qonto-exporter"),
        ("Service", "qonto-exporter"),
        ("Service", "qonto-exporter-headless"),
        ("NetworkPolicy", "qonto-exporter"),
        ("ServiceMonitor", "qonto-exporter"),
        ("ConfigMap", "qonto-exporter-config"),
    ] {
        assert!(
            kinds.contains(&want),
            "the sharded set lacks {want:?}: {kinds:?}"
        );
    }
    for o in &set {
        assert!(
            !["Secret", "Job", "Deployment", "PersistentVolumeClaim"].contains(&kind(o)),
            "the sharded set holds {} {}",
            kind(o),
            name(o)
        );
    }
    // The same image the README builds and pushes for the single Deployment.
    let (d, sts) = (deployment(), statefulset());
    assert_eq!(
        container(&sts, "qonto-exporter")["image"],
        container(&d, "qonto-exporter")["image"],
        "the StatefulSet runs another image than the one the README builds and pushes"
    );
}

#[test]
fn sharded_replicas_equal_the_shard_count_and_pods_find_their_shard() {
    let sts = statefulset();
    let n = replicas(&sts);
    assert!(n >= 2, "a sharded example of one replica shows nothing");
    let exporter = container(&sts, "qonto-exporter");
    let args = args_of(exporter);
    let count: u64 = flag_value(&args, "--shard.count")
        .expect("--shard.count")
        .parse()
        .unwrap();
    assert_eq!(
        count, n,
        "spec.replicas ({n}) and --shard.count ({count}) must be equal: with fewer replicas, the \
         organisations of the missing shards are polled by nobody"
    );
    assert!(
        flag_value(&args, "--shard.index").is_none(),
        "--shard.index would give every replica the same shard; each takes its pod's ordinal"
    );
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
    let pod_name = exporter["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "POD_NAME")
        .expect("POD_NAME in the exporter's environment");
    assert_eq!(
        pod_name["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    // Every replica's arguments are accepted, and the replicas' shards are 0..n, each once.
    let mut shards = BTreeSet::new();
    for ordinal in 0..u32::try_from(n).unwrap() {
        let a = replica_args(ordinal);
        a.validate()
            .unwrap_or_else(|e| panic!("replica {ordinal}: {e}"));
        shards.insert(a.shard().unwrap().index);
    }
    assert_eq!(shards, (0..u32::try_from(n).unwrap()).collect());
    // One re-seed Job per replica, each on its own replica's claim.
    let template = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
        .as_str()
        .expect("a volumeClaimTemplate");
    let claims: BTreeSet<String> = sharded_reseed_jobs()
        .iter()
        .flat_map(|j| {
            pod_spec(j).unwrap()["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let want: BTreeSet<String> = (0..n)
        .map(|i| format!("{template}-{}-{i}", name(&sts)))
        .collect();
    assert_eq!(
        claims, want,
        "maintenance/reseed-refresh-tokens.yaml needs one Job per replica"
    );
    // Replicas behind one egress IP share Qonto's per-IP windows: together they keep to the
    // share one exporter takes by default.
    let share: f64 = flag_value(&args, "--qonto.budget-share")
        .expect("--qonto.budget-share, set for replicas sharing an IP")
        .parse()
        .unwrap();
    let default_share = replica_args(0);
    let single: qonto_exporter::config::RunArgs = {
        use clap::Parser;
        qonto_exporter::config::Cli::try_parse_from(["qonto-exporter"])
            .unwrap()
            .run
    };
    assert_eq!(default_share.budget_share, share);
    assert!(
        share * n as f64 <= single.budget_share + 1e-9,
        "{n} replicas × --qonto.budget-share {share} exceed one exporter's default {}",
        single.budget_share
    );
}

#[test]
fn sharded_pods_are_built_like_the_single_deployment() {
    let d = deployment();
    let sts = statefulset();
    let (dp, sp) = (pod_spec(&d).unwrap(), pod_spec(&sts).unwrap());
    for key in [
        "securityContext",
        "terminationGracePeriodSeconds",
        "automountServiceAccountToken",
    ] {
        assert_eq!(sp[key], dp[key], "pod {key} differs from deployment.yaml's");
    }
    let (de, se) = (
        container(&d, "qonto-exporter"),
        container(&sts, "qonto-exporter"),
    );
    for key in [
        "securityContext",
        "resources",
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
        "ports",
        "imagePullPolicy",
    ] {
        assert_eq!(
            se[key], de[key],
            "exporter {key} differs from deployment.yaml's"
        );
    }
    let (di, si) = (
        container(&d, "seed-refresh-token"),
        container(&sts, "seed-refresh-tokens"),
    );
    for key in ["securityContext", "resources", "image"] {
        assert_eq!(
            si[key], di[key],
            "init container {key} differs from deployment.yaml's"
        );
    }
    // Same listen address, storage on the replica's own claim, same poll interval and logs.
    let (da, sa) = (args_of(de), args_of(se));
    for f in ["--web.listen-address", "--poll.interval", "--log.format"] {
        assert_eq!(flag_value(&sa, f), flag_value(&da, f), "{f}");
    }
    let templates = sts["spec"]["volumeClaimTemplates"].as_array().unwrap();
    assert_eq!(templates.len(), 1, "one claim per replica");
    let t = &templates[0];
    let pvc = find(&applied_set(), "PersistentVolumeClaim", STATE_CLAIM).clone();
    assert_eq!(t["spec"]["accessModes"], json!(["ReadWriteOncePod"]));
    assert_eq!(
        t["spec"]["resources"], pvc["spec"]["resources"],
        "the claim's size differs from pvc.yaml's"
    );
    let state_mount = mount_of(se, t["metadata"]["name"].as_str().unwrap());
    assert_eq!(flag_value(&sa, "--storage.path"), Some(state_mount));
    assert_eq!(
        mount_of(si, t["metadata"]["name"].as_str().unwrap()),
        state_mount
    );
    assert_eq!(env_value(si, "TOKEN_DIR"), state_mount);
    // The claims outlive a scale-down and the StatefulSet: they hold live refresh tokens.
    assert_eq!(
        sts["spec"]["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
}

#[test]
fn sharded_services_scrape_every_replica_once() {
    let set = sharded_set();
    let sts = statefulset();
    let pod_labels = sts["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap()
        .clone();
    let matches = |selector: &Value, labels: &serde_json::Map<String, Value>| {
        selector
            .as_object()
            .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)))
    };
    let services: Vec<&Value> = set.iter().filter(|o| kind(o) == "Service").collect();
    for s in &services {
        assert!(
            matches(&s["spec"]["selector"], &pod_labels),
            "Service {} does not select the StatefulSet's pods",
            name(s)
        );
        assert_eq!(
            s["spec"]["publishNotReadyAddresses"],
            true,
            "Service {}: a replica still in its first polls (not ready) must stay listed",
            name(s)
        );
    }
    let headless = find(
        &set,
        "Service",
        sts["spec"]["serviceName"].as_str().unwrap(),
    );
    assert_eq!(
        headless["spec"]["clusterIP"], "None",
        "serviceName is a headless Service"
    );
    let monitors: Vec<&Value> = set.iter().filter(|o| kind(o) == "ServiceMonitor").collect();
    assert_eq!(monitors.len(), 1, "one ServiceMonitor");
    let scraped: Vec<&&Value> = services
        .iter()
        .filter(|s| {
            matches(
                &monitors[0]["spec"]["selector"]["matchLabels"],
                s["metadata"]["labels"].as_object().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        scraped.len(),
        1,
        "the ServiceMonitor must select exactly one Service, or each replica is scraped twice"
    );
    assert_eq!(
        name(scraped[0]),
        "qonto-exporter",
        "the job label (the Service's name) is the mixin's job=\"qonto-exporter\""
    );
    assert_ne!(scraped[0]["spec"]["clusterIP"], "None");
    let port = monitors[0]["spec"]["endpoints"][0]["port"]
        .as_str()
        .unwrap();
    assert!(
        scraped[0]["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == port),
        "the ServiceMonitor's port {port} is not a port of the Service"
    );
}

#[test]
fn sharded_config_example_is_a_valid_configuration_on_every_replica() {
    let sts = statefulset();
    let exporter = container(&sts, "qonto-exporter");
    let tmp = tempfile::tempdir().unwrap();
    let secrets = tmp.path().join("secrets");
    let state = tmp.path().join("state");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::create_dir(&state).unwrap();
    let secrets_mount = mount_of(exporter, "secrets").to_owned();
    let state_mount = mount_of(exporter, "state").to_owned();
    let dirs = [
        (secrets_mount.clone(), secrets.clone()),
        (state_mount.clone(), state.clone()),
    ];
    // Every file the configuration names is on the Secret volume or the replica's claim.
    let text = sharded_config_text();
    let config: Value = serde_norway::from_str(&text).unwrap();
    let mut oauth = Vec::new();
    for org in config["organizations"].as_array().unwrap() {
        let n = org["name"].as_str().unwrap();
        for (key, value) in org
            .as_object()
            .unwrap()
            .iter()
            .chain(org["oauth"].as_object().into_iter().flatten())
        {
            if key.ends_with("_file") {
                let path = value.as_str().unwrap();
                let on_secrets = Path::new(path).starts_with(&secrets_mount);
                let on_state = Path::new(path).starts_with(&state_mount);
                if key == "refresh_token_file" {
                    assert!(
                        on_state,
                        "{n}: {path} is not on the replica's writable claim"
                    );
                    assert_eq!(
                        Path::new(path).file_name().unwrap().to_str().unwrap(),
                        format!("{n}.refresh-token"),
                        "{n}: the init container seeds <name>.refresh-token"
                    );
                    oauth.push(n.to_owned());
                } else {
                    assert!(on_secrets, "{n}: {key} {path} is not on the Secret volume");
                }
                let host = dirs
                    .iter()
                    .find_map(|(m, d)| Path::new(path).strip_prefix(m).ok().map(|r| d.join(r)))
                    .unwrap();
                std::fs::write(host, format!("{n}-{key}-value\n")).unwrap();
            }
        }
    }
    assert!(!oauth.is_empty(), "the example has an OAuth organisation");
    let n = u32::try_from(replicas(&sts)).unwrap();
    // Each replica polls the organisations of its shard; together, every one exactly once, and
    // the example gives every replica some.
    let mut owners = BTreeMap::new();
    for ordinal in 0..n {
        let orgs = parse_sharded_config(&dirs, ordinal)
            .unwrap_or_else(|e| panic!("replica {ordinal} refuses the example configuration: {e}"));
        let shard = replica_args(ordinal).shard().unwrap();
        for o in &orgs {
            assert!(shard.owns(&o.name));
            assert!(
                owners.insert(o.name.clone(), ordinal).is_none(),
                "{} polled by two replicas",
                o.name
            );
        }
    }
    assert!(
        owners.len() >= 3,
        "a couple of organisations at least: {owners:?}"
    );
    assert!(oauth.iter().all(|o| owners.contains_key(o)), "{owners:?}");
    let used: BTreeSet<u32> = owners.values().copied().collect();
    assert_eq!(
        used.len() as u32,
        n,
        "some replica of the example owns nothing: {owners:?}"
    );
    // A replica reads the secrets of its own organisations only: without the token file of an
    // OAuth organisation, its owner refuses the configuration, the other replicas do not.
    std::fs::remove_file(state.join(format!("{}.refresh-token", oauth[0]))).unwrap();
    for ordinal in 0..n {
        let parsed = parse_sharded_config(&dirs, ordinal);
        if owners[&oauth[0]] == ordinal {
            let e = parsed.expect_err("a missing token file of its own organisation is refused");
            assert!(e.contains(&oauth[0]), "{e}");
        } else {
            parsed.unwrap_or_else(|e| {
                panic!("replica {ordinal} refuses another replica's missing token file: {e}")
            });
        }
    }
}

/// The StatefulSet's init container, run for one replica whose claim is `state`.
fn run_seed(cluster: &Cluster, state: &Path, scratch: &Path) {
    let sts = statefulset();
    let template = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let claims = BTreeMap::from([(template, state.to_owned())]);
    let out = run_k8s_container_with(&sts, "seed-refresh-tokens", cluster, &claims, scratch);
    assert!(out.status.success(), "{}", output_text(&out));
}

fn cluster_with_seeds(seeds: &[(&str, &str)]) -> Cluster {
    let mut c = Cluster::default();
    if !seeds.is_empty() {
        let data: serde_json::Map<String, Value> = seeds
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        c.objects.insert(
            ("Secret".into(), "qonto-exporter-refresh-tokens".into()),
            json!({"kind": "Secret", "metadata": {"name": "qonto-exporter-refresh-tokens"},
                   "stringData": data}),
        );
    }
    c
}

fn files_in(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_str().unwrap().to_owned(),
                read(&p),
            )
        })
        .collect()
}

#[test]
fn sharded_init_container_seeds_missing_tokens_and_never_overwrites_one() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();

    // No Secret (API keys only): nothing is written.
    run_seed(&cluster_with_seeds(&[]), &state, tmp.path());
    assert!(files_in(&state).is_empty());

    // An empty volume receives every token, owner-only; other keys are not tokens.
    let first = [
        ("initech.refresh-token", "initech-1\n"),
        ("umbrella.refresh-token", "umbrella-1\n"),
        ("README", "not a token"),
        ("hooli.refresh-token", ""),
    ];
    run_seed(&cluster_with_seeds(&first), &state, tmp.path());
    let want = BTreeMap::from([
        ("initech.refresh-token".to_owned(), "initech-1\n".to_owned()),
        (
            "umbrella.refresh-token".to_owned(),
            "umbrella-1\n".to_owned(),
        ),
    ]);
    assert_eq!(
        files_in(&state),
        want,
        "an empty key is not seeded, nor a non-token key"
    );
    for f in want.keys() {
        assert_eq!(mode(&state.join(f)), 0o600, "{f}");
    }

    // The owner rotates its token; whatever the Secret holds next (the same seeds, new ones,
    // none), a file on the volume is never replaced. A missing one is seeded; an empty one
    // counts as missing.
    std::fs::write(state.join("initech.refresh-token"), "initech-rotated\n").unwrap();
    std::fs::write(state.join("umbrella.refresh-token"), "").unwrap();
    for seeds in [
        &first[..],
        &[
            ("initech.refresh-token", "initech-2\n"),
            ("umbrella.refresh-token", "umbrella-2\n"),
            ("globex.refresh-token", "globex-1\n"),
        ][..],
        &[][..],
    ] {
        run_seed(&cluster_with_seeds(seeds), &state, tmp.path());
        assert_eq!(
            read(&state.join("initech.refresh-token")),
            "initech-rotated\n",
            "seeds {seeds:?} replaced the live token"
        );
    }
    assert_eq!(read(&state.join("umbrella.refresh-token")), "umbrella-1\n");
    assert_eq!(read(&state.join("globex.refresh-token")), "globex-1\n");
    let leftovers: Vec<String> = files_in(&state)
        .into_keys()
        .filter(|f| !f.ends_with(".refresh-token"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn sharded_reseed_jobs_replace_tokens_only_from_their_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let jobs = sharded_reseed_jobs();
    let sts = statefulset();
    let init = container(&sts, "seed-refresh-tokens");
    for job in &jobs {
        let c = container(job, "replace-refresh-tokens");
        assert_eq!(env_value(c, "TOKEN_DIR"), env_value(init, "TOKEN_DIR"));
        let spec = pod_spec(job).unwrap();
        let secret = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["secret"].is_object())
            .unwrap();
        assert_eq!(secret["secret"]["secretName"], "qonto-exporter-reseed");
        assert_ne!(
            secret["secret"]["optional"], true,
            "without the Secret the Job must fail, not succeed having done nothing"
        );
        assert!(job["spec"]["activeDeadlineSeconds"].as_u64().is_some());
        assert_eq!(job["spec"]["backoffLimit"], 0);
    }
    let job = &jobs[0];
    let claim = pod_spec(job).unwrap()["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .unwrap()
        .to_owned();
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("initech.refresh-token"), "initech-live\n").unwrap();
    std::fs::write(state.join("acme-other.refresh-token"), "other-live\n").unwrap();
    let claims = BTreeMap::from([(claim, state.clone())]);
    let run = |cluster: &Cluster| {
        run_k8s_container_with(job, "replace-refresh-tokens", cluster, &claims, tmp.path())
    };
    let with = |data: &[(&str, &str)]| {
        let mut c = Cluster::default();
        let map: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        c.objects.insert(
            ("Secret".into(), "qonto-exporter-reseed".into()),
            json!({"kind": "Secret", "metadata": {"name": "qonto-exporter-reseed"},
                   "stringData": map}),
        );
        c
    };
    // No usable key, or one empty key among good ones: it fails and changes nothing.
    for bad in [
        with(&[]),
        with(&[("README", "x")]),
        with(&[
            ("initech.refresh-token", "new\n"),
            ("umbrella.refresh-token", ""),
        ]),
    ] {
        let out = run(&bad);
        assert!(!out.status.success(), "{}", output_text(&out));
        assert_eq!(read(&state.join("initech.refresh-token")), "initech-live\n");
    }
    // The tokens of the Secret replace the files there; the others stay.
    let out = run(&with(&[("initech.refresh-token", "initech-new\n")]));
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(read(&state.join("initech.refresh-token")), "initech-new\n");
    assert_eq!(mode(&state.join("initech.refresh-token")), 0o600);
    assert_eq!(
        read(&state.join("acme-other.refresh-token")),
        "other-live\n"
    );
    assert_eq!(
        files_in(&state).len(),
        2,
        "left behind: {:?}",
        files_in(&state)
    );
    // The Jobs are never applied with the set.
    assert!(!sharded_set().iter().any(|o| kind(o) == "Job"));
}

#[test]
fn following_the_sharded_readme_keeps_secrets_and_live_tokens_and_reseeds() {
    let sts = statefulset();
    let n = replicas(&sts);
    let blocks = sharded_readme_blocks();
    let all: Vec<&Cmd> = blocks.iter().flatten().collect();
    // Every kubectl command of the subsection is one the model runs or checks.
    for cmd in &all {
        let w = &cmd.words;
        if w.first().map(String::as_str) != Some("kubectl") {
            continue;
        }
        let text = w.join(" ");
        match parse_kubectl(cmd) {
            Some(Kubectl::Other) => {
                let verb = w.iter().skip(1).find(|a| !a.starts_with('-')).unwrap();
                match verb.as_str() {
                    "rollout" => assert_eq!(
                        w[1..],
                        ["rollout", "restart", &format!("statefulset/{}", name(&sts))],
                        "{}: {text}",
                        cmd.origin
                    ),
                    "wait" => {
                        let label = w
                            .iter()
                            .position(|a| a == "-l")
                            .map(|i| w[i + 1].clone())
                            .expect("kubectl wait -l");
                        let (k, v) = label.split_once('=').unwrap();
                        for j in sharded_reseed_jobs() {
                            assert_eq!(j["metadata"]["labels"][k], v, "{text}");
                        }
                        assert!(w.contains(&"--for=condition=complete".to_owned()));
                        let timeout = w.iter().find_map(|a| a.strip_prefix("--timeout=")).unwrap();
                        let deadline = sharded_reseed_jobs()[0]["spec"]["activeDeadlineSeconds"]
                            .as_u64()
                            .unwrap();
                        assert!(
                            humantime::parse_duration(timeout).unwrap().as_secs() > deadline,
                            "{text}: waits less than the Jobs' deadline"
                        );
                    }
                    "debug" => {
                        let pod = w[2].strip_prefix("pod/").expect("kubectl debug pod/NAME");
                        let ordinal = pod
                            .strip_prefix(&format!("{}-", name(&sts)))
                            .and_then(|o| o.parse::<u64>().ok())
                            .unwrap_or_else(|| panic!("{text}: not a pod of the StatefulSet"));
                        assert!(ordinal < n, "{text}: no such replica");
                        let target = w.iter().find_map(|a| a.strip_prefix("--target=")).unwrap();
                        container(&sts, target);
                        let image = w.iter().find_map(|a| a.strip_prefix("--image=")).unwrap();
                        assert_eq!(
                            Some(image),
                            container(&sts, "seed-refresh-tokens")["image"].as_str()
                        );
                        let dashdash = w.iter().position(|a| a == "--").unwrap();
                        assert_eq!(w[dashdash + 1..], ["kill", "-HUP", "1"], "{text}");
                    }
                    other => panic!(
                        "{}: `{text}`: `kubectl {other}` is not modelled",
                        cmd.origin
                    ),
                }
            }
            Some(Kubectl::Scale {
                kind: k,
                name: nm,
                replicas: r,
            }) => {
                assert_eq!(Cluster::kind_key(&k), "StatefulSet", "{text}");
                assert_eq!(nm, name(&sts), "{text}");
                assert!(r == 0 || r == n, "{text}: the StatefulSet has {n} replicas");
            }
            Some(_) => {}
            None => unreachable!(),
        }
    }

    let home = "$HOME/qonto-secrets";
    let mut cluster = Cluster {
        local_files: [
            ("acme.secret-key", "acme-key"),
            ("globex.secret-key", "globex-key"),
            ("initech.client-secret", "initech-client-secret"),
            ("initech.refresh-token", "initech-first"),
        ]
        .into_iter()
        .map(|(f, c)| (PathBuf::from(format!("{home}/{f}")), c.to_owned()))
        .collect(),
        ..Cluster::default()
    };
    let install = blocks
        .iter()
        .find(|b| {
            b.iter()
                .any(|c| c.words.join(" ") == "kubectl apply -k deploy/kubernetes/sharded/")
        })
        .expect("a block applying deploy/kubernetes/sharded/");
    for cmd in install {
        cluster.run(cmd);
    }
    assert!(
        cluster
            .objects
            .contains_key(&("PrometheusRule".into(), "qonto-exporter".into())),
        "the install block applies the alert rules too"
    );
    let applied = cluster
        .objects
        .get(&("StatefulSet".into(), name(&sts).into()))
        .expect("the install block applies the StatefulSet")
        .clone();
    // Every Secret the pods need exists (the optional seed one too, as the README creates it).
    for v in pod_spec(&applied).unwrap()["volumes"].as_array().unwrap() {
        if let Some(s) = v["secret"]["secretName"].as_str() {
            assert!(
                cluster.secret(s).is_some(),
                "Secret {s} is not created by the README"
            );
        }
    }
    let users: Vec<(String, Value)> = cluster
        .objects
        .iter()
        .filter(|((k, _), _)| k == "Secret")
        .map(|((_, n), v)| (n.clone(), v.clone()))
        .collect();

    // Every replica starts: its init container seeds its volume, and the configuration passes
    // with the Secret's files and that volume.
    let tmp = tempfile::tempdir().unwrap();
    let exporter = container(&sts, "qonto-exporter");
    let secrets_dir = tmp.path().join("organizations");
    std::fs::create_dir(&secrets_dir).unwrap();
    for (k, v) in cluster.secret("qonto-exporter-organizations").unwrap()["stringData"]
        .as_object()
        .unwrap()
    {
        std::fs::write(secrets_dir.join(k), v.as_str().unwrap()).unwrap();
    }
    let states: Vec<PathBuf> = (0..n)
        .map(|i| tmp.path().join(format!("state-{i}")))
        .collect();
    let mut token_files = BTreeMap::new();
    for (i, state) in states.iter().enumerate() {
        std::fs::create_dir(state).unwrap();
        run_seed(&cluster, state, tmp.path());
        let dirs = [
            (
                mount_of(exporter, "secrets").to_owned(),
                secrets_dir.clone(),
            ),
            (mount_of(exporter, "state").to_owned(), state.clone()),
        ];
        let orgs = parse_sharded_config(&dirs, u32::try_from(i).unwrap())
            .unwrap_or_else(|e| panic!("replica {i} exits 2 after the README's steps: {e}"));
        for o in orgs {
            if let qonto_exporter::config::CredentialSource::OAuth {
                refresh_token_file,
                refresh_token,
                ..
            } = &o.source
            {
                assert_eq!(refresh_token.expose(), "initech-first");
                let shard = replica_args(u32::try_from(i).unwrap()).shard().unwrap();
                if shard.owns(&o.name) {
                    token_files.insert(o.name.clone(), refresh_token_file.clone());
                }
            }
        }
    }
    let owner_token = token_files
        .get("initech")
        .expect("a replica owns initech")
        .clone();
    let owner_state = states
        .iter()
        .find(|s| owner_token.starts_with(s))
        .unwrap()
        .clone();

    // The owner rotates; the user follows the install steps again (an upgrade); every replica
    // restarts. Secrets and the live token are untouched.
    std::fs::write(&owner_token, "initech-rotated\n").unwrap();
    for cmd in install {
        cluster.run(cmd);
    }
    let after: Vec<(String, Value)> = cluster
        .objects
        .iter()
        .filter(|((k, _), _)| k == "Secret")
        .map(|((_, n), v)| (n.clone(), v.clone()))
        .collect();
    assert_eq!(
        after, users,
        "re-running the README's steps changed a Secret"
    );
    for state in &states {
        run_seed(&cluster, state, tmp.path());
    }
    assert_eq!(read(&owner_token), "initech-rotated\n");

    // A re-seed after a new oauth-login, literally, with a stale Secret and finished Jobs of an
    // earlier re-seed still there: every replica's volume gets the new token.
    let reseed = blocks
        .iter()
        .find(|b| {
            b.iter().any(|c| {
                c.words
                    .iter()
                    .any(|w| w.ends_with("maintenance/reseed-refresh-tokens.yaml"))
            }) && b
                .iter()
                .any(|c| c.words.get(1).is_some_and(|v| v == "create"))
        })
        .expect("a block re-seeding with maintenance/reseed-refresh-tokens.yaml");
    cluster.local_files.insert(
        PathBuf::from(format!("{home}/initech.refresh-token")),
        "initech-second-login".into(),
    );
    cluster.objects.insert(
        ("Secret".into(), "qonto-exporter-reseed".into()),
        json!({"kind": "Secret", "metadata": {"name": "qonto-exporter-reseed"},
               "stringData": {"initech.refresh-token": "an-old-spent-token"}}),
    );
    for j in sharded_reseed_jobs() {
        cluster
            .objects
            .insert(("Job".into(), name(&j).to_owned()), j.clone());
    }
    let template = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
        .as_str()
        .unwrap();
    let claims: BTreeMap<String, PathBuf> = states
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("{template}-{}-{i}", name(&sts)), s.clone()))
        .collect();
    let mut jobs_run = 0;
    let mut stopped = false;
    for cmd in reseed {
        let replicas_now =
            cluster.objects[&("StatefulSet".to_owned(), name(&sts).to_owned())]["spec"]["replicas"]
                .as_u64();
        for obj in cluster.run(cmd) {
            if kind(&obj) == "Job" {
                assert_eq!(
                    replicas_now,
                    Some(0),
                    "a re-seed Job runs while replicas run"
                );
                let out = run_k8s_container_with(
                    &obj,
                    "replace-refresh-tokens",
                    &cluster,
                    &claims,
                    tmp.path(),
                );
                assert!(out.status.success(), "{}", output_text(&out));
                jobs_run += 1;
            }
        }
        stopped |= replicas_now == Some(0);
    }
    assert!(stopped);
    assert_eq!(jobs_run, n, "the re-seed creates one Job per replica");
    for state in &states {
        run_seed(&cluster, state, tmp.path());
        assert_eq!(
            read(&state.join("initech.refresh-token")),
            "initech-second-login",
            "{} did not get the new token",
            state.display()
        );
    }
    assert_eq!(read(&owner_token), "initech-second-login");
    assert!(owner_state.exists());
    assert!(
        cluster.secret("qonto-exporter-reseed").is_none(),
        "the re-seed leaves Secret qonto-exporter-reseed behind"
    );
    assert_eq!(
        cluster.objects[&("StatefulSet".to_owned(), name(&sts).to_owned())]["spec"]["replicas"],
        json!(n),
        "the re-seed ends with the replicas running again"
    );
    let still: Vec<(String, Value)> = cluster
        .objects
        .iter()
        .filter(|((k, _), _)| k == "Secret")
        .map(|((_, n), v)| (n.clone(), v.clone()))
        .collect();
    assert_eq!(still, users, "the re-seed changed the user's Secrets");
}

// ------------------------------------------------------------------ Kubernetes: webhooks

/// The README subsection that exposes the webhook receiver.
const WEBHOOKS_HEADING: &str = "### Exposing the webhook receiver";
/// The line of deploy/kubernetes/kustomization.yaml the README has the user uncomment.
const WEBHOOKS_COMPONENT_LINE: &str = "# components: [webhooks]";

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// A copy of deploy/kubernetes/ with the README's one edit made: the `components:` line of its
/// kustomization uncommented.
fn webhooks_tree() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&k8s_dir(), tmp.path());
    let file = tmp.path().join("kustomization.yaml");
    let text = read(&file);
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_end() == WEBHOOKS_COMPONENT_LINE)
            .count(),
        1,
        "deploy/kubernetes/kustomization.yaml must hold the line `{WEBHOOKS_COMPONENT_LINE}` once"
    );
    let edited: String = text
        .lines()
        .map(|l| {
            if l.trim_end() == WEBHOOKS_COMPONENT_LINE {
                l.trim_start_matches("# ").to_owned()
            } else {
                l.to_owned()
            }
        })
        .map(|l| l + "\n")
        .collect();
    std::fs::write(&file, edited).unwrap();
    tmp
}

/// What `kubectl apply -k deploy/kubernetes/` sends once the webhooks component is enabled.
fn webhooks_set() -> Vec<Value> {
    kustomize(webhooks_tree().path())
}

/// The container port of `c` called `port_name`.
fn container_port(c: &Value, port_name: &str) -> u64 {
    c["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == port_name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("{} has no port {port_name}", c["name"]))
}

/// The container port of `c` a Service port leads to (`targetPort` by name or number, else
/// `port`).
fn service_target(port: &Value, c: &Value) -> u64 {
    match &port["targetPort"] {
        Value::String(n) => container_port(c, n),
        Value::Number(n) => n.as_u64().expect("a port number"),
        _ => port["port"].as_u64().expect("a port number"),
    }
}

#[test]
fn webhooks_component_is_the_base_plus_only_the_receiver() {
    let base = applied_set();
    let set = webhooks_set();
    let keys = |s: &[Value]| -> BTreeSet<(String, String)> {
        s.iter()
            .map(|o| (kind(o).to_owned(), name(o).to_owned()))
            .collect()
    };
    let added: BTreeSet<_> = keys(&set).difference(&keys(&base)).cloned().collect();
    let want: BTreeSet<(String, String)> = [
        ("Service", "qonto-exporter-webhooks"),
        ("Ingress", "qonto-exporter-webhooks"),
        ("NetworkPolicy", "qonto-exporter-webhooks"),
    ]
    .map(|(k, n)| (k.to_owned(), n.to_owned()))
    .into();
    assert_eq!(added, want);
    assert!(keys(&base).is_subset(&keys(&set)));
    assert!(
        set.iter().all(|o| kind(o) != "Secret"),
        "the component must hold no Secret"
    );
    // Everything of the base but the Deployment is unchanged, its NetworkPolicy included.
    for o in &base {
        if kind(o) != "Deployment" {
            assert_eq!(find(&set, kind(o), name(o)), o, "{} {}", kind(o), name(o));
        }
    }
    // The Deployment only gains the receiver: the init container and the rest are the same.
    let before = deployment();
    let after = find(&set, "Deployment", "qonto-exporter");
    assert_eq!(
        container(after, "seed-refresh-token"),
        container(&before, "seed-refresh-token")
    );
    assert_eq!(
        container(after, "qonto-exporter")["image"],
        container(&before, "qonto-exporter")["image"],
        "the images transformer applies to the patched Deployment too"
    );
}

#[test]
fn webhooks_component_runs_the_receiver_on_its_own_port_with_a_secret_file() {
    let set = webhooks_set();
    let d = find(&set, "Deployment", "qonto-exporter");
    let c = container(d, "qonto-exporter");
    let args = args_of(c);
    let metrics = container_port(c, "metrics");
    let webhooks = container_port(c, "webhooks");
    assert_eq!(metrics, 10157);
    assert_ne!(webhooks, metrics, "the receiver needs its own port");
    let listen = flag_value(&args, "--webhook.listen-address").expect("--webhook.listen-address");
    let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(port, webhooks, "--webhook.listen-address={listen}");
    // The README records the port.
    let readme = read(&repo().join("README.md"));
    assert!(
        readme.contains(&format!("**{webhooks}**")),
        "the README's Port paragraph does not record the webhook port {webhooks}"
    );
    // The secrets come from a file on a Secret volume, never from a flag value.
    assert!(args.iter().all(|a| !a.contains("QONTO_WEBHOOK_SECRET")));
    let secret_file = flag_value(&args, "--webhook.secret-file").expect("--webhook.secret-file");
    let volumes = pod_spec(d).unwrap()["volumes"].as_array().unwrap();
    let (volume, mount) = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|m| {
            let mount = m["mountPath"].as_str()?;
            let rest = secret_file.strip_prefix(mount)?.strip_prefix('/')?;
            Some((
                m["name"].as_str()?.to_owned(),
                (mount.to_owned(), rest.to_owned(), m.clone()),
            ))
        })
        .expect("--webhook.secret-file lies on a mounted volume");
    let (_, item_path, m) = mount;
    assert_eq!(
        m["readOnly"], true,
        "the secret volume is mounted read-only"
    );
    let v = volumes
        .iter()
        .find(|v| v["name"] == volume.as_str())
        .expect("the mounted volume");
    assert_eq!(v["secret"]["secretName"], "qonto-exporter-webhook");
    let items = v["secret"]["items"].as_array().expect("items");
    assert!(
        items.iter().any(|i| i["path"] == item_path.as_str()),
        "no item of Secret qonto-exporter-webhook lands at {secret_file}"
    );
    // The exporter's user (fsGroup) can read it: 0440 = 288 as elsewhere.
    assert_eq!(v["secret"]["defaultMode"], 288);
    // Every flag the component adds is one the binary knows.
    let help = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("the binary runs");
    let help = String::from_utf8_lossy(&help.stdout);
    for a in &args {
        let flag = a.split('=').next().unwrap();
        assert!(
            help.contains(flag),
            "`{a}` of the webhooks component: qonto-exporter --help has no {flag}"
        );
    }
}

#[test]
fn webhooks_ingress_routes_only_to_the_webhook_port_over_tls() {
    let set = webhooks_set();
    let d = find(&set, "Deployment", "qonto-exporter");
    let c = container(d, "qonto-exporter");
    let args = args_of(c);
    let metrics = container_port(c, "metrics");
    let webhooks = container_port(c, "webhooks");
    let path = flag_value(&args, "--webhook.path").unwrap_or("/webhooks/qonto");
    let pod_labels = d["spec"]["template"]["metadata"]["labels"].clone();

    // The webhook Service: the pod, on the webhook port only.
    let svc = find(&set, "Service", "qonto-exporter-webhooks");
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "the Service selects the exporter's pod");
    }
    let svc_ports = svc["spec"]["ports"].as_array().unwrap();
    assert!(!svc_ports.is_empty());
    for p in svc_ports {
        assert_eq!(
            service_target(p, c),
            webhooks,
            "Service qonto-exporter-webhooks leads to {p}, not the webhook port"
        );
    }

    let ingresses: Vec<&Value> = set.iter().filter(|o| kind(o) == "Ingress").collect();
    assert_eq!(ingresses.len(), 1, "one Ingress");
    let ing = ingresses[0];
    assert_eq!(ing["apiVersion"], "networking.k8s.io/v1");
    let tls_hosts: BTreeSet<&str> = ing["spec"]["tls"]
        .as_array()
        .expect("the Ingress terminates TLS (Qonto calls HTTPS URLs only)")
        .iter()
        .flat_map(|t| {
            assert!(t["secretName"].is_string(), "a TLS entry names its Secret");
            t["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h.as_str().unwrap())
        })
        .collect();
    assert!(
        ing["spec"].get("defaultBackend").is_none(),
        "no default backend"
    );
    let rules = ing["spec"]["rules"].as_array().unwrap();
    assert!(!rules.is_empty());
    for rule in rules {
        let host = rule["host"].as_str().expect("every rule names its host");
        assert!(tls_hosts.contains(host), "{host} is not covered by TLS");
        for p in rule["http"]["paths"].as_array().unwrap() {
            assert_eq!(p["path"], path, "the route is --webhook.path");
            assert_eq!(
                p["pathType"], "Prefix",
                "{path}/<organization> must match too"
            );
            let backend = &p["backend"]["service"];
            let svc_name = backend["name"].as_str().unwrap();
            assert_eq!(
                svc_name, "qonto-exporter-webhooks",
                "the Ingress leads to {svc_name}"
            );
            let svc = find(&set, "Service", svc_name);
            let port = svc["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|sp| {
                    sp["name"] == backend["port"]["name"] || sp["port"] == backend["port"]["number"]
                })
                .expect("the backend port is a port of the Service");
            let target = service_target(port, c);
            assert_eq!(target, webhooks);
            assert_ne!(target, metrics, "the Ingress must never reach /metrics");
        }
    }
}

/// A NetworkPolicy peer: its namespace and pod `matchLabels`.
type Peer = (Value, Value);

/// The admitted peers of each rule of a NetworkPolicy, and its ports by name.
fn policy_rules(policy: &Value) -> Vec<(Vec<Peer>, Vec<String>)> {
    policy["spec"]["ingress"]
        .as_array()
        .expect("ingress rules")
        .iter()
        .map(|rule| {
            let peers = rule["from"].as_array().expect("every rule names its peers");
            assert!(!peers.is_empty(), "a rule without `from` admits everyone");
            let peers = peers
                .iter()
                .map(|peer| {
                    assert!(peer.get("ipBlock").is_none(), "no ipBlock peer: {peer}");
                    let ns = peer["namespaceSelector"]["matchLabels"].clone();
                    let pods = peer["podSelector"]["matchLabels"].clone();
                    assert!(
                        ns.as_object().is_some_and(|m| !m.is_empty())
                            && pods.as_object().is_some_and(|m| !m.is_empty()),
                        "every peer names its namespace and pods: {peer}"
                    );
                    (ns, pods)
                })
                .collect();
            let ports = rule["ports"]
                .as_array()
                .expect("every rule names its ports")
                .iter()
                .map(|p| p["port"].as_str().expect("ports by name").to_owned())
                .collect();
            (peers, ports)
        })
        .collect()
}

#[test]
fn webhooks_network_policy_admits_the_ingress_controller_to_the_webhook_port_only() {
    let set = webhooks_set();
    let d = find(&set, "Deployment", "qonto-exporter");
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
    assert_eq!(policies.len(), 2, "the base's policy and the webhooks one");
    let readme = read(&repo().join("README.md"));
    let monitoring = find(&applied_set(), "NetworkPolicy", "qonto-exporter").clone();
    let prometheus_peers: Vec<Peer> = policy_rules(&monitoring)
        .into_iter()
        .flat_map(|(peers, _)| peers)
        .collect();
    let mut webhook_peers = Vec::new();
    for policy in &policies {
        assert!(
            policy["spec"]["policyTypes"]
                .as_array()
                .unwrap()
                .contains(&json!("Ingress"))
        );
        for (peers, ports) in policy_rules(policy) {
            for port in &ports {
                assert!(
                    port == "metrics" || port == "webhooks",
                    "{port} is not a port of the exporter"
                );
            }
            if ports.iter().any(|p| p == "metrics") {
                // /metrics: Prometheus's peers only, and never in the same rule as the webhooks.
                assert!(
                    ports.iter().all(|p| p == "metrics"),
                    "{}: one rule admits the same peers to /metrics and the webhooks",
                    name(policy)
                );
                for peer in &peers {
                    assert!(
                        prometheus_peers.contains(peer),
                        "{} admits {peer:?} to the metrics port",
                        name(policy)
                    );
                }
            } else {
                webhook_peers.extend(peers);
            }
        }
    }
    assert!(
        !webhook_peers.is_empty(),
        "no rule admits anyone to the webhook port"
    );
    for (ns, pods) in &webhook_peers {
        assert!(
            !prometheus_peers.contains(&(ns.clone(), pods.clone())),
            "the webhook port admits Prometheus's peer: keep the two apart"
        );
        for labels in [ns, pods] {
            for (k, v) in labels.as_object().unwrap() {
                let v = v.as_str().unwrap();
                assert!(
                    readme.contains(&format!("{k}: {v}")) || readme.contains(&format!("{k}:\n{v}")),
                    "the README does not document the admitted label `{k}: {v}`"
                );
            }
        }
    }
    // The ingress controller's namespace reaches the webhook port and nothing else.
    let ingress_namespaces: BTreeSet<String> =
        webhook_peers.iter().map(|(ns, _)| ns.to_string()).collect();
    for policy in &policies {
        for (peers, ports) in policy_rules(policy) {
            if ports.iter().any(|p| p == "metrics") {
                for (ns, _) in peers {
                    assert!(
                        !ingress_namespaces.contains(&ns.to_string()),
                        "the ingress controller's namespace {ns} is admitted to /metrics"
                    );
                }
            }
        }
    }
}

#[test]
fn following_the_readme_creates_the_webhook_secret_the_component_mounts() {
    let section = readme_section(WEBHOOKS_HEADING);
    assert!(
        section.contains(&format!(
            "`{}`",
            WEBHOOKS_COMPONENT_LINE.trim_start_matches("# ")
        )),
        "the README's webhook subsection must say to uncomment `components: [webhooks]`"
    );
    let blocks = shell_blocks(&section);
    let block = blocks
        .iter()
        .find(|b| b.contains("kubectl create secret generic qonto-exporter-webhook"))
        .expect("the webhook subsection creates Secret qonto-exporter-webhook");
    assert!(
        block.contains("kubectl apply -k deploy/kubernetes/"),
        "and applies the kustomization"
    );
    let mut cluster = Cluster::default();
    let cmds = commands(block, "README.md, webhook block");
    for cmd in &cmds {
        if let Some(Kubectl::CreateSecret { files, .. }) = parse_kubectl(cmd) {
            for (_, p) in files {
                cluster
                    .local_files
                    .insert(p, "new-secret\nold-secret\n".to_owned());
            }
        }
    }
    for cmd in &cmds {
        cluster.run(cmd);
    }
    let set = webhooks_set();
    let d = find(&set, "Deployment", "qonto-exporter");
    for v in pod_spec(d).unwrap()["volumes"].as_array().unwrap() {
        let Some(n) = v["secret"]["secretName"].as_str() else {
            continue;
        };
        if n != "qonto-exporter-webhook" {
            continue;
        }
        let secret = cluster
            .secret(n)
            .unwrap_or_else(|| panic!("after the README's steps, Secret {n} does not exist"));
        for item in v["secret"]["items"].as_array().unwrap() {
            let key = item["key"].as_str().unwrap();
            assert!(
                secret["stringData"].get(key).is_some(),
                "Secret {n} has no key {key}, which the component mounts"
            );
        }
        return;
    }
    panic!("the component mounts no Secret qonto-exporter-webhook");
}

/// The objects of a kustomize output, by kind and name.
fn by_key(objects: Vec<Value>) -> BTreeMap<(String, String), Value> {
    objects
        .into_iter()
        .map(|o| ((kind(&o).to_owned(), name(&o).to_owned()), o))
        .collect()
}

#[test]
fn webhooks_component_renders_as_kubectl_kustomize_does() {
    let tree = webhooks_tree();
    let model = by_key(kustomize(tree.path()));
    assert!(model.contains_key(&("Ingress".to_owned(), "qonto-exporter-webhooks".to_owned())));
    // kubectl is not among the tools scripts/test installs: compare when it is there.
    let Some(kubectl) = which("kubectl") else {
        eprintln!(
            "kubectl is not installed: the model's rendering is not compared with kustomize's"
        );
        return;
    };
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(tree.path())
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize: {}",
        output_text(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let real = by_key(yaml_docs(&text, Path::new("kubectl kustomize output")));
    assert_eq!(
        model.keys().collect::<Vec<_>>(),
        real.keys().collect::<Vec<_>>(),
        "the objects differ"
    );
    for (k, v) in &real {
        assert_eq!(&model[k], v, "{k:?} differs from kubectl kustomize's");
    }
}
