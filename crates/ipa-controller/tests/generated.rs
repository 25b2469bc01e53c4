//! The committed CRD and install manifest must be what the code generates (also checked by
//! scripts/check-generated.sh through the binary). `IPA_WRITE_GENERATED=1 cargo test -p ipa-controller --test
//! generated` rewrites them.

use std::path::PathBuf;

use ipa_controller::manifests::{ManifestOptions, install_yaml};

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

#[test]
fn committed_manifests_match_the_code() -> Result<(), Box<dyn std::error::Error>> {
    let crd = ipa_controller::crd::crd_yaml()?;
    let chart_crd = ipa_controller::crd::crd_helm_template()?;
    let install = install_yaml(&ManifestOptions::default())?;
    let expected = [
        ("deploy/crd.yaml", &crd),
        ("deploy/helm/ipa/templates/crd.yaml", &chart_crd),
        ("deploy/install.yaml", &install),
    ];
    let write = std::env::var("IPA_WRITE_GENERATED").is_ok_and(|v| v == "1");
    for (path, content) in expected {
        let file = repo_file(path);
        if write {
            std::fs::write(&file, content)?;
        }
        let committed = std::fs::read_to_string(&file)?;
        assert!(
            committed == *content,
            "{path} is out of date: run scripts/check-generated.sh --write"
        );
    }
    Ok(())
}
