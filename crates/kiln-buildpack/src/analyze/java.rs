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

    // The JDK is chosen by major (`openjdk-21-jdk-headless`), so the requirement is one:
    // `1.8` → 8, `17.0.2` → 17, `temurin-21` (mise) → 21. Where it was written stays.
    if let Some(version) = &mut facts.version {
        if let Some(major) = jdk_major(&version.version) {
            version.version = major;
        }
    }
    if tool == "gradle" && !wrapper {
        // Debian's gradle is 4.4, too old for current JDKs: a build root has no usable one.
        facts.notes.push(
            "Gradle without a wrapper: the build runs `gradle` from PATH (add gradlew to build \
             in a Debian build root)"
                .into(),
        );
    }

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
        // `exec`: the JVM, not the shell, is PID 1 and gets the container's signals.
        facts.start(
            format!("exec java -jar {jar}"),
            format!("{tool} build output"),
        );
    }
    Ok(facts)
}

/// The Java major of a version as people write it: `17`, `17.0.2`, `1.8` (the old scheme, 8),
/// `21-ea`, a distribution prefix (`temurin-21`, `corretto-17.0.9`); `None` without a number.
fn jdk_major(version: &str) -> Option<String> {
    let digits = |s: &str| -> Option<String> {
        let n: String = s.chars().take_while(char::is_ascii_digit).collect();
        (!n.is_empty()).then_some(n)
    };
    let start = version.find(|c: char| c.is_ascii_digit())?;
    let rest = &version[start..];
    let major = digits(rest)?;
    match rest[major.len()..].strip_prefix('.') {
        Some(minor) if major == "1" => digits(minor),
        _ => Some(major),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts_of(files: &[(&str, &str)]) -> Facts {
        crate::analyze::analyze_files(analyze, files).unwrap()
    }

    #[test]
    fn the_jdk_requirement_is_a_major() {
        for (written, major) in [
            ("17", "17"),
            ("17.0.2", "17"),
            ("1.8", "8"),
            ("1.8.0_392", "8"),
            ("21-ea", "21"),
            ("temurin-21", "21"),
            ("corretto-17.0.9", "17"),
        ] {
            assert_eq!(jdk_major(written).as_deref(), Some(major), "{written}");
        }
        assert_eq!(jdk_major("latest"), None);
        let facts = facts_of(&[("pom.xml", "<java.version>1.8</java.version>")]);
        let version = facts.version.unwrap();
        assert_eq!(
            (version.version.as_str(), version.from.as_str()),
            ("8", "pom.xml java.version")
        );
    }

    #[test]
    fn gradle_without_a_wrapper_is_noted() {
        let facts = facts_of(&[("build.gradle", "plugins { id 'java' }\n")]);
        assert_eq!(facts.get("build_tool").as_deref(), Some("gradle"));
        assert!(facts.notes[0].contains("wrapper"), "{facts:?}");
        let wrapped = facts_of(&[("build.gradle", ""), ("gradlew", "#!/bin/sh\n")]);
        assert!(wrapped.notes.is_empty(), "{wrapped:?}");
    }
}
