//! The image archive CI builds (`make image`, `IMAGE_OUT`): a valid OCI layout whose blobs match their digests,
//! whose configuration says non-root and `ipa` as the entrypoint, and whose layer alone runs the binary (`ipa
//! --version`, `ipa crd`) — in a chroot of the unpacked layer, as the image's user, when this runs as root (as
//! CI does); otherwise through the layer's own dynamic loader and libraries.
//!
//! Then a real consumer reads it: the quickstart's `crane push` of the unpacked archive, to crane's own
//! in-process registry on loopback, and `crane validate` of what arrived (every layer and digest re-read).
//!
//! `#[ignore]`d: it needs the archive of a release build and the bed's crane (`CRANE`); scripts/test-all.sh runs
//! it after building both.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use ipa_image::{BINARY_PATH, DEFAULT_COMMAND, USER, sha256};
use oci_spec::image::{Arch, ImageConfiguration, ImageIndex, ImageManifest, Os};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// The archive's files by path.
fn read_archive(path: &Path) -> TestResult<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(path)?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type().is_file() {
            let name = entry.path()?.to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            files.insert(name, data);
        }
    }
    Ok(files)
}

/// The blob `digest`, checked against it.
fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, digest: &str) -> TestResult<&'a [u8]> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or("not a sha256 digest")?;
    let data = files
        .get(&format!("blobs/sha256/{hex}"))
        .ok_or_else(|| format!("blob {digest} missing"))?;
    assert_eq!(
        sha256(data),
        digest,
        "blob content does not match its digest"
    );
    Ok(data)
}

/// Runs `ipa <args>` from the unpacked layer `root`; returns its stdout.
fn run_from_layer(root: &Path, args: &[&str]) -> TestResult<String> {
    let is_root = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let out = if is_root {
        Command::new("chroot")
            .arg(format!("--userspec={USER}"))
            .arg(root)
            .arg(BINARY_PATH)
            .args(args)
            .output()?
    } else {
        // Without root no chroot: the layer's loader, told to ignore the host's library cache.
        let loader = root.join("lib64/ld-linux-x86-64.so.2");
        let libraries = root.join("lib/x86_64-linux-gnu");
        Command::new(loader)
            .arg("--inhibit-cache")
            .arg("--library-path")
            .arg(libraries)
            .arg(root.join(BINARY_PATH.trim_start_matches('/')))
            .args(args)
            .output()?
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("ipa {args:?} from the layer failed: {stdout}{stderr}").into());
    }
    Ok(stdout)
}

fn check_config(config: &ImageConfiguration) -> TestResult {
    let run = config.config().as_ref().ok_or("no execution config")?;
    let user = run.user().as_deref().ok_or("no user")?;
    assert_eq!(user, USER);
    assert_ne!(user.split(':').next(), Some("0"), "runs as root");
    assert_eq!(
        run.entrypoint().as_deref(),
        Some(&[BINARY_PATH.to_owned()][..])
    );
    assert_eq!(
        run.cmd().as_deref(),
        Some(&DEFAULT_COMMAND.map(str::to_owned)[..])
    );
    assert_eq!(config.os(), &Os::Linux);
    let arch = match std::env::consts::ARCH {
        "aarch64" => Arch::ARM64,
        _ => Arch::Amd64,
    };
    assert_eq!(config.architecture(), &arch);
    let labels = run.labels().as_ref().ok_or("no labels")?;
    assert_eq!(
        labels
            .get("org.opencontainers.image.version")
            .map(String::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        labels
            .get("org.opencontainers.image.title")
            .map(String::as_str),
        Some("ipa")
    );
    Ok(())
}

/// A registry on a free loopback port (`crane registry serve`), stopped on drop.
struct Registry {
    child: std::process::Child,
    address: String,
}

impl Registry {
    fn start(crane: &str) -> TestResult<Self> {
        let address = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .to_string();
        let child = Command::new(crane)
            .args(["registry", "serve", "--address", &address])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(&address).is_err() {
            if std::time::Instant::now() > deadline {
                return Err(format!("crane's registry did not listen on {address}").into());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(Self { child, address })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs crane; its output, or an error with it.
fn crane(crane: &str, args: &[&str]) -> TestResult<String> {
    let out = Command::new(crane).args(args).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(format!("crane {args:?} failed: {text}").into());
    }
    Ok(text)
}

/// The quickstart's `mkdir ipa-oci && tar -xf ipa.oci.tar -C ipa-oci && crane push ipa-oci <registry>/ipa:<tag>`,
/// with crane's own registry as `<registry>`; then `crane validate` of the pushed image.
#[test]
#[ignore = "needs the image archive of a release build and crane (make image, make testbed-tools)"]
fn image_archive_pushes_to_a_registry_and_validates() -> TestResult {
    let archive = std::env::var("IPA_IMAGE")
        .map_err(|_| "IPA_IMAGE is not set: build it with `make image`")?;
    let crane_bin = std::env::var("CRANE")
        .map_err(|_| "CRANE is not set: scripts/test-all.sh exports the bed's crane")?;
    let registry = Registry::start(&crane_bin)?;
    let layout = std::env::temp_dir().join(format!("ipa-oci-{}", std::process::id()));
    let image = format!("{}/ipa:{}", registry.address, env!("CARGO_PKG_VERSION"));
    let push = Command::new("bash")
        .args(["-euo", "pipefail", "-c"])
        .arg(format!(
            "mkdir {layout} && tar -xf {archive} -C {layout} && {crane_bin} push {layout} {image}",
            layout = layout.display()
        ))
        .output();
    let _ = std::fs::remove_dir_all(&layout);
    let push = push?;
    if !push.status.success() {
        return Err(format!(
            "crane push failed: {}",
            String::from_utf8_lossy(&push.stderr)
        )
        .into());
    }
    println!(
        "{}",
        crane(&crane_bin, &["validate", "--remote", &image])?.trim()
    );
    let config: ImageConfiguration =
        serde_json::from_str(&crane(&crane_bin, &["config", &image])?)?;
    check_config(&config)
}

#[test]
#[ignore = "needs the image archive of a release build (make image; scripts/test-all.sh)"]
fn image_archive_is_non_root_and_its_layer_runs_ipa() -> TestResult {
    let archive = PathBuf::from(
        std::env::var("IPA_IMAGE")
            .map_err(|_| "IPA_IMAGE is not set: build it with `make image`")?,
    );
    let files = read_archive(&archive)?;
    assert!(files.contains_key("oci-layout"), "not an OCI layout");
    let index: ImageIndex =
        serde_json::from_slice(files.get("index.json").ok_or("no index.json")?)?;
    let [descriptor] = index.manifests().as_slice() else {
        return Err("the index should name exactly one manifest".into());
    };
    let annotations = descriptor.annotations().clone().unwrap_or_default();
    let name = annotations
        .get("io.containerd.image.name")
        .ok_or("no image name")?;
    println!("{name} {}", descriptor.digest());
    let manifest: ImageManifest =
        serde_json::from_slice(blob(&files, descriptor.digest().as_ref())?)?;
    let config: ImageConfiguration =
        serde_json::from_slice(blob(&files, manifest.config().digest().as_ref())?)?;
    check_config(&config)?;
    let [layer] = manifest.layers().as_slice() else {
        return Err("the image should have one layer".into());
    };
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(blob(&files, layer.digest().as_ref())?).read_to_end(&mut tar)?;
    assert_eq!(config.rootfs().diff_ids(), &[sha256(&tar)], "diff_id");

    let root = std::env::temp_dir().join(format!("ipa-image-layer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    tar::Archive::new(tar.as_slice()).unpack(&root)?;
    let version = run_from_layer(&root, &["--version"]);
    let crd = run_from_layer(&root, &["crd"]);
    let _ = std::fs::remove_dir_all(&root);
    let version = version?;
    println!("{}", version.trim());
    assert!(version.starts_with("ipa "), "{version}");
    assert!(crd?.contains("kind: CustomResourceDefinition"));
    Ok(())
}
