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

/// The CRD is a template of the chart (not in `crds/`, which Helm installs once and never upgrades): `helm
/// upgrade` with a chart whose CRD differs changes the CRD in the apiserver, and `helm uninstall` keeps it
/// (`helm.sh/resource-policy: keep`). The changed chart is the real one with one printer column's description
/// edited. A CRD the other tests applied is adopted by the release first, as `helm install` refuses to take over
/// an object it does not own.
#[test]
#[ignore = "needs the test bed (make test)"]
fn helm_upgrade_changes_the_crd() -> TestResult {
    std::env::var("KUBECONFIG")
        .map_err(|_| "KUBECONFIG is not set: run `make testbed-up` and source testbed/.env")?;
    let helm = std::env::var("HELM")
        .map_err(|_| "HELM is not set: scripts/test-all.sh exports the test bed's helm binary")?;
    let (release, ns, crd) = (
        "ipa-upgrade",
        "ipa-helm-e2e",
        "crd/ipas.ipa.shafinhasnat.me",
    );
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/ipa");
    let helm_run = |args: &[&str], chart: &PathBuf| -> Result<String, Box<dyn std::error::Error>> {
        let out = Command::new(&helm)
            .args(args)
            .args([release, &chart.display().to_string(), "-n", ns])
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            return Err(format!("helm {args:?} failed: {text}").into());
        }
        Ok(text)
    };
    let description = || {
        run(
            &[
                "get",
                crd,
                "-o",
                "jsonpath={.spec.versions[0].additionalPrinterColumns[0].description}",
            ],
            None,
        )
    };
    let _ = Command::new(&helm)
        .args(["uninstall", release, "-n", ns])
        .output();
    adopt_crd(release, ns)?;
    helm_run(&["install", "--create-namespace"], &chart)?;
    let original = description()?;
    assert_eq!(original, "Targets found / listed");

    let changed = std::env::temp_dir().join(format!("ipa-helm-upgrade-{}", std::process::id()));
    copy_dir(&chart, &changed)?;
    let template = changed.join("templates/crd.yaml");
    let text = std::fs::read_to_string(&template)?;
    let edited = text.replace(
        "description: Targets found / listed",
        "description: Targets found / listed (upgraded)",
    );
    assert_ne!(
        edited, text,
        "the printer column's description is not in the CRD template"
    );
    std::fs::write(&template, edited)?;
    let upgraded = helm_run(&["upgrade"], &changed);
    let _ = std::fs::remove_dir_all(&changed);
    println!("{}", upgraded?);
    assert_eq!(description()?, "Targets found / listed (upgraded)");

    // Back to the real chart, then uninstall: the CRD stays, as it was.
    helm_run(&["upgrade"], &chart)?;
    assert_eq!(description()?, original);
    let out = Command::new(&helm)
        .args(["uninstall", release, "-n", ns])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(description()?, original, "the CRD went with the release");
    run(&["delete", "namespace", ns, "--wait=false"], None)?;
    Ok(())
}

/// Copies the files of `from` into `to` (the chart is two levels deep and has no links).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Hands the IPA CRD, if another test applied it, to the Helm release `release` in `ns`: `helm install` refuses
/// an existing object unless it carries the release's ownership label and annotations.
fn adopt_crd(release: &str, ns: &str) -> TestResult {
    let crd = "crd/ipas.ipa.shafinhasnat.me";
    if run(&["get", crd], None).is_err() {
        return Ok(());
    }
    run(
        &[
            "label",
            "--overwrite",
            crd,
            "app.kubernetes.io/managed-by=Helm",
        ],
        None,
    )?;
    run(
        &[
            "annotate",
            "--overwrite",
            crd,
            &format!("meta.helm.sh/release-name={release}"),
            &format!("meta.helm.sh/release-namespace={ns}"),
        ],
        None,
    )?;
    Ok(())
}

/// What the quickstart test does with one command of docs/quickstart.md.
enum Step {
    /// Run on the bed, as written apart from the controller's namespace (see [`QUICKSTART_NAMESPACE`]).
    Run,
    /// Run by another test, named.
    Elsewhere(&'static str),
    /// Not run here, and why.
    NotHere(&'static str),
}

/// The e2e suite owns `ipa-system`'s ServiceAccount `ipa-controller` (install.yaml's identity, which the chart's
/// would clash with): the quickstart's controller goes to this namespace instead.
const QUICKSTART_NAMESPACE: &str = "ipa-quickstart";

/// Every command of docs/quickstart.md, by how it starts. A command the table does not know fails the test, so
/// a command added to the quickstart is either run here or says why it cannot be.
const QUICKSTART: &[(&str, Step)] = &[
    (
        "make image",
        Step::Elsewhere("scripts/test-all.sh, then crates/ipa-image/tests/archive.rs"),
    ),
    ("kind ", Step::NotHere("no container engine here")),
    (
        "skopeo copy",
        Step::NotHere(
            "no skopeo here; the crane push below reads the archive as a registry client",
        ),
    ),
    (
        "mkdir ipa-oci",
        Step::Elsewhere("crates/ipa-image/tests/archive.rs, to crane's own registry"),
    ),
    ("docker build", Step::NotHere("no container engine here")),
    (
        "helm repo add",
        Step::NotHere("the bed runs its own Prometheus; no chart repository downloads"),
    ),
    (
        "helm install prometheus",
        Step::NotHere("the bed runs its own Prometheus"),
    ),
    ("helm install ipa deploy/helm/ipa", Step::Run),
    ("kubectl -n ipa-system get pods", Step::Run),
    ("kubectl create namespace shop", Step::Run),
    ("kubectl -n shop create deployment", Step::Run),
    ("kubectl -n shop set resources", Step::Run),
    ("kubectl apply -n shop -f -", Step::Run),
    ("kubectl get ipa -A", Step::Run),
    ("kubectl -n shop describe ipa web", Step::Run),
    ("kubectl -n shop get events", Step::Run),
    (
        "kubectl -n ipa-system port-forward",
        Step::NotHere("KWOK's pods run no process to forward to"),
    ),
];

/// The commands of the markdown's `sh` blocks: continuation lines joined, a here-document kept with its
/// command, trailing comments dropped.
fn shell_commands(markdown: &str) -> Vec<String> {
    let (mut commands, mut in_block, mut heredoc) = (Vec::<String>::new(), false, None::<String>);
    let mut pending = String::new();
    for line in markdown.lines() {
        if let Some(end) = &heredoc {
            if let Some(last) = commands.last_mut() {
                last.push('\n');
                last.push_str(line);
            }
            if line.trim() == end {
                heredoc = None;
            }
            continue;
        }
        if line.starts_with("```") {
            in_block = line == "```sh";
            continue;
        }
        if !in_block || line.trim().is_empty() {
            continue;
        }
        let code = line.split(" #").next().unwrap_or_default().trim_end();
        if let Some(head) = code.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        let command = format!("{pending}{code}");
        pending.clear();
        if let Some((_, marker)) = command.split_once("<<'") {
            heredoc = marker.split('\'').next().map(str::to_owned);
        }
        commands.push(command);
    }
    commands
}

/// docs/quickstart.md on the bed: every command that can run here runs, in order, as written (the controller
/// in [`QUICKSTART_NAMESPACE`]); the chart installs, the example Deployment and IPA apply, and the commands that
/// show the result answer. The commands that cannot run here say why in [`QUICKSTART`].
#[test]
#[ignore = "needs the test bed (make test)"]
fn quickstart_commands_run_on_the_bed() -> TestResult {
    std::env::var("KUBECONFIG")
        .map_err(|_| "KUBECONFIG is not set: run `make testbed-up` and source testbed/.env")?;
    let helm = PathBuf::from(std::env::var("HELM").map_err(|_| "HELM is not set")?);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let markdown = std::fs::read_to_string(root.join("docs/quickstart.md"))?;
    // kubectl and helm on PATH, as the reader has them.
    let tools = [PathBuf::from(kubectl()), helm.clone()]
        .iter()
        .filter_map(|p| p.parent().map(|d| d.display().to_string()))
        .collect::<Vec<_>>()
        .join(":");
    let path = format!("{tools}:{}", std::env::var("PATH").unwrap_or_default());
    let _ = Command::new(&helm)
        .args(["uninstall", "ipa", "-n", QUICKSTART_NAMESPACE])
        .output();
    let _ = run(&["delete", "namespace", "shop", "--wait=true"], None);
    adopt_crd("ipa", QUICKSTART_NAMESPACE)?;
    let (mut ran, mut skipped, mut used) = (0, Vec::new(), vec![false; QUICKSTART.len()]);
    for command in shell_commands(&markdown) {
        let (index, step) = QUICKSTART
            .iter()
            .enumerate()
            .find(|(_, (start, _))| command.starts_with(start))
            .map(|(i, (_, step))| (i, step))
            .ok_or_else(|| {
                format!("docs/quickstart.md has a command this test does not know: {command}")
            })?;
        used[index] = true;
        match step {
            Step::Run => {}
            Step::Elsewhere(test) => {
                skipped.push(format!("{command}: run by {test}"));
                continue;
            }
            Step::NotHere(why) => {
                skipped.push(format!("{command}: {why}"));
                continue;
            }
        }
        let command = command.replace("ipa-system", QUICKSTART_NAMESPACE);
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &command])
            .current_dir(&root)
            .env("PATH", &path)
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("$ {command}\n{text}");
        if !out.status.success() {
            return Err(format!("quickstart command failed: {command}\n{text}").into());
        }
        ran += 1;
    }
    println!(
        "ran {ran} commands; the others:\n  {}",
        skipped.join("\n  ")
    );
    // The table names nothing the quickstart no longer has.
    let stale: Vec<&str> = QUICKSTART
        .iter()
        .zip(&used)
        .filter(|(_, used)| !**used)
        .map(|((start, _), _)| *start)
        .collect();
    assert!(
        stale.is_empty(),
        "not in docs/quickstart.md any more: {stale:?}"
    );
    let ipas = run(&["-n", "shop", "get", "ipa", "web", "-o", "name"], None)?;
    assert!(ipas.trim().ends_with("/web"), "{ipas}");
    let _ = Command::new(&helm)
        .args(["uninstall", "ipa", "-n", QUICKSTART_NAMESPACE])
        .output();
    run(
        &[
            "delete",
            "namespace",
            "shop",
            QUICKSTART_NAMESPACE,
            "--wait=false",
        ],
        None,
    )?;
    Ok(())
}
