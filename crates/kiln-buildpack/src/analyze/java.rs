//! Java: Maven or Gradle (wrapper preferred), Spring Boot, and the JDK version (`.java-version`,
//! `system.properties`, `.tool-versions`, Maven properties, Gradle toolchains).

use super::{between, first_version, version_text, Facts, PackageManager, Tree, PORT};
use crate::error::Result;

pub(super) fn analyze(tree: &Tree) -> Result<Facts> {
    let mut facts = Facts::default();
    let pom = tree.text("pom.xml")?;
    let gradle = tree.first_text(&["build.gradle.kts", "build.gradle"])?;
    // A multi-project Gradle build may have no root build file: its wrapper or settings file
    // still says Gradle.
    let gradle_marker = ["gradlew", "settings.gradle.kts", "settings.gradle"]
        .into_iter()
        .find(|f| tree.is_file(f));
    let (tool, wrapper, from) = if pom.is_some() {
        ("maven", tree.is_file("mvnw"), "pom.xml")
    } else if let Some((file, _)) = &gradle {
        ("gradle", tree.is_file("gradlew"), *file)
    } else if let Some(file) = gradle_marker {
        ("gradle", tree.is_file("gradlew"), file)
    } else if tree.is_file("mvnw") {
        ("maven", true, "mvnw")
    } else {
        ("maven", false, "default")
    };
    facts.package_manager = Some(PackageManager {
        name: tool.into(),
        version: None,
        from: from.into(),
    });
    facts.set(
        "build_tool",
        if wrapper {
            format!("{tool}-wrapper")
        } else {
            tool.to_owned()
        },
    );

    let build_text = pom
        .clone()
        .or(gradle.as_ref().map(|(_, t)| t.clone()))
        .unwrap_or_default();
    let system_properties = tree.text("system.properties")?.and_then(|t| {
        t.lines().find_map(|l| {
            l.trim()
                .strip_prefix("java.runtime.version=")
                .map(|v| v.trim().to_owned())
        })
    });
    facts.version = first_version(vec![
        (
            tree.text(".java-version")?
                .as_deref()
                .and_then(version_text),
            ".java-version".into(),
        ),
        (
            system_properties,
            "system.properties java.runtime.version".into(),
        ),
        tree.tool_manager_version(&["java"])?,
        (
            between(&build_text, "<java.version>", "</java.version>"),
            "pom.xml java.version".into(),
        ),
        (
            between(
                &build_text,
                "<maven.compiler.release>",
                "</maven.compiler.release>",
            ),
            "pom.xml maven.compiler.release".into(),
        ),
        (
            between(&build_text, "JavaLanguageVersion.of(", ")"),
            format!("{from} toolchain languageVersion"),
        ),
    ]);

    if build_text.contains("spring-boot") || build_text.contains("org.springframework.boot") {
        facts.framework = Some("spring-boot".into());
    }
    let jar = if tool == "maven" {
        "target/*.jar"
    } else {
        "build/libs/*.jar"
    };
    if facts.framework.is_some() {
        // Spring Boot reads SERVER_PORT, not PORT: it is told.
        facts.start(
            format!("exec java -Dserver.port={PORT} -jar {jar}"),
            format!("{tool} build output"),
        );
    } else {
        facts.start(format!("java -jar {jar}"), format!("{tool} build output"));
    }
    Ok(facts)
}
