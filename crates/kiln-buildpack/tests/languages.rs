//! The Debian packages, steps and processes the `java`, `elixir` and `ruby` buildpacks plan:
//! what their build roots and run images are made of.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::tree;
use kiln_buildpack::detect::detect_with;
use kiln_buildpack::plan::{plan_with, PlannedBuildpack};
use kiln_buildpack::project::ProjectConfig;
use kiln_buildpack::BuildpackSet;

/// The plan of the one buildpack `id` for `src`, with `env` as the `KILN_*` environment.
fn planned(src: &Path, id: &str, env: &[(&str, &str)]) -> PlannedBuildpack {
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let set = BuildpackSet::builtin().unwrap();
    let detection = detect_with(&set, src, &env).unwrap();
    let project = ProjectConfig::load(src).unwrap();
    let plan = plan_with(&set, &detection, &project, src, &env).unwrap();
    plan.buildpacks
        .into_iter()
        .find(|b| b.id == id)
        .unwrap_or_else(|| panic!("{id} not planned"))
}

fn packages(bp: &PlannedBuildpack) -> (Vec<&str>, Vec<&str>) {
    fn names(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    (names(&bp.packages.build), names(&bp.packages.run))
}

const POM_17: &str = "<project><properties><java.version>17</java.version></properties></project>";

#[test]
fn maven_builds_with_the_requested_jdk_or_the_distros_and_debians_maven() {
    let src = tree(&[("pom.xml", POM_17)]);
    let java = planned(src.path(), "java", &[]);
    assert_eq!(
        packages(&java),
        (
            vec!["openjdk-17-jdk-headless | default-jdk-headless", "maven"],
            vec!["openjdk-17-jre-headless | default-jre-headless"],
        )
    );
    // The user's pin chooses the JDK (and so the JRE) too.
    let pinned = planned(src.path(), "java", &[("KILN_JAVA_VERSION", "25")]);
    assert_eq!(
        packages(&pinned).1,
        ["openjdk-25-jre-headless | default-jre-headless"]
    );
}

#[test]
fn a_wrapper_brings_its_own_build_tool_and_no_version_means_the_default_jdk() {
    let src = tree(&[
        ("build.gradle.kts", "plugins { java }\n"),
        ("gradlew", "#!/bin/sh\n"),
    ]);
    let java = planned(src.path(), "java", &[]);
    assert_eq!(
        packages(&java),
        (vec!["default-jdk-headless"], vec!["default-jre-headless"])
    );
    assert_eq!(java.steps[0].command, "./gradlew");
    let mvnw = tree(&[("pom.xml", POM_17), ("mvnw", "#!/bin/sh\n")]);
    let wrapped = planned(mvnw.path(), "java", &[]);
    assert_eq!(
        packages(&wrapped).0,
        ["openjdk-17-jdk-headless | default-jdk-headless"]
    );
}

const MIX_EXS: &str = "defmodule Shop.MixProject do\n  use Mix.Project\n\n  def project do\n    \
                       [app: :shop, version: \"0.1.0\", deps: []]\n  end\nend\n";

#[test]
fn elixir_builds_with_debians_otp_and_ships_only_what_the_bundled_erts_needs() {
    let src = tree(&[("mix.exs", MIX_EXS)]);
    let elixir = planned(src.path(), "elixir", &[]);
    let (build, run) = packages(&elixir);
    assert_eq!(build, ["elixir", "erlang-nox", "erlang-dev"]);
    assert!(
        run.contains(&"libtinfo6") && run.contains(&"coreutils"),
        "{run:?}"
    );
    assert!(!run.iter().any(|p| p.starts_with("erlang")), "{run:?}");
    let release = elixir.steps.iter().find(|s| s.name == "release").unwrap();
    // No `releases:`: the app's default release, which `mix release NAME` would not know.
    assert_eq!(release.args, ["release", "--path", "${layer:release}"]);

    let named = MIX_EXS.replace("deps: []", "deps: [], releases: [shop_web: []]");
    let src = tree(&[("mix.exs", &named)]);
    let elixir = planned(src.path(), "elixir", &[]);
    let release = elixir.steps.iter().find(|s| s.name == "release").unwrap();
    assert_eq!(
        release.args,
        ["release", "shop_web", "--path", "${layer:release}"]
    );
}

#[test]
fn ruby_installs_from_vendor_cache_without_a_gem_server() {
    let gemfile = "source \"https://rubygems.org\"\ngem \"rack\"\n";
    let lock = "GEM\n  specs:\n    rack (3.1.20)\n\nBUNDLED WITH\n   2.6.7\n";
    let src = tree(&[
        ("Gemfile", gemfile),
        ("Gemfile.lock", lock),
        ("vendor/cache/rack-3.1.20.gem", "gem"),
    ]);
    let ruby = planned(src.path(), "ruby", &[]);
    let install = &ruby.steps[0];
    assert_eq!(
        install.args,
        ["install", "--local", "--no-cache", "--jobs", "4"]
    );
    assert_eq!(install.env["BUNDLE_DEPLOYMENT"], "1");
    assert!(install.inputs.contains(&"vendor/cache/**".to_owned()));
    // Without a lockfile Bundler resolves, from the cache still.
    let src = tree(&[
        ("Gemfile", gemfile),
        ("vendor/cache/rack-3.1.20.gem", "gem"),
    ]);
    let install = &planned(src.path(), "ruby", &[]).steps[0];
    assert_eq!(install.args[..2], ["install", "--local"]);
    assert_eq!(install.env["BUNDLE_DEPLOYMENT"], "0");
    // No cache: Bundler's usual install from the Gemfile's source.
    let src = tree(&[("Gemfile", gemfile), ("Gemfile.lock", lock)]);
    let install = &planned(src.path(), "ruby", &[]).steps[0];
    assert_eq!(install.args, ["install", "--jobs", "4"]);
}
