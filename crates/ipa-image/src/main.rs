//! `ipa-image`: writes IPA's container image as an OCI archive from a built `ipa` binary (`make image`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ipa_image::{ImageSpec, shared_libraries, write_archive};

#[derive(Debug, Parser)]
#[command(
    name = "ipa-image",
    version,
    about = "Build IPA's image as an OCI archive, without a container engine"
)]
struct Args {
    /// The `ipa` binary to ship (a release build).
    #[arg(long, default_value = "target/release/ipa")]
    binary: PathBuf,
    /// Where the archive goes.
    #[arg(long, env = "IMAGE_OUT", default_value = "ipa-image.oci.tar")]
    out: PathBuf,
    /// Repository name recorded for containerd (`kind load image-archive`).
    #[arg(long, default_value = "ghcr.io/ipa/ipa")]
    name: String,
    /// Tag (default: the workspace version, as install.yaml and the chart name it).
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    tag: String,
    /// CA bundle to trust for HTTPS (LLM APIs, a managed Prometheus).
    #[arg(long, default_value = "/etc/ssl/certs/ca-certificates.crt")]
    ca_bundle: PathBuf,
    /// Leave the CA bundle out.
    #[arg(long)]
    no_ca_bundle: bool,
    /// Ship the binary with its debug sections (line tables), about four times the size.
    #[arg(long)]
    keep_debug_info: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let build = || -> Result<_, ipa_image::Error> {
        let spec = ImageSpec {
            libraries: shared_libraries(&args.binary)?,
            binary: args.binary.clone(),
            strip_debug: !args.keep_debug_info,
            ca_bundle: (!args.no_ca_bundle).then(|| args.ca_bundle.clone()),
            name: args.name.clone(),
            tag: args.tag.clone(),
        };
        write_archive(&spec, &args.out)
    };
    match build() {
        Ok(summary) => {
            println!(
                "{}: {}:{} {} ({} files, layer {} bytes, {} gzipped)",
                args.out.display(),
                args.name,
                args.tag,
                summary.manifest_digest,
                summary.files,
                summary.layer_bytes,
                summary.compressed_layer_bytes
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ipa-image: {e}");
            ExitCode::FAILURE
        }
    }
}
