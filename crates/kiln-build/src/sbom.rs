//! What the image holds, as a `kiln_sbom::Inventory`: the Debian packages of Kiln's stack, the
//! runtimes the image ships (with their source and sha256) and the application dependencies the
//! app's lockfiles pin. Only what ships counts: a runtime or lockfile a `[[build_only]]` rule keeps
//! to the build is left out.

use std::fs;
use std::path::Path;

use kiln_buildpack::plan::Plan;
use kiln_sbom::{lockfile, Component, Ecosystem, Inventory};

use crate::error::{Error, IoContext, Result};
use crate::runtimes::RuntimeReport;
use crate::stack::StackReport;

/// The inventory of an image named `subject`, created at `created` (RFC 3339: the image's).
pub fn inventory(
    subject: &str,
    created: &str,
    plan: &Plan,
    stack: Option<&StackReport>,
    runtimes: &[RuntimeReport],
    app_src: &Path,
) -> Result<Inventory> {
    let mut components: Vec<Component> = stack.map(debian_components).unwrap_or_default();
    // Runtimes from the distro are among the stack's packages already.
    for runtime in runtimes
        .iter()
        .filter(|r| r.provider != "debian" && plan.ships_runtime(&r.buildpack))
    {
        let mut provided = Component::new(Ecosystem::Runtime, &runtime.runtime, &runtime.version);
        provided.source_url = Some(runtime.source.clone());
        provided.sha256 = runtime.sha256.clone();
        components.push(provided);
        for bundled in &runtime.bundled {
            let mut package = Component::new(Ecosystem::Npm, &bundled.name, &bundled.version);
            package.source_url = Some(bundled.source.clone());
            package.sha256 = Some(bundled.sha256.clone());
            components.push(package);
        }
    }
    for name in lockfile::LOCKFILES.iter().filter(|name| plan.ships(name)) {
        let path = app_src.join(name);
        // A link could point out of the source tree: only regular files are read.
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => {}
            _ => continue,
        }
        let text = fs::read_to_string(&path).ctx(|| format!("reading {}", path.display()))?;
        let found = lockfile::read(name, &text).map_err(|e| Error::Source {
            path: path.clone(),
            why: format!("listing the app's dependencies for the SBOM: {e}"),
        })?;
        components.extend(found);
    }
    Ok(Inventory::new(subject, created, components))
}

/// The stack's Debian packages as SBOM components: a build's, and a rebase's for the new stack.
pub(crate) fn debian_components(stack: &StackReport) -> Vec<Component> {
    stack
        .packages
        .iter()
        .map(|package| {
            let mut deb = Component::new(Ecosystem::Debian, &package.name, &package.version);
            deb.arch = Some(package.architecture.clone());
            deb
        })
        .collect()
}
