//! The container images, built for real by `images/build.sh` and read back
//! from their tarballs: config (platform, user, entrypoint, labels), every
//! file of every layer (digests checked against the manifest and the config),
//! the binaries inside run and are static, the Dockerfile describes the same
//! images, and a second build is byte-identical.
//!
//! The first test to run builds the images (a cold static release build takes
//! minutes; later runs find cargo fresh). Loading them into a real containerd
//! and running them as pods is the real-node end-to-end tests' part.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

use paperbot_e2e::repo;

/// The two paperbot images: (image name = binary name, Dockerfile stage).
const PAPERBOT_IMAGES: [&str; 2] = ["paperbot-operator", "bot-runtime"];
/// Repository prefix of the paperbot images.
const REGISTRY_PREFIX: &str = "ghcr.io/paperbot";
/// The user the paperbot images run as (`nonroot` in images/rootfs/etc/passwd).
const NONROOT: &str = "65532:65532";
/// Debian's CA bundle, copied into the images.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Every label the paperbot images carry.
const LABEL_KEYS: [&str; 7] = [
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.source",
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.created",
    "org.opencontainers.image.licenses",
];

/// One entry of an image's merged file system.
#[derive(Debug, Clone)]
struct Entry {
    /// `tar` entry type: regular file, directory, symlink...
    kind: tar::EntryType,
    /// Permission bits (e.g. 0o755).
    mode: u32,
    uid: u64,
    gid: u64,
    data: Vec<u8>,
}

/// An image read from a docker-archive tarball.
#[derive(Debug)]
struct Image {
    /// The tarball's single tag (`RepoTags[0]`).
    tag: String,
    /// The image config (OCI / Docker image config JSON).
    config: serde_json::Value,
    /// Paths without the leading `/`, directories without the trailing `/`.
    files: BTreeMap<String, Entry>,
    /// Sum of the gzip'd layers, as stored in a registry (bytes).
    compressed_bytes: u64,
    /// Sum of the layers' tar streams (bytes).
    uncompressed_bytes: u64,
}

impl Image {
    fn config_field(&self, field: &str) -> &serde_json::Value {
        &self.config["config"][field]
    }

    fn labels(&self) -> BTreeMap<String, String> {
        self.config_field("Labels")
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn regular_files(&self) -> BTreeSet<String> {
        self.files
            .iter()
            .filter(|(_, e)| e.kind.is_file())
            .map(|(p, _)| p.clone())
            .collect()
    }

    fn file(&self, path: &str) -> &Entry {
        let key = path.trim_start_matches('/');
        self.files.get(key).unwrap_or_else(|| {
            panic!(
                "{}: no {path}; files: {:?}",
                self.tag,
                self.files.keys().collect::<Vec<_>>()
            )
        })
    }
}

/// What one run of `images/build.sh` produced.
#[derive(Debug)]
struct Built {
    /// The script's stdout: one size line per image.
    summary: String,
    images: BTreeMap<String, Image>,
}

/// `target/images` of the repository (where images/build.sh writes by default).
fn image_dir() -> PathBuf {
    repo()
        .canonicalize()
        .unwrap_or_else(|_| repo())
        .join("target/images")
}

/// Runs `images/build.sh` writing to `out`.
fn run_build(out: &Path) -> Output {
    let mut cmd = Command::new(repo().join("images/build.sh"));
    cmd.env("PAPERBOT_IMAGE_DIR", out);
    if let Ok(bin) = std::env::var("PAPERBOT_CP_BIN") {
        cmd.env("CRANE", Path::new(&bin).join("crane"));
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("running images/build.sh: {e}"))
}

/// The images, built on first use by this test process.
fn built() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let out = run_build(&image_dir());
        if !out.status.success() {
            return Err(format!(
                "images/build.sh failed ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let summary = String::from_utf8_lossy(&out.stdout).into_owned();
        println!(
            "$ images/build.sh\n{}{summary}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut images = BTreeMap::new();
        for name in PAPERBOT_IMAGES.iter().chain(&["pause"]) {
            let path = image_dir().join(format!("{name}.tar"));
            images.insert(name.to_string(), read_image(&path)?);
        }
        Ok(Built { summary, images })
    });
    match result {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

/// SHA-256 in hex (ring's assembly, fast in the unoptimized test profile,
/// where a pure-Rust hash of the images' ~50 MB is slow).
fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

/// Reads a docker-archive tarball (`manifest.json`, the config blob, gzip'd
/// layers), checking every digest, and merges the layers' files.
fn read_image(path: &Path) -> Result<Image, String> {
    let what = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("{what}: {e}"))?;
    let mut members: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().map_err(|e| format!("{what}: {e}"))? {
        let mut entry = entry.map_err(|e| format!("{what}: {e}"))?;
        let name = entry
            .path()
            .map_err(|e| format!("{what}: {e}"))?
            .to_string_lossy()
            .into_owned();
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|e| format!("{what}: {name}: {e}"))?;
        members.insert(name, data);
    }
    let member = |name: &str| {
        members
            .get(name)
            .ok_or_else(|| format!("{what}: no member {name} (has {:?})", members.keys()))
    };
    let manifest: serde_json::Value = serde_json::from_slice(member("manifest.json")?)
        .map_err(|e| format!("{what}: manifest.json: {e}"))?;
    let manifest = manifest
        .as_array()
        .filter(|m| m.len() == 1)
        .map(|m| &m[0])
        .ok_or_else(|| format!("{what}: manifest.json should list exactly one image"))?;
    let tags = manifest["RepoTags"].as_array().cloned().unwrap_or_default();
    if tags.len() != 1 {
        return Err(format!("{what}: expected one tag, got {tags:?}"));
    }
    let tag = tags[0].as_str().unwrap_or_default().to_owned();

    let config_name = manifest["Config"].as_str().unwrap_or_default();
    let config_bytes = member(config_name)?;
    let config_digest = format!("sha256:{}", sha256_hex(config_bytes));
    if config_name.trim_end_matches(".json") != config_digest {
        return Err(format!(
            "{what}: config {config_name} has digest {config_digest}"
        ));
    }
    let config: serde_json::Value =
        serde_json::from_slice(config_bytes).map_err(|e| format!("{what}: config: {e}"))?;
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let layers = manifest["Layers"].as_array().cloned().unwrap_or_default();
    if layers.len() != diff_ids.len() {
        return Err(format!(
            "{what}: {} layers but {} diff_ids in the config",
            layers.len(),
            diff_ids.len()
        ));
    }

    let mut files = BTreeMap::new();
    let (mut compressed_bytes, mut uncompressed_bytes) = (0, 0);
    for (layer, diff_id) in layers.iter().zip(&diff_ids) {
        let layer = layer.as_str().unwrap_or_default();
        let gz = member(layer)?;
        let digest = sha256_hex(gz);
        if !layer.starts_with(&digest) {
            return Err(format!("{what}: layer {layer} has digest sha256:{digest}"));
        }
        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut tar_bytes)
            .map_err(|e| format!("{what}: layer {layer} is not gzip: {e}"))?;
        let diff = format!("sha256:{}", sha256_hex(&tar_bytes));
        if diff_id.as_str() != Some(diff.as_str()) {
            return Err(format!(
                "{what}: layer {layer} unpacks to {diff}, config says {diff_id}"
            ));
        }
        compressed_bytes += gz.len() as u64;
        uncompressed_bytes += tar_bytes.len() as u64;
        let mut layer_tar = tar::Archive::new(&tar_bytes[..]);
        for entry in layer_tar.entries().map_err(|e| format!("{what}: {e}"))? {
            let mut entry = entry.map_err(|e| format!("{what}: {layer}: {e}"))?;
            let path = entry
                .path()
                .map_err(|e| format!("{what}: {layer}: {e}"))?
                .to_string_lossy()
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_owned();
            if path
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .starts_with(".wh.")
            {
                return Err(format!("{what}: unexpected whiteout {path}"));
            }
            let header = entry.header();
            let e = Entry {
                kind: header.entry_type(),
                mode: header.mode().map_err(|e| format!("{what}: {path}: {e}"))?,
                uid: header.uid().map_err(|e| format!("{what}: {path}: {e}"))?,
                gid: header.gid().map_err(|e| format!("{what}: {path}: {e}"))?,
                data: Vec::new(),
            };
            let mut e = e;
            entry
                .read_to_end(&mut e.data)
                .map_err(|err| format!("{what}: {path}: {err}"))?;
            files.insert(path, e);
        }
    }
    Ok(Image {
        tag,
        config,
        files,
        compressed_bytes,
        uncompressed_bytes,
    })
}

/// Field of the `[workspace.package]` table of the root Cargo.toml.
fn workspace_field(field: &str) -> String {
    let toml = std::fs::read_to_string(repo().join("Cargo.toml")).expect("reading Cargo.toml");
    let section = toml
        .split("[workspace.package]")
        .nth(1)
        .expect("Cargo.toml has [workspace.package]");
    section
        .lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == field).then(|| v.trim().trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("no {field} in [workspace.package]"))
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo())
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// (revision, created) as images/build.sh derives them: the git commit and its
/// commit time, or `SOURCE_DATE_EPOCH` for the time.
fn expected_revision_and_created() -> (String, String) {
    let revision = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let epoch: i64 = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .or_else(|| git(&["log", "-1", "--format=%ct", "HEAD"]))
        .map(|s| {
            s.parse()
                .expect("SOURCE_DATE_EPOCH / commit time in seconds")
        })
        .unwrap_or(0);
    let created = chrono::DateTime::from_timestamp(epoch, 0)
        .expect("commit time in range")
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    (revision, created)
}

/// Writes `data` as an executable in a fresh directory and runs it with an
/// empty environment.
fn run_extracted(name: &str, data: &[u8], args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, data).expect("writing the extracted binary");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // Another test thread forking while the file was open for writing makes
    // exec fail with ETXTBSY until that child execs; try again briefly.
    for _ in 0..50 {
        match Command::new(&path).args(args).env_clear().output() {
            Ok(out) => return out,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => panic!("running {name} {args:?} from the image: {e}"),
        }
    }
    panic!("running {name} from the image: text file busy")
}

/// The ELF's interpreter (`PT_INTERP`) and needed libraries (`DT_NEEDED`).
fn dynamic_dependencies(data: &[u8]) -> (Option<String>, Vec<String>) {
    use object::{
        elf::{DT_NEEDED, DT_STRTAB, FileHeader64, PT_INTERP},
        read::elf::{Dyn, FileHeader, ProgramHeader},
    };
    let header = FileHeader64::<object::LittleEndian>::parse(data).expect("a 64-bit ELF file");
    let endian = header.endian().expect("ELF endianness");
    let headers = header
        .program_headers(endian, data)
        .expect("ELF program headers");
    let mut interp = None;
    let mut needed_offsets = Vec::new();
    let mut strtab_addr = None;
    for ph in headers {
        if ph.p_type(endian) == PT_INTERP {
            let bytes = ph.data(endian, data).expect("PT_INTERP data");
            interp = Some(
                String::from_utf8_lossy(bytes)
                    .trim_end_matches('\0')
                    .to_owned(),
            );
        }
        if let Some(dynamic) = ph.dynamic(endian, data).expect("PT_DYNAMIC entries") {
            for d in dynamic {
                let tag = d.d_tag(endian);
                if tag == DT_NEEDED {
                    needed_offsets.push(d.d_val(endian));
                } else if tag == DT_STRTAB {
                    strtab_addr = Some(d.d_val(endian));
                }
            }
        }
    }
    // Names of needed libraries live in the dynamic string table, addressed by
    // virtual address: find the segment holding it.
    let needed = needed_offsets
        .iter()
        .map(|off| {
            let addr = strtab_addr.expect("DT_STRTAB with DT_NEEDED") + off;
            headers
                .iter()
                .find_map(|ph| {
                    let start = ph.p_vaddr(endian);
                    let size = ph.p_filesz(endian);
                    (ph.p_type(endian) == object::elf::PT_LOAD
                        && (start..start + size).contains(&addr))
                    .then(|| {
                        let at = usize::try_from(ph.p_offset(endian) + addr - start).ok()?;
                        let name = data.get(at..)?.split(|&b| b == 0).next()?;
                        Some(String::from_utf8_lossy(name).into_owned())
                    })
                    .flatten()
                })
                .unwrap_or_else(|| format!("<unresolved name at {addr:#x}>"))
        })
        .collect();
    (interp, needed)
}

/// The static check sees a dynamic binary: this test program (glibc target)
/// has an interpreter and needs libc.
#[test]
fn static_check_detects_a_dynamically_linked_binary() {
    let exe = std::env::current_exe().expect("path of the test binary");
    let data = std::fs::read(&exe).expect("reading the test binary");
    let (interp, needed) = dynamic_dependencies(&data);
    assert!(
        interp.as_deref().is_some_and(|i| i.contains("ld-linux")),
        "{interp:?}"
    );
    assert!(
        needed.iter().any(|n| n.starts_with("libc.so")),
        "{needed:?}"
    );
}

/// Both paperbot images: tagged `ghcr.io/paperbot/<name>:<workspace
/// version>`, linux/amd64, running as 65532:65532, the binary as the
/// entrypoint, and every `org.opencontainers.image.*` label set from the
/// workspace and git.
#[test]
fn paperbot_images_are_tagged_nonroot_amd64_with_entrypoint_and_labels() {
    let built = built();
    let version = workspace_field("version");
    let (revision, created) = expected_revision_and_created();
    for name in PAPERBOT_IMAGES {
        let image = &built.images[name];
        assert_eq!(image.tag, format!("{REGISTRY_PREFIX}/{name}:{version}"));
        assert_eq!(image.config["os"], "linux", "{name}");
        assert_eq!(image.config["architecture"], "amd64", "{name}");
        assert_eq!(image.config["created"], created.as_str(), "{name}");
        assert_eq!(image.config_field("User"), NONROOT, "{name}");
        assert_eq!(
            image.config_field("Entrypoint"),
            &serde_json::json!([format!("/usr/local/bin/{name}")]),
            "{name}"
        );
        assert!(
            image.config_field("Cmd").is_null(),
            "{name}: no Cmd (the pod spec gives the arguments)"
        );
        let labels = image.labels();
        let keys: BTreeSet<&str> = labels.keys().map(String::as_str).collect();
        assert_eq!(keys, LABEL_KEYS.into_iter().collect(), "{name}");
        let label = |k: &str| labels[&format!("org.opencontainers.image.{k}")].as_str();
        assert_eq!(label("title"), name);
        assert!(
            label("description").contains("paperbot"),
            "{name}: {labels:?}"
        );
        assert_eq!(label("version"), version);
        assert_eq!(label("revision"), revision);
        assert_eq!(label("created"), created);
        assert_eq!(label("licenses"), workspace_field("license"));
        assert_eq!(label("source"), workspace_field("repository"));
        println!(
            "{}: {} layers, {:.1} MiB compressed, {:.1} MiB uncompressed",
            image.tag,
            image.config["rootfs"]["diff_ids"]
                .as_array()
                .map_or(0, Vec::len),
            image.compressed_bytes as f64 / 1048576.0,
            image.uncompressed_bytes as f64 / 1048576.0
        );
    }
}

/// The paperbot images hold the binary, `/etc/passwd` and `/etc/group` with
/// `nonroot` (65532) and Debian's CA bundle, all owned by root — and nothing
/// else: no shell, no other program.
#[test]
fn paperbot_images_hold_only_the_binary_users_and_ca_certificates() {
    let built = built();
    let system_bundle = std::fs::read(CA_BUNDLE).expect("reading the system CA bundle");
    for name in PAPERBOT_IMAGES {
        let image = &built.images[name];
        let binary = format!("usr/local/bin/{name}");
        assert_eq!(
            image.regular_files(),
            [
                "etc/group",
                "etc/passwd",
                "etc/ssl/certs/ca-certificates.crt",
                binary.as_str()
            ]
            .map(String::from)
            .into_iter()
            .collect(),
            "{name}: files"
        );
        for (path, e) in &image.files {
            assert!(
                e.kind.is_file() || e.kind.is_dir(),
                "{name}: {path} is neither file nor directory ({:?})",
                e.kind
            );
            assert_eq!((e.uid, e.gid), (0, 0), "{name}: {path} owner");
            let base = path.rsplit('/').next().unwrap_or_default();
            assert!(
                !["sh", "bash", "ash", "busybox"].contains(&base),
                "{name}: shell {path}"
            );
        }
        assert!(!image.files.contains_key("bin/sh"), "{name}: /bin/sh");
        assert_eq!(image.file(&binary).mode, 0o755, "{name}: binary mode");
        for f in [
            "etc/passwd",
            "etc/group",
            "etc/ssl/certs/ca-certificates.crt",
        ] {
            assert_eq!(image.file(f).mode, 0o644, "{name}: {f} mode");
        }

        let passwd = String::from_utf8_lossy(&image.file("etc/passwd").data).into_owned();
        assert!(
            passwd
                .lines()
                .any(|l| l.starts_with("nonroot:x:65532:65532:")),
            "{name}: passwd\n{passwd}"
        );
        let group = String::from_utf8_lossy(&image.file("etc/group").data).into_owned();
        assert!(
            group.lines().any(|l| l == "nonroot:x:65532:"),
            "{name}: group\n{group}"
        );

        let bundle = &image.file(CA_BUNDLE).data;
        let certs = String::from_utf8_lossy(bundle)
            .matches("-----BEGIN CERTIFICATE-----")
            .count();
        assert!(certs >= 100, "{name}: only {certs} CA certificates");
        assert!(
            *bundle == system_bundle,
            "{name}: CA bundle differs from {CA_BUNDLE}"
        );
    }
}

/// The binaries inside the images are statically linked (no interpreter, no
/// shared libraries), run from the extracted layer with an empty environment,
/// and report the workspace version; the operator's default runtime image is
/// the bot-runtime image just built.
#[test]
fn binaries_in_the_images_are_static_and_run() {
    let built = built();
    let version = workspace_field("version");
    for name in PAPERBOT_IMAGES {
        let data = &built.images[name]
            .file(&format!("usr/local/bin/{name}"))
            .data;
        let (interp, needed) = dynamic_dependencies(data);
        assert_eq!(interp, None, "{name}: has an ELF interpreter");
        assert!(
            needed.is_empty(),
            "{name}: needs shared libraries {needed:?}"
        );
        let out = run_extracted(name, data, &["--version"]);
        assert!(out.status.success(), "{name} --version: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{name} {version}")
        );
    }
    let operator = &built.images["paperbot-operator"];
    let out = run_extracted(
        "paperbot-operator",
        &operator.file("usr/local/bin/paperbot-operator").data,
        &["--help"],
    );
    let help = String::from_utf8_lossy(&out.stdout);
    let runtime_tag = &built.images["bot-runtime"].tag;
    assert!(
        help.contains(&format!("[default: {runtime_tag}]")),
        "the operator's --runtime-image default should be {runtime_tag}:\n{help}"
    );
}

/// The chart deploys the operator image this script builds and passes the
/// bot-runtime image of the same version.
#[test]
fn chart_points_at_the_built_images() {
    let built = built();
    let chart = std::fs::read_to_string(repo().join("charts/paperbot/Chart.yaml"))
        .expect("reading Chart.yaml");
    let chart: serde_yaml::Value = serde_yaml::from_str(&chart).expect("Chart.yaml is YAML");
    let app_version = chart["appVersion"].as_str().expect("appVersion");
    assert_eq!(app_version, workspace_field("version"));
    let values = std::fs::read_to_string(repo().join("charts/paperbot/values.yaml"))
        .expect("reading values.yaml");
    let values: serde_yaml::Value = serde_yaml::from_str(&values).expect("values.yaml is YAML");
    let repository = values["image"]["repository"]
        .as_str()
        .expect("image.repository");
    let tag = values["image"]["tag"].as_str().unwrap_or_default();
    let tag = if tag.is_empty() { app_version } else { tag };
    assert_eq!(
        format!("{repository}:{tag}"),
        built.images["paperbot-operator"].tag
    );
    let runtime = values["runtime"]["image"].as_str().unwrap_or_default();
    assert!(
        runtime.is_empty() || runtime == built.images["bot-runtime"].tag,
        "runtime.image {runtime}"
    );
    // What the chart renders by default: the operator's image and the
    // --runtime-image it passes (helm from the test control plane's build).
    let cache = std::process::Command::new(repo().join("tests/control-plane/build.sh"))
        .output()
        .expect("running tests/control-plane/build.sh");
    assert!(
        cache.status.success(),
        "tests/control-plane/build.sh failed"
    );
    let bin = std::path::PathBuf::from(
        String::from_utf8_lossy(&cache.stdout)
            .lines()
            .last()
            .expect("build.sh prints its cache directory")
            .trim(),
    )
    .join("bin");
    let rendered = std::process::Command::new(bin.join("helm"))
        .args(["template", "paperbot"])
        .arg(repo().join("charts/paperbot"))
        .output()
        .expect("running helm template");
    assert!(rendered.status.success(), "helm template failed");
    let rendered = String::from_utf8_lossy(&rendered.stdout);
    let operator_image = format!("image: \"{}\"", built.images["paperbot-operator"].tag);
    assert!(
        rendered.contains(&operator_image),
        "the chart's default operator image should be {operator_image}"
    );
    let runtime_arg = format!("--runtime-image={}", built.images["bot-runtime"].tag);
    assert!(
        rendered.contains(&runtime_arg),
        "the chart's default runtime image should be {runtime_arg}"
    );
}

/// The pause image is the kubelet's default sandbox image, built from the
/// pinned Kubernetes module's pause.c: static, `/pause` as its entrypoint,
/// running as 65535 as upstream's does.
#[test]
fn pause_image_is_the_kubelets_default_sandbox_image() {
    let image = &built().images["pause"];
    let versions = std::fs::read_to_string(repo().join("tests/control-plane/versions.env"))
        .expect("reading versions.env");
    let k8s = versions
        .lines()
        .find_map(|l| l.strip_prefix("K8S_VERSION="))
        .expect("K8S_VERSION in versions.env");
    // Kubernetes 1.33's kubelet defaults to registry.k8s.io/pause:3.10.
    assert_eq!(image.tag, "registry.k8s.io/pause:3.10");
    assert_eq!(image.config["os"], "linux");
    assert_eq!(image.config["architecture"], "amd64");
    assert_eq!(image.config_field("User"), "65535:65535");
    assert_eq!(
        image.config_field("Entrypoint"),
        &serde_json::json!(["/pause"])
    );
    assert_eq!(image.regular_files(), BTreeSet::from(["pause".to_owned()]));
    let pause = image.file("pause");
    assert_eq!(pause.mode, 0o755);
    let (interp, needed) = dynamic_dependencies(&pause.data);
    assert_eq!((interp, needed), (None, vec![]), "pause is not static");
    let out = run_extracted("pause", &pause.data, &["-v"]);
    assert!(out.status.success(), "pause -v: {out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("pause.c v3.10-{k8s}")
    );
}

/// One Dockerfile stage, with what it inherits from its parent stages.
#[derive(Debug, Default, Clone)]
struct Stage {
    labels: BTreeMap<String, String>,
    user: Option<String>,
    entrypoint: Option<Vec<String>>,
    /// (source stage or None for the build context, source path, image path).
    copies: Vec<(Option<String>, String, String)>,
}

/// The Dockerfile's instructions: (keyword, arguments), continuation lines
/// joined, comments dropped.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (kw, rest) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push((kw.to_ascii_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    out
}

/// Splits `a="b c" d=e` into `[("a", "b c"), ("d", "e")]`.
fn key_values(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return pairs;
        }
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                value.push(c);
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        pairs.push((key.trim().to_owned(), value));
    }
}

/// Replaces `${NAME}` by its value in `args`.
fn substitute(text: &str, args: &BTreeMap<String, String>) -> String {
    args.iter().fold(text.to_owned(), |t, (k, v)| {
        t.replace(&format!("${{{k}}}"), v)
    })
}

/// Parses the Dockerfile into its stages and the default of each `ARG`.
fn dockerfile_stages(text: &str) -> (BTreeMap<String, Stage>, BTreeMap<String, String>) {
    let mut stages: BTreeMap<String, Stage> = BTreeMap::new();
    let mut defaults = BTreeMap::new();
    let mut current: Option<(String, Stage)> = None;
    for (kw, rest) in dockerfile_instructions(text) {
        match kw.as_str() {
            "FROM" => {
                if let Some((name, stage)) = current.take() {
                    stages.insert(name, stage);
                }
                let words: Vec<&str> = rest.split_whitespace().collect();
                let name = match words.as_slice() {
                    [.., as_kw, name] if as_kw.eq_ignore_ascii_case("as") => name.to_string(),
                    _ => panic!("every Dockerfile stage is named: FROM {rest}"),
                };
                let parent = words
                    .iter()
                    .find(|w| !w.starts_with("--"))
                    .expect("FROM names an image");
                let stage = stages.get(*parent).cloned().unwrap_or_default();
                current = Some((name, stage));
            }
            "ARG" => {
                for (k, v) in key_values(&rest) {
                    defaults.insert(k, v);
                }
            }
            "LABEL" => {
                let (_, stage) = current.as_mut().expect("LABEL after FROM");
                stage.labels.extend(key_values(&rest));
            }
            "USER" => current.as_mut().expect("USER after FROM").1.user = Some(rest),
            "ENTRYPOINT" => {
                let exec: Vec<String> = serde_json::from_str(&rest)
                    .unwrap_or_else(|e| panic!("ENTRYPOINT in exec (JSON) form: {rest}: {e}"));
                current
                    .as_mut()
                    .expect("ENTRYPOINT after FROM")
                    .1
                    .entrypoint = Some(exec);
            }
            "COPY" => {
                let mut from = None;
                let mut paths = Vec::new();
                for w in rest.split_whitespace() {
                    match w.strip_prefix("--from=") {
                        Some(f) => from = Some(f.to_owned()),
                        None if w.starts_with("--") => panic!("unexpected COPY flag {w}"),
                        None => paths.push(w.to_owned()),
                    }
                }
                let dest = paths.pop().expect("COPY destination");
                let (_, stage) = current.as_mut().expect("COPY after FROM");
                for src in paths {
                    let target = if dest.ends_with('/') {
                        let base = src.rsplit('/').next().unwrap_or_default();
                        format!("{dest}{base}")
                    } else {
                        dest.clone()
                    };
                    stage.copies.push((from.clone(), src, target));
                }
            }
            _ => {}
        }
    }
    if let Some((name, stage)) = current.take() {
        stages.insert(name, stage);
    }
    (stages, defaults)
}

/// The Dockerfile describes the images the script builds: for each paperbot
/// stage the same labels (build args at the script's values, `VERSION`
/// defaulting to the workspace version), user and entrypoint, and exactly the
/// image's files, each with the same content (local files, the CA bundle,
/// and the binary from the same profile and target).
#[test]
fn dockerfile_describes_the_same_images_as_the_script() {
    let built = built();
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("reading Dockerfile");
    let (stages, defaults) = dockerfile_stages(&text);
    let version = workspace_field("version");
    assert_eq!(
        defaults.get("VERSION"),
        Some(&version),
        "ARG VERSION default"
    );
    let rust_version = defaults.get("RUST_VERSION").expect("ARG RUST_VERSION");
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    assert!(
        parse(rust_version) >= parse(&workspace_field("rust-version")),
        "the builder's Rust {rust_version} is older than the workspace's rust-version"
    );

    let (revision, created) = expected_revision_and_created();
    let args: BTreeMap<String, String> = [
        ("VERSION", version.clone()),
        ("REVISION", revision),
        ("CREATED", created),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .into();
    let musl_target = repo().join("target/musl");
    for name in PAPERBOT_IMAGES {
        let stage = stages
            .get(name)
            .unwrap_or_else(|| panic!("Dockerfile has no stage {name}"));
        let image = &built.images[name];
        let labels: BTreeMap<String, String> = stage
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), substitute(v, &args)))
            .collect();
        assert_eq!(labels, image.labels(), "{name}: Dockerfile labels");
        assert_eq!(
            stage.user.as_deref(),
            image.config_field("User").as_str(),
            "{name}: USER"
        );
        assert_eq!(
            Some(&serde_json::to_value(stage.entrypoint.clone()).expect("json")),
            Some(image.config_field("Entrypoint")),
            "{name}: ENTRYPOINT"
        );
        let copied: BTreeSet<String> = stage
            .copies
            .iter()
            .map(|(_, _, target)| target.trim_start_matches('/').to_owned())
            .collect();
        assert_eq!(copied, image.regular_files(), "{name}: COPY'd files");
        for (from, src, target) in &stage.copies {
            let local = match from.as_deref() {
                None => repo().join(src),
                Some("build") => match src.strip_prefix("/src/target/") {
                    Some(rest) => musl_target.join(rest),
                    None => PathBuf::from(src),
                },
                Some(other) => panic!("COPY --from={other}: unknown stage"),
            };
            let expected = std::fs::read(&local)
                .unwrap_or_else(|e| panic!("{name}: reading {}: {e}", local.display()));
            assert!(
                image.file(target).data == expected,
                "{name}: {target} differs from {} (COPY {src})",
                local.display()
            );
        }
    }
}

/// Building again is cheap and changes nothing: a second run into the same
/// directory assembles nothing, and a run into a fresh directory writes
/// byte-identical tarballs (reproducible images).
#[test]
fn rebuilding_is_a_no_op_and_reproducible() {
    let built = built();
    let before: BTreeMap<String, String> = built
        .images
        .keys()
        .map(|name| {
            let bytes = std::fs::read(image_dir().join(format!("{name}.tar"))).expect("tarball");
            (name.clone(), sha256_hex(&bytes))
        })
        .collect();

    let again = run_build(&image_dir());
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "images/build.sh again: {log}");
    for name in built.images.keys() {
        assert!(
            log.contains(&format!("== {name}: unchanged")),
            "{name} was assembled again although nothing changed:\n{log}"
        );
    }
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        built.summary,
        "same sizes"
    );

    let fresh = tempfile::tempdir().expect("temp dir");
    let out = run_build(fresh.path());
    assert!(
        out.status.success(),
        "images/build.sh into {}: {}",
        fresh.path().display(),
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, digest) in &before {
        let bytes = std::fs::read(fresh.path().join(format!("{name}.tar"))).expect("tarball");
        assert_eq!(
            &sha256_hex(&bytes),
            digest,
            "{name}: a second build differs"
        );
    }
}
