//! Providing the language runtimes that buildpacks declare (`[runtime] name = "node"`), through
//! `kiln-runtime`: for each such buildpack, the plan's version requirement is satisfied by the
//! first provider that can — a verified download from the runtime's mirror, then (Node) the
//! npm registry's Node packages, then the build host's toolchain (`KILN_RUNTIME_PROVIDERS`
//! names and orders them: `download`, `npm-registry`, `host`). The runtime
//! becomes the launch layer `/layers/<buildpack>/runtime`, its `bin` joins `PATH` for the
//! buildpack's steps (and later ones) and in the image.
//!
//! Before those, the `debian` provider: when steps run in a Debian build root and the stack's
//! distro packages a version that satisfies the requirement (Python 3.13 on debian-13, 3.11 on
//! debian-12), the runtime comes from its Debian packages ([`from_distro`]) — in the build root
//! and in the run image — and nothing is downloaded.

use crate::events::Events;
use std::collections::BTreeMap;

use serde::Serialize;

use kiln_buildpack::plan::{Plan, LAYERS_DIR};
use kiln_runtime::{
    mirror_for, NpmRegistry, ProvidedRuntime, Provider, PypiIndex, Runtime, VersionReq,
};

use kiln_debian::stack::Distro;

use crate::build_root::BuildRootMode;
use crate::error::{Error, Result};
use crate::BuildOptions;

/// A runtime provided for one buildpack.
pub struct Provided {
    pub buildpack: String,
    pub runtime: ProvidedRuntime,
    /// `/layers/<buildpack>/runtime`.
    pub image_dir: String,
}

impl Provided {
    /// The runtime's `bin` inside the image.
    pub fn image_bin(&self) -> String {
        format!("{}/{}", self.image_dir, self.runtime.bin.display())
    }

    /// The runtime's own shared-library directory inside the image, when it has one: a host
    /// CPython built with `--enable-shared` finds `libpython` through an absolute RPATH that
    /// does not exist in the image.
    pub fn image_lib(&self) -> Option<String> {
        let has_shared_libpython = std::fs::read_dir(self.runtime.root.join("lib"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("libpython"));
        (self.runtime.runtime == Runtime::Python && has_shared_libpython)
            .then(|| format!("{}/lib", self.image_dir))
    }
}

/// What `--json` reports per provided runtime.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeReport {
    pub buildpack: String,
    pub runtime: String,
    pub requirement: String,
    /// Where the requirement came from.
    pub from: String,
    pub version: String,
    /// `download`, `npm-registry` or `host`.
    pub provider: String,
    /// The archive URL or the host executable.
    pub source: String,
    pub sha256: Option<String>,
    /// The `sha512-…` integrity the archive was verified against (npm-registry).
    pub integrity: Option<String>,
    /// Packages laid into the runtime besides its archive (npm-registry: npm).
    pub bundled: Vec<BundledReport>,
}

/// A verified package laid into a runtime.
#[derive(Debug, Clone, Serialize)]
pub struct BundledReport {
    pub name: String,
    pub version: String,
    /// The tarball URL.
    pub source: String,
    pub sha256: String,
    pub integrity: String,
}

/// A runtime the stack's distro packages: its version per distro, and its packages.
struct DistroRuntime {
    runtime: Runtime,
    versions: &'static [(Distro, &'static str)],
    build: &'static [&'static str],
    run: &'static [&'static str],
    /// Step environment it needs.
    env: &'static [(&'static str, &'static str)],
}

const DISTRO_RUNTIMES: &[DistroRuntime] = &[DistroRuntime {
    runtime: Runtime::Python,
    versions: &[(Distro::Debian13, "3.13"), (Distro::Debian12, "3.11")],
    build: &[
        "python3",
        "python3-dev",
        "python3-pip",
        "python3-venv",
        "python-is-python3",
    ],
    // `python-is-python3`: start commands say `python`.
    run: &["python3", "python-is-python3"],
    // pip refuses to install into a distro's Python (PEP 668) unless told; Kiln installs into
    // its own layers (`--target`), never into the distro's site-packages.
    env: &[("PIP_BREAK_SYSTEM_PACKAGES", "1")],
}];

/// The `debian` provider: runtimes the stack's distro satisfies, when steps run in a Debian
/// build root (`sandboxed` with `--build-root debian`) and `KILN_RUNTIME_PROVIDERS`, if set,
/// names `debian`; with no requirement of the app's (only the buildpack's default) the
/// distro's version serves. Such a buildpack's runtime is taken off the plan (nothing to provide) and
/// its packages join the build root and the run image.
pub fn from_distro(
    opts: &BuildOptions,
    plan: &mut Plan,
    distro: Distro,
    sandboxed: bool,
    ev: Events<'_>,
) -> Result<Vec<RuntimeReport>> {
    let allowed = opts
        .kiln_env
        .get("KILN_RUNTIME_PROVIDERS")
        .is_none_or(|order| order.split(',').any(|p| p.trim() == "debian"));
    if !sandboxed || opts.build_root != BuildRootMode::Debian || !allowed {
        return Ok(Vec::new());
    }
    let mut reports = Vec::new();
    for bp in &mut plan.buildpacks {
        let Some(wanted) = &bp.runtime else { continue };
        let Some(runtime) = Runtime::parse(&wanted.name) else {
            continue;
        };
        let Some(packaged) = DISTRO_RUNTIMES.iter().find(|d| d.runtime == runtime) else {
            continue;
        };
        // The distro's minor version (its exact one is in the build root's lock).
        let Some((minor, version)) = packaged
            .versions
            .iter()
            .find(|(d, _)| *d == distro)
            .and_then(|(_, v)| Some((*v, kiln_runtime::Version::parse(v)?)))
        else {
            continue;
        };
        let req = VersionReq::parse(&wanted.requirement).map_err(|e| Error::Source {
            path: opts.source.clone(),
            why: format!(
                "{} version requirement from {}: {e}",
                wanted.name, wanted.from
            ),
        })?;
        // A buildpack default is no requirement of the app's: the stack's version serves.
        if !req.matches(&version) && wanted.from != "buildpack default" {
            continue;
        }
        ev.note(format!(
            "runtime {} {minor} for {} ({} from {}): debian {} packages",
            wanted.name,
            bp.id,
            wanted.requirement,
            wanted.from,
            distro.name()
        ));
        reports.push(RuntimeReport {
            buildpack: bp.id.clone(),
            runtime: wanted.name.clone(),
            requirement: wanted.requirement.clone(),
            from: wanted.from.clone(),
            version: minor.to_owned(),
            provider: "debian".to_owned(),
            source: format!("{} packages {}", distro.name(), packaged.run.join(", ")),
            sha256: None,
            integrity: None,
            bundled: Vec::new(),
        });
        // A runtime only the steps use is in the build root, not the image.
        let build_only = wanted.build_only;
        bp.runtime = None;
        bp.packages
            .build
            .extend(packaged.build.iter().map(|p| (*p).to_owned()));
        let runtime_packages = if build_only {
            &mut bp.packages.build
        } else {
            &mut bp.packages.run
        };
        runtime_packages.extend(packaged.run.iter().map(|p| (*p).to_owned()));
        for step in &mut bp.steps {
            for (key, value) in packaged.env {
                step.env
                    .entry((*key).to_owned())
                    .or_insert_with(|| (*value).to_owned());
            }
        }
    }
    Ok(reports)
}

/// Resolves every runtime the plan asks for. Fails before any step runs when a runtime needs a
/// glibc run image and the build targets `scratch`.
pub fn provide(
    opts: &BuildOptions,
    plan: &Plan,
    mirrors: &BTreeMap<String, String>,
    ev: Events<'_>,
) -> Result<(Vec<Provided>, Vec<RuntimeReport>)> {
    let mut provided = Vec::new();
    let mut reports = Vec::new();
    for bp in &plan.buildpacks {
        let Some(wanted) = &bp.runtime else { continue };
        let runtime = Runtime::parse(&wanted.name).ok_or_else(|| Error::Source {
            path: opts.source.clone(),
            why: format!(
                "buildpack {} asks for runtime {:?}, which Kiln cannot provide (known: {})",
                bp.id,
                wanted.name,
                Runtime::ALL.map(Runtime::id).join(", ")
            ),
        })?;
        runtime.check_run_image(Some(&crate::stack::base_label(opts)))?;
        let req = VersionReq::parse(&wanted.requirement).map_err(|e| Error::Source {
            path: opts.source.clone(),
            why: format!(
                "{} version requirement from {}: {e}",
                wanted.name, wanted.from
            ),
        })?;
        let providers = providers(runtime, opts, mirrors)?;
        let found =
            kiln_runtime::resolve_logged(runtime, &req, &providers, &opts.cache_dir, &mut |why| {
                ev.warn(why)
            })?;
        let bundled: String = found
            .bundled
            .iter()
            .map(|b| format!(" + {} {}", b.name, b.version))
            .collect();
        ev.note(format!(
            "runtime {} {} for {} ({} from {}): {} {}{bundled}",
            wanted.name,
            found.version,
            bp.id,
            wanted.requirement,
            wanted.from,
            found.provider,
            found.source
        ));
        reports.push(RuntimeReport {
            buildpack: bp.id.clone(),
            runtime: wanted.name.clone(),
            requirement: wanted.requirement.clone(),
            from: wanted.from.clone(),
            version: found.version.to_string(),
            provider: found.provider.to_owned(),
            source: found.source.clone(),
            sha256: found.sha256.clone(),
            integrity: found.integrity.clone(),
            bundled: found
                .bundled
                .iter()
                .map(|b| BundledReport {
                    name: b.name.clone(),
                    version: b.version.to_string(),
                    source: b.source.clone(),
                    sha256: b.sha256.clone(),
                    integrity: b.integrity.clone(),
                })
                .collect(),
        });
        provided.push(Provided {
            buildpack: bp.id.clone(),
            image_dir: format!("{LAYERS_DIR}/{}/runtime", bp.id),
            runtime: found,
        });
    }
    Ok((provided, reports))
}

/// npm's and pip's configuration are the build machine's (`~/.npmrc`, `npm_config_*`,
/// `pip.conf`, `PIP_INDEX_URL`), not the steps' environment; `KILN_*` overrides from the
/// options win.
fn machine_env(opts: &BuildOptions) -> BTreeMap<String, String> {
    let mut env = opts.host_env.clone();
    env.extend(opts.kiln_env.clone());
    env
}

/// The package registries the user configured, as the variables the package managers in build
/// steps read: steps in a build root see none of the machine's configuration files, and a
/// registry is never assumed (with none configured, each tool uses its own default). The npm
/// registry ([`NpmRegistry::discover`]) for npm, npx, pnpm and Yarn 1 (`npm_config_registry`),
/// Yarn 2+ (`YARN_NPM_REGISTRY_SERVER`), Bun (`BUN_CONFIG_REGISTRY`) and Deno's `npm:`
/// specifiers (`NPM_CONFIG_REGISTRY`); the package index ([`PypiIndex::discover`]) for pip
/// (`PIP_INDEX_URL`) and uv (`UV_DEFAULT_INDEX`). Tokens are not passed on.
pub fn registry_env(
    opts: &BuildOptions,
    mirrors: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let env = machine_env(opts);
    let mut out = BTreeMap::new();
    if let Some(npm) = NpmRegistry::discover(mirrors, &env) {
        for key in [
            "npm_config_registry",
            "NPM_CONFIG_REGISTRY",
            "YARN_NPM_REGISTRY_SERVER",
            "BUN_CONFIG_REGISTRY",
        ] {
            out.insert(key.to_owned(), format!("{}/", npm.url));
        }
    }
    if let Some(index) = PypiIndex::discover(mirrors, &env) {
        out.insert("PIP_INDEX_URL".to_owned(), index.url.clone());
        out.insert("UV_DEFAULT_INDEX".to_owned(), index.url);
    }
    out
}

/// Download (official archives from the runtime's mirror), then the npm registry's Node
/// packages, then host, unless `KILN_RUNTIME_PROVIDERS` names others (`download`,
/// `npm-registry`, `host`, in the order given).
fn providers(
    runtime: Runtime,
    opts: &BuildOptions,
    mirrors: &BTreeMap<String, String>,
) -> Result<Vec<Provider>> {
    // The npm registry carries Node, Bun and Deno; Bun and Deno have no download layout.
    let default = match runtime {
        Runtime::Node => "download,npm-registry,host",
        Runtime::Python => "download,host",
        Runtime::Bun | Runtime::Deno => "npm-registry,host",
        // Only official distributions: see `kiln_runtime`'s host provider.
        Runtime::Dotnet | Runtime::Gleam => "download",
    };
    let order = opts
        .kiln_env
        .get("KILN_RUNTIME_PROVIDERS")
        .map_or(default, String::as_str);
    order
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p {
            "download" => Ok(Some(Provider::download(mirror_for(
                runtime,
                mirrors,
                &opts.kiln_env,
            )))),
            // npm's configuration is the build machine's (`~/.npmrc`, `npm_config_*`), not the
            // steps' environment; `KILN_*` overrides from the options win.
            "npm-registry" => Ok(Some(Provider::npm(NpmRegistry::discover(
                mirrors,
                &machine_env(opts),
            )))),
            // Decided before the others ([`from_distro`]).
            "debian" => Ok(None),
            "host" => Ok(Some(Provider::host(
                opts.env.get("PATH").cloned().unwrap_or_default(),
            ))),
            other => Err(Error::Source {
                path: opts.source.clone(),
                why: format!(
                    "KILN_RUNTIME_PROVIDERS names {other:?}: expected some of `debian`, \
                     `download`, `npm-registry` and `host`"
                ),
            }),
        })
        .filter_map(Result::transpose)
        .collect()
}
