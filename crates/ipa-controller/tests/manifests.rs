//! The generated install manifest against the test bed's real apiserver: `kubectl apply --dry-run=server`
//! validates every object (CRD structural schema, RBAC, Deployments, Service) without changing the cluster,
//! except for creating the target namespace, which a server-side dry run of namespaced objects needs.

use std::path::PathBuf;
use std::process::Command;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn kubectl() -> String {
    std::env::var("TESTBED_KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

fn run(args: &[&str], stdin_file: Option<&PathBuf>) -> Result<String, Box<dyn std::error::Error>> {
    let mut cmd = Command::new(kubectl());
    cmd.args(args);
    if let Some(file) = stdin_file {
        cmd.arg("-f").arg(file);
    }
    let out = cmd.output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(format!("kubectl {args:?} failed: {text}").into());
    }
    Ok(text)
}

#[test]
#[ignore = "needs the test bed (make test)"]
fn install_yaml_passes_server_side_dry_run() -> TestResult {
    std::env::var("KUBECONFIG")
        .map_err(|_| "KUBECONFIG is not set: run `make testbed-up` and source testbed/.env")?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let ns = "ipa-system";
    if run(&["get", "namespace", ns], None).is_err() {
        run(&["create", "namespace", ns], None)?;
    }
    let out = run(
        &["apply", "--dry-run=server"],
        Some(&root.join("deploy/install.yaml")),
    )?;
    println!("{out}");
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/ipas.ipa.shafinhasnat.me",
        "clusterrole.rbac.authorization.k8s.io/ipa-controller",
        "deployment.apps/ipa-controller",
        "deployment.apps/ipa-agent",
        "service/ipa-agent",
        "service/ipa-controller-webhook",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/ipa-controller",
    ] {
        assert!(out.contains(object), "{object} missing from: {out}");
    }
    // The seed's own manifest is accepted unchanged by the CRD (dry run against the installed CRD).
    run(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=ipa-e2e",
        ],
        Some(&root.join("deploy/crd.yaml")),
    )?;
    run(
        &[
            "wait",
            "--for=condition=Established",
            "crd/ipas.ipa.shafinhasnat.me",
            "--timeout=30s",
        ],
        None,
    )?;
    let seed = std::env::temp_dir().join(format!("ipa-seed-{}.yaml", std::process::id()));
    std::fs::write(
        &seed,
        "apiVersion: ipa.shafinhasnat.me/v1alpha1\nkind: IPA\nmetadata:\n  name: ipa\nspec:\n  metadata:\n    \
         prometheusUri: http://prometheus-server.default.svc\n    llmAgent: https://ipaagent.shafinhasnat.me\n    \
         ipaGroup:\n    - deployment: testapp\n      namespace: ipaapp\n      ingress: testappingress\n",
    )?;
    let out = run(&["apply", "--dry-run=server", "-n", "default"], Some(&seed))?;
    assert!(out.contains("ipa.ipa.shafinhasnat.me/ipa created"), "{out}");
    Ok(())
}

/// The Helm chart: `helm lint`, then `helm template --include-crds` validated by the real apiserver with a
/// server-side dry run. `HELM` is the test bed's helm binary (built from the Go module proxy; scripts/test-all.sh
/// exports it); it only renders, nothing is installed.
#[test]
#[ignore = "needs the test bed (make test)"]
fn helm_chart_lints_and_renders_to_valid_objects() -> TestResult {
    std::env::var("KUBECONFIG")
        .map_err(|_| "KUBECONFIG is not set: run `make testbed-up` and source testbed/.env")?;
    let helm = std::env::var("HELM")
        .map_err(|_| "HELM is not set: scripts/test-all.sh exports the test bed's helm binary")?;
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/ipa");
    let helm_run = |args: &[&str]| -> Result<String, Box<dyn std::error::Error>> {
        let out = Command::new(&helm).args(args).arg(&chart).output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!(
                "helm {args:?} failed: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(stdout)
    };
    println!("{}", helm_run(&["lint"])?);
    // A wrong-typed value fails on the chart's values.schema.json, before anything renders.
    let wrong = helm_run(&["template", "ipa", "--set", "controller.replicas=two"]);
    let error = wrong.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        error.contains("/controller/replicas"),
        "a string for controller.replicas was accepted: {error}"
    );
    // The chart packages (what a release publishes).
    let packages = std::env::temp_dir().join(format!("ipa-helm-package-{}", std::process::id()));
    let packaged = helm_run(&["package", "--destination", &packages.display().to_string()]);
    let _ = std::fs::remove_dir_all(&packages);
    println!("{}", packaged?);
    let rendered = helm_run(&[
        "template",
        "ipa",
        "--namespace",
        "ipa-system",
        "--include-crds",
    ])?;
    let file = std::env::temp_dir().join(format!("ipa-helm-{}.yaml", std::process::id()));
    std::fs::write(&file, &rendered)?;
    if run(&["get", "namespace", "ipa-system"], None).is_err() {
        run(&["create", "namespace", "ipa-system"], None)?;
    }
    let out = run(
        &["apply", "--dry-run=server", "-n", "ipa-system"],
        Some(&file),
    );
    let _ = std::fs::remove_file(&file);
    let out = out?;
    println!("{out}");
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/ipas.ipa.shafinhasnat.me",
        "deployment.apps/",
        "poddisruptionbudget.policy/ipa-controller",
        "service/ipa-controller-metrics",
    ] {
        assert!(out.contains(object), "{object} missing from: {out}");
    }
    Ok(())
}
