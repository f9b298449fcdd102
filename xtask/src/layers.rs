//! The layering rules `cargo tree` can check: which crates each layer must not pull in.

use crate::cargo::root;
use anyhow::{Context, Result, bail};
use std::process::Command;

/// ntp-proto is the runtime-free protocol library that ntpxc, the fuzz targets and the
/// daemon share: no async runtime, no BPF loader, no system-call wrappers.
const PROTO_FORBIDDEN: &[&str] = &["tokio", "aya", "nix", "libc", "socket2"];

/// ntpxc must build on stable with no bpf-linker, so nothing that builds the eBPF object.
const NTPXC_FORBIDDEN: &[&str] = &["ntp-user", "aya-build", "ntp-ebpf"];

/// Fails, naming every offending crate, if a layer depends on a crate it must not.
pub(crate) fn check() -> Result<()> {
    let rules = [
        (
            "ntp-proto",
            "normal",
            PROTO_FORBIDDEN,
            "it is the runtime-free protocol library; move that code to ntp-user",
        ),
        (
            "ntpxc",
            "normal,build",
            NTPXC_FORBIDDEN,
            "it must build on stable without bpf-linker; depend on ntp-proto instead",
        ),
    ];
    let mut broken = Vec::new();
    for (package, edges, forbidden, why) in rules {
        let out = Command::new("cargo")
            .current_dir(root())
            .args(["tree", "-p", package, "-e", edges, "--prefix", "none"])
            .output()
            .context("running cargo tree")?;
        if !out.status.success() {
            bail!(
                "cargo tree -p {package} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let found = forbidden_in(&String::from_utf8_lossy(&out.stdout), forbidden);
        if !found.is_empty() {
            broken.push(format!(
                "{package} depends on {} (cargo tree -p {package} -e {edges}): {why}",
                found.join(", ")
            ));
        }
    }
    if !broken.is_empty() {
        bail!("layering check failed:\n  {}", broken.join("\n  "));
    }
    println!("xtask test: layering check passed");
    Ok(())
}

/// The crates of `forbidden` that appear in `tree`, the output of
/// `cargo tree --prefix none` (one `name version [...]` per line), in `forbidden`'s order.
fn forbidden_in<'a>(tree: &str, forbidden: &[&'a str]) -> Vec<&'a str> {
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    forbidden
        .iter()
        .copied()
        .filter(|krate| names.contains(krate))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{NTPXC_FORBIDDEN, PROTO_FORBIDDEN, forbidden_in};

    const PROTO_TREE: &str = "\
ntp-proto v0.1.0 (/work/main/ntp-proto)
ntp-common v0.1.0 (/work/main/ntp-common)
bytemuck v1.25.2
bytemuck_derive v1.12.1 (proc-macro)
proc-macro2 v1.0.107
serde v1.0.229
proc-macro2 v1.0.107 (*)
";

    #[test]
    fn a_clean_tree_passes() {
        assert!(forbidden_in(PROTO_TREE, PROTO_FORBIDDEN).is_empty());
        assert!(forbidden_in("", PROTO_FORBIDDEN).is_empty());
    }

    #[test]
    fn forbidden_crates_are_named_once_each() {
        let tree = format!("{PROTO_TREE}tokio v1.45.0\nlibc v0.2.191\n\nlibc v0.2.191 (*)\n");
        assert_eq!(forbidden_in(&tree, PROTO_FORBIDDEN), ["tokio", "libc"]);
    }

    #[test]
    fn names_match_whole_crate_names_only() {
        // aya-ebpf and tokio-macros share a prefix with forbidden crates but are not them.
        let tree = "ntpxc v0.1.0 (/work/main/ntpxc)\naya-ebpf v0.2.1\ntokio-macros v2.5.0\n\
                    ntp-user-test v0.1.0\n";
        assert!(forbidden_in(tree, PROTO_FORBIDDEN).is_empty());
        assert!(forbidden_in(tree, NTPXC_FORBIDDEN).is_empty());
    }

    #[test]
    fn ntpxc_reaching_the_ebpf_build_is_reported() {
        let tree = "ntpxc v0.1.0 (/work/main/ntpxc)\nntp-user v0.1.0 (/work/main/ntp-user)\n\
                    aya-build v0.2.0\n";
        assert_eq!(
            forbidden_in(tree, NTPXC_FORBIDDEN),
            ["ntp-user", "aya-build"]
        );
    }
}
