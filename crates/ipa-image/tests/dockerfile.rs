//! deploy/Dockerfile (for people with Docker) and the archive `ipa-image` writes (CI, no container engine)
//! describe the same image: binary path, user, entrypoint and command.

use ipa_image::{BINARY_PATH, DEFAULT_COMMAND, USER};

const DOCKERFILE: &str = include_str!("../../../deploy/Dockerfile");

/// The argument of the Dockerfile's last `instruction` line.
fn last(instruction: &str) -> Option<&'static str> {
    DOCKERFILE
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(instruction)?.strip_prefix(' '))
}

/// A JSON-array (exec form) argument as its strings.
fn exec_form(argument: &str) -> Result<Vec<String>, serde_json::Error> {
    serde_json::from_str(argument)
}

#[test]
fn the_dockerfile_builds_the_layout_of_the_archive() -> Result<(), Box<dyn std::error::Error>> {
    assert_eq!(last("USER"), Some(USER));
    assert_eq!(
        exec_form(last("ENTRYPOINT").ok_or("no ENTRYPOINT")?)?,
        [BINARY_PATH]
    );
    assert_eq!(exec_form(last("CMD").ok_or("no CMD")?)?, DEFAULT_COMMAND);
    let copy = last("COPY").ok_or("no COPY")?;
    assert!(copy.ends_with(&format!(" {BINARY_PATH}")), "{copy}");
    // The archive carries the release binary as built (glibc) with the host's Debian 12 libraries: the base
    // must be distroless' glibc one, built from the same Debian release.
    assert_eq!(last("FROM"), Some("gcr.io/distroless/cc-debian12:nonroot"));
    Ok(())
}
