//! IPA's container image, built without a container engine: one layer holding the `ipa` binary (and, for a
//! dynamically linked build, the shared libraries `ldd` names, so the image needs no base), written as an OCI
//! image layout in a tar archive (`skopeo copy oci-archive:…`, `kind load image-archive`, or unpacked for
//! `crane push`).
//!
//! The layout follows `deploy/Dockerfile`: the binary at `/usr/local/bin/ipa`, user `65532:65532` (distroless'
//! `nonroot`), entrypoint `ipa`, command `controller --metrics-listen=0.0.0.0:8080`, no shell. The archive is
//! reproducible: entries sorted, owners and times fixed, so the same binary gives the same digests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, HistoryBuilder, ImageConfiguration,
    ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType, Os,
    RootFsBuilder, Sha256Digest,
};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// Where the binary lives in the image (as in `deploy/Dockerfile`).
pub const BINARY_PATH: &str = "/usr/local/bin/ipa";
/// distroless' `nonroot` user and group, as in `deploy/Dockerfile`.
pub const USER: &str = "65532:65532";
/// The command the Dockerfile runs by default: the controller, its metrics on every address of the pod.
pub const DEFAULT_COMMAND: [&str; 2] = ["controller", "--metrics-listen=0.0.0.0:8080"];

/// What can go wrong building the image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ldd {binary}: {why}")]
    Ldd { binary: PathBuf, why: String },
    #[error("objcopy --strip-debug {binary}: {why}")]
    StripDebug { binary: PathBuf, why: String },
    #[error("no OCI architecture for {0}")]
    Architecture(String),
    #[error("OCI object: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("writing the archive: {0}")]
    Write(std::io::Error),
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// What goes into the image.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The built `ipa` binary.
    pub binary: PathBuf,
    /// Drop its debug sections (`objcopy --strip-debug`): the release profile's line tables are three quarters of
    /// its size, and the symbols that name functions in a backtrace stay.
    pub strip_debug: bool,
    /// Shared libraries the binary loads, each put at its own path (`shared_libraries` finds them).
    pub libraries: Vec<PathBuf>,
    /// A PEM bundle put at `/etc/ssl/certs/ca-certificates.crt`, for HTTPS to LLM APIs and Prometheus.
    pub ca_bundle: Option<PathBuf>,
    /// Repository name, e.g. `ghcr.io/ipa/ipa`.
    pub name: String,
    pub tag: String,
}

/// The archive written: the manifest's digest and the layer's sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub manifest_digest: String,
    pub layer_bytes: u64,
    pub compressed_layer_bytes: u64,
    pub files: usize,
}

/// The shared libraries `ldd` says `binary` loads (none for a static binary).
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let ldd_error = |why: String| Error::Ldd {
        binary: binary.to_owned(),
        why,
    };
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| ldd_error(e.to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // ldd exits 1 for a static binary ("not a dynamic executable"); that is not an error here.
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !stderr.contains("not a dynamic executable") {
        return Err(ldd_error(format!("{}{stderr}", text.trim())));
    }
    parse_ldd(&text).map_err(ldd_error)
}

/// The library paths of `ldd`'s output: `name => /path (addr)` and the loader's `/path (addr)`; the vDSO has no
/// file. A library `ldd` cannot find is an error: the image would not start.
pub fn parse_ldd(output: &str) -> Result<Vec<PathBuf>, String> {
    let mut libraries = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not found") {
            return Err(format!("missing library: {line}"));
        }
        let path = match line.split_once("=>") {
            Some((_, target)) => target.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

/// One file or directory of the layer.
#[derive(Debug, Clone)]
struct Entry {
    data: Option<Vec<u8>>,
    mode: u32,
    owner: u64,
}

impl Entry {
    fn file(data: Vec<u8>, mode: u32) -> Self {
        Self {
            data: Some(data),
            mode,
            owner: 0,
        }
    }

    fn dir(mode: u32, owner: u64) -> Self {
        Self {
            data: None,
            mode,
            owner,
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// The binary as it goes into the image: as built, or without its debug sections.
fn binary_bytes(spec: &ImageSpec) -> Result<Vec<u8>> {
    if !spec.strip_debug {
        return read(&spec.binary);
    }
    let error = |why: String| Error::StripDebug {
        binary: spec.binary.clone(),
        why,
    };
    let stripped = std::env::temp_dir().join(format!("ipa-image-{}.stripped", std::process::id()));
    let out = std::process::Command::new("objcopy")
        .arg("--strip-debug")
        .arg(&spec.binary)
        .arg(&stripped)
        .output()
        .map_err(|e| error(e.to_string()))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&stripped);
        return Err(error(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    let bytes = read(&stripped);
    let _ = std::fs::remove_file(&stripped);
    bytes
}

/// The layer's entries by path (no leading `/`), parents included.
fn layer_entries(spec: &ImageSpec) -> Result<BTreeMap<String, Entry>> {
    let mut entries = BTreeMap::new();
    let relative = |p: &Path| p.to_string_lossy().trim_start_matches('/').to_owned();
    entries.insert(
        relative(Path::new(BINARY_PATH)),
        Entry::file(binary_bytes(spec)?, 0o755),
    );
    for library in &spec.libraries {
        entries.insert(relative(library), Entry::file(read(library)?, 0o755));
    }
    if let Some(bundle) = &spec.ca_bundle {
        let path = "etc/ssl/certs/ca-certificates.crt".to_owned();
        entries.insert(path, Entry::file(read(bundle)?, 0o644));
    }
    // distroless' users: Kubernetes' `runAsNonRoot` needs only the numeric user, but tools want the names.
    let passwd = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n";
    entries.insert("etc/passwd".into(), Entry::file(passwd.into(), 0o644));
    let group = "root:x:0:\nnonroot:x:65532:\n";
    entries.insert("etc/group".into(), Entry::file(group.into(), 0o644));
    entries.insert("home/nonroot".into(), Entry::dir(0o700, 65532));
    entries.insert("tmp".into(), Entry::dir(0o1777, 0));
    let parents: Vec<String> = entries
        .keys()
        .flat_map(|path| {
            let mut dirs = Vec::new();
            let mut parent = Path::new(path).parent();
            while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
                dirs.push(dir.to_string_lossy().into_owned());
                parent = dir.parent();
            }
            dirs
        })
        .collect();
    for dir in parents {
        entries.entry(dir).or_insert_with(|| Entry::dir(0o755, 0));
    }
    Ok(entries)
}

/// A tar of `entries` in path order, every time zero and every owner root unless the entry says otherwise.
fn tar(entries: &BTreeMap<String, Entry>) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, entry) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(entry.mode);
        header.set_uid(entry.owner);
        header.set_gid(entry.owner);
        header.set_mtime(0);
        let data: &[u8] = match &entry.data {
            Some(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                data
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                &[]
            }
        };
        let name = if entry.data.is_none() {
            format!("{path}/")
        } else {
            path.clone()
        };
        builder
            .append_data(&mut header, name, data)
            .map_err(Error::Write)?;
    }
    builder.into_inner().map_err(Error::Write)
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    // No name and time zero in the gzip header, so the digest depends on the content only.
    let mut encoder = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).map_err(Error::Write)?;
    encoder.finish().map_err(Error::Write)
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn sha256_digest(data: &[u8]) -> Result<Sha256Digest> {
    let hex = sha256(data);
    Ok(hex.trim_start_matches("sha256:").parse()?)
}

/// The OCI architecture of the machine that built the binary (its libraries are this machine's too).
fn architecture() -> Result<Arch> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(Arch::Amd64),
        "aarch64" => Ok(Arch::ARM64),
        other => Err(Error::Architecture(other.to_owned())),
    }
}

/// The image configuration: how a runtime starts the container.
fn configuration(diff_id: &str) -> Result<ImageConfiguration> {
    let labels = [
        ("org.opencontainers.image.title", "ipa"),
        (
            "org.opencontainers.image.description",
            "The Intelligent Pod Autoscaler: controller, agent, simulator",
        ),
        // The workspace's version, which the binary shares (a tag may be anything, e.g. `dev`).
        (
            "org.opencontainers.image.version",
            env!("CARGO_PKG_VERSION"),
        ),
        ("org.opencontainers.image.licenses", "Apache-2.0"),
    ];
    let config = ConfigBuilder::default()
        .user(USER)
        .entrypoint(vec![BINARY_PATH.to_owned()])
        .cmd(DEFAULT_COMMAND.map(str::to_owned).to_vec())
        .env(vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt".to_owned(),
        ])
        .working_dir("/")
        .labels(
            labels
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .build()?;
    let history = HistoryBuilder::default()
        .created_by(format!(
            "ipa-image: {BINARY_PATH} and the shared libraries it loads"
        ))
        .build()?;
    Ok(ImageConfigurationBuilder::default()
        .architecture(architecture()?)
        .os(Os::Linux)
        .config(config)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id.to_owned()])
                .build()?,
        )
        .history(vec![history])
        .build()?)
}

/// JSON with every object's keys sorted, so maps (labels, annotations) serialize the same on every run.
fn canonical_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    fn sort(value: Value) -> Value {
        match value {
            Value::Object(map) => {
                let sorted: BTreeMap<String, Value> =
                    map.into_iter().map(|(k, v)| (k, sort(v))).collect();
                Value::Object(sorted.into_iter().collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sort).collect()),
            other => other,
        }
    }
    Ok(serde_json::to_vec(&sort(serde_json::to_value(value)?))?)
}

/// The image as an OCI layout's content.
struct Layout {
    /// Digest → bytes.
    blobs: BTreeMap<String, Vec<u8>>,
    index: Vec<u8>,
    summary: Summary,
}

/// The image's blobs and its `index.json`.
fn layout(spec: &ImageSpec) -> Result<Layout> {
    let entries = layer_entries(spec)?;
    let layer = tar(&entries)?;
    let compressed = gzip(&layer)?;
    let config = canonical_json(&configuration(&sha256(&layer))?)?;
    let descriptor = |media: MediaType, data: &[u8]| -> Result<Descriptor> {
        Ok(DescriptorBuilder::default()
            .media_type(media)
            .size(data.len() as u64)
            .digest(sha256_digest(data)?)
            .build()?)
    };
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(MediaType::ImageConfig, &config)?)
        .layers(vec![descriptor(MediaType::ImageLayerGzip, &compressed)?])
        .build()?;
    let manifest = canonical_json(&manifest)?;
    let mut manifest_descriptor = descriptor(MediaType::ImageManifest, &manifest)?;
    // The tag for skopeo and the OCI layout; the full name for containerd (`kind load image-archive`).
    manifest_descriptor.set_annotations(Some(
        [
            (
                "org.opencontainers.image.ref.name".to_owned(),
                spec.tag.clone(),
            ),
            (
                "io.containerd.image.name".to_owned(),
                format!("{}:{}", spec.name, spec.tag),
            ),
        ]
        .into_iter()
        .collect(),
    ));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_descriptor])
        .build()?;
    let summary = Summary {
        manifest_digest: sha256(&manifest),
        layer_bytes: layer.len() as u64,
        compressed_layer_bytes: compressed.len() as u64,
        files: entries.values().filter(|e| e.data.is_some()).count(),
    };
    let blobs = [config, manifest, compressed]
        .into_iter()
        .map(|data| (sha256(&data), data))
        .collect();
    Ok(Layout {
        blobs,
        index: canonical_json(&index)?,
        summary,
    })
}

/// The OCI archive (a tar of the image layout) as bytes.
pub fn archive(spec: &ImageSpec) -> Result<(Vec<u8>, Summary)> {
    let Layout {
        blobs,
        index,
        summary,
    } = layout(spec)?;
    let mut entries = BTreeMap::new();
    entries.insert(
        "oci-layout".to_owned(),
        Entry::file(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(), 0o644),
    );
    entries.insert("index.json".to_owned(), Entry::file(index, 0o644));
    entries.insert("blobs".to_owned(), Entry::dir(0o755, 0));
    entries.insert("blobs/sha256".to_owned(), Entry::dir(0o755, 0));
    for (digest, data) in blobs {
        let path = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
        entries.insert(path, Entry::file(data, 0o644));
    }
    Ok((tar(&entries)?, summary))
}

/// Builds the archive and writes it to `out`.
pub fn write_archive(spec: &ImageSpec, out: &Path) -> Result<Summary> {
    let (bytes, summary) = archive(spec)?;
    std::fs::write(out, bytes).map_err(|source| Error::Io {
        path: out.to_owned(),
        source,
    })?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LDD: &str = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                       \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";

    #[test]
    fn ldd_output_gives_every_library_file_and_not_the_vdso() -> Result<(), String> {
        let libraries = parse_ldd(LDD)?;
        assert_eq!(
            libraries,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(parse_ldd("\tlibfoo.so => not found\n").is_err());
        assert_eq!(parse_ldd("\tstatically linked\n")?, Vec::<PathBuf>::new());
        Ok(())
    }

    #[test]
    fn the_same_binary_gives_the_same_archive() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("ipa-image-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(Error::Write)?;
        let binary = dir.join("ipa");
        std::fs::write(&binary, b"#!not really a binary").map_err(Error::Write)?;
        let spec = ImageSpec {
            binary,
            strip_debug: false,
            libraries: Vec::new(),
            ca_bundle: None,
            name: "ghcr.io/ipa/ipa".into(),
            tag: "0.1.0".into(),
        };
        let (first, summary) = archive(&spec)?;
        let (second, _) = archive(&spec)?;
        let _ = std::fs::remove_dir_all(&dir);
        assert!(first == second, "two builds differ");
        // The binary, passwd and group.
        assert_eq!(summary.files, 3);
        Ok(())
    }
}
