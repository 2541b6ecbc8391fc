//! Relationship fields (`Depends`, `Pre-Depends`, `Provides`) as data:
//! `a (>= 1.2), b | c, d:any`. Architecture restrictions (`[amd64]`) and build profiles
//! (`<!nocheck>`) only appear in source-package fields; they are skipped if met.

use std::fmt;

use crate::version::Version;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<<`
    Lt,
    /// `<=`
    Le,
    /// `=`
    Eq,
    /// `>=`
    Ge,
    /// `>>`
    Gt,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "<<" => Op::Lt,
            // `<` and `>` are deprecated spellings of `<=` and `>=` (Policy §7.1).
            "<=" | "<" => Op::Le,
            "=" => Op::Eq,
            ">=" | ">" => Op::Ge,
            ">>" => Op::Gt,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">>",
        }
    }
}

/// `(op version)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub op: Op,
    pub version: Version,
}

impl Constraint {
    pub fn allows(&self, v: &Version) -> bool {
        use std::cmp::Ordering::*;
        let order = v.cmp(&self.version);
        match self.op {
            Op::Lt => order == Less,
            Op::Le => order != Greater,
            Op::Eq => order == Equal,
            Op::Ge => order != Less,
            Op::Gt => order == Greater,
        }
    }
}

/// One alternative: a package name, an optional `:arch` qualifier, an optional constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    pub name: String,
    /// `any`, `native` or an architecture name, as written after `:`.
    pub arch: Option<String>,
    pub constraint: Option<Constraint>,
}

/// `a | b | c`: satisfied by any one alternative; the first satisfiable one is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub alternatives: Vec<Dep>,
}

impl fmt::Display for Dep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(arch) = &self.arch {
            write!(f, ":{arch}")?;
        }
        if let Some(c) = &self.constraint {
            write!(f, " ({} {})", c.op.as_str(), c.version)?;
        }
        Ok(())
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, dep) in self.alternatives.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{dep}")?;
        }
        Ok(())
    }
}

/// Parses a whole field (`a (>= 1), b | c`); an error says which part is malformed.
pub fn parse_relations(field: &str) -> Result<Vec<Relation>, String> {
    field
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let alternatives = part
                .split('|')
                .map(parse_dep)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Relation { alternatives })
        })
        .collect()
}

/// One `name[:arch] [(op version)] [\[archs\]] [<profiles>]`, read left to right.
pub fn parse_dep(text: &str) -> Result<Dep, String> {
    let text = text.trim();
    let head_end = text
        .find(['(', '[', '<', ' ', '\t', '\n'])
        .unwrap_or(text.len());
    let (head, mut rest) = (&text[..head_end], text[head_end..].trim_start());
    let mut constraint = None;
    if let Some(after) = rest.strip_prefix('(') {
        let (inner, tail) = after
            .split_once(')')
            .ok_or_else(|| format!("{text:?}: unclosed '('"))?;
        let inner = inner.trim();
        let split = inner
            .find(|c: char| !"<>=".contains(c))
            .ok_or_else(|| format!("{text:?}: constraint without a version"))?;
        let op = Op::parse(inner[..split].trim())
            .ok_or_else(|| format!("{text:?}: unknown operator {:?}", &inner[..split]))?;
        let version = Version::parse(inner[split..].trim())?;
        constraint = Some(Constraint { op, version });
        rest = tail.trim_start();
    }
    // What may follow is only restrictions, which binary-package fields do not use.
    if !(rest.is_empty() || rest.starts_with(['[', '<'])) {
        return Err(format!("{text:?}: unexpected {rest:?}"));
    }
    let (name, arch) = match head.split_once(':') {
        Some((n, a)) => (n, Some(a.to_owned())),
        None => (head, None),
    };
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c);
    if name.is_empty() || !name.chars().all(valid) {
        return Err(format!("{text:?}: invalid package name {name:?}"));
    }
    Ok(Dep {
        name: name.to_owned(),
        arch,
        constraint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_alternatives_constraints_and_qualifiers() {
        let relations = parse_relations(
            "libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0, perl:any,\n python3 (<< 3.14)",
        )
        .unwrap();
        assert_eq!(relations.len(), 4);
        assert_eq!(relations[0].to_string(), "libc6 (>= 2.34)");
        assert_eq!(relations[1].alternatives.len(), 2);
        assert_eq!(relations[1].to_string(), "debconf (>= 0.5) | debconf-2.0");
        assert_eq!(relations[2].alternatives[0].arch.as_deref(), Some("any"));
        let c = relations[3].alternatives[0].constraint.as_ref().unwrap();
        assert_eq!(c.op, Op::Lt);
        assert!(c.allows(&Version::parse("3.13.5-2").unwrap()));
        assert!(!c.allows(&Version::parse("3.14").unwrap()));
    }

    #[test]
    fn skips_restrictions_and_rejects_garbage() {
        let dep = parse_dep("foo (>= 1.0) [amd64 arm64] <!nocheck>").unwrap();
        assert_eq!(dep.to_string(), "foo (>= 1.0)");
        assert_eq!(parse_dep("bar [!i386]").unwrap().to_string(), "bar");
        assert!(parse_dep("Foo").is_err());
        assert!(parse_dep("foo (>= 1.0").is_err());
        assert!(parse_dep("foo (~= 1.0)").is_err());
    }

    #[test]
    fn constraints_follow_each_operator() {
        let v = |s| Version::parse(s).unwrap();
        let c = |op, s| Constraint { op, version: v(s) };
        assert!(c(Op::Le, "2").allows(&v("2")) && !c(Op::Le, "2").allows(&v("2.1")));
        assert!(c(Op::Eq, "2").allows(&v("2-0")) && !c(Op::Eq, "2").allows(&v("2-1")));
        assert!(c(Op::Ge, "2").allows(&v("2")) && !c(Op::Ge, "2").allows(&v("2~rc1")));
        assert!(c(Op::Gt, "2").allows(&v("2.0.1")) && !c(Op::Gt, "2").allows(&v("2")));
    }
}
