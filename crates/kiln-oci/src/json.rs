//! Canonical JSON: compact, object keys sorted at every depth. Configs, manifests and indexes are
//! serialized only through here, so the same value always gives the same bytes (and digest).

use serde::Serialize;

/// Serializes `value` canonically. Going through `serde_json::Value` sorts keys: without the
/// `preserve_order` feature its `Map` is a `BTreeMap` (struct field order and `HashMap` iteration
/// order never reach the output).
pub fn to_canonical_vec<T: Serialize>(value: &T) -> Vec<u8> {
    let value = serde_json::to_value(value).expect("OCI types always serialize to JSON");
    serde_json::to_vec(&value).expect("a serde_json::Value always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Serialize)]
    struct Unsorted {
        zeta: u8,
        alpha: HashMap<String, u8>,
        mid: Vec<Inner>,
    }

    #[derive(Serialize)]
    struct Inner {
        z: bool,
        a: bool,
    }

    #[test]
    fn keys_are_sorted_at_every_depth_and_output_is_compact() {
        let mut alpha = HashMap::new();
        for (i, k) in ["q", "b", "x", "a", "m", "c"].iter().enumerate() {
            alpha.insert((*k).to_owned(), i as u8);
        }
        let v = Unsorted {
            zeta: 1,
            alpha,
            mid: vec![Inner { z: true, a: false }],
        };
        let out = String::from_utf8(to_canonical_vec(&v)).unwrap();
        assert_eq!(
            out,
            r#"{"alpha":{"a":3,"b":1,"c":5,"m":4,"q":0,"x":2},"mid":[{"a":false,"z":true}],"zeta":1}"#
        );
    }

    #[test]
    fn same_value_same_bytes_across_runs() {
        // HashMap iteration order is randomized per map; canonical output must not be.
        let outs: Vec<Vec<u8>> = (0..8)
            .map(|_| {
                let m: HashMap<String, String> = (0..32)
                    .map(|i| (format!("org.example.k{i}"), i.to_string()))
                    .collect();
                to_canonical_vec(&m)
            })
            .collect();
        assert!(outs.windows(2).all(|w| w[0] == w[1]));
    }
}
