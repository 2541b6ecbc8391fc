//! Fixtures shared by the unit tests: a small real image, and hand-built tars.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::image::{assemble, Image};
use crate::layer::{normalize, tree_entries, write_layer, LayerOptions};
use crate::spec::{ImageConfig, RuntimeConfig};
use crate::store::BlobStore;

/// An image with one layer under `/app` (an executable, a config file and a symlink), built from
/// a tree created at `host`.
pub(crate) fn small_image(store: &BlobStore, host: &Path) -> Image {
    fs::create_dir_all(host.join("bin")).unwrap();
    fs::write(host.join("bin/hello"), b"#!/bin/sh\necho hello\n").unwrap();
    fs::set_permissions(host.join("bin/hello"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(host.join("greeting.txt"), b"hi\n").unwrap();
    std::os::unix::fs::symlink("bin/hello", host.join("run")).unwrap();
    let entries = normalize(tree_entries(host, "/app").unwrap()).unwrap();
    let layer = write_layer(store, &entries, &LayerOptions::default()).unwrap();
    let config = ImageConfig {
        config: RuntimeConfig {
            entrypoint: Some(vec!["/app/run".to_owned()]),
            ..Default::default()
        },
        ..ImageConfig::for_host()
    };
    assemble(store, config, &[layer], BTreeMap::new()).unwrap()
}

/// One entry of a hand-built tar: the name is written verbatim (the tar crate's setters refuse
/// `..` and absolute paths, which is exactly what the tests need to feed in).
pub(crate) struct RawEntry<'a> {
    pub name: &'a str,
    pub kind: tar::EntryType,
    pub content: &'a [u8],
    pub link: Option<&'a str>,
}

pub(crate) fn file<'a>(name: &'a str, content: &'a [u8]) -> RawEntry<'a> {
    RawEntry {
        name,
        kind: tar::EntryType::Regular,
        content,
        link: None,
    }
}

pub(crate) fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        let ustar = h.as_ustar_mut().unwrap();
        ustar.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
        if let Some(link) = e.link {
            ustar.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(e.kind);
        h.set_mode(0o644);
        h.set_size(e.content.len() as u64);
        h.set_cksum();
        builder.append(&h, e.content).unwrap();
    }
    builder.into_inner().unwrap()
}
