//! Container images (agent `containerizer/`): the OCI `index.json`, image manifest and config
//! parsers, the `docker save` `manifest.json` parser, and the tar-entry validator that decides
//! what a layer may write. Never a panic; every accepted docker layer path and every path the
//! validator lets through is relative and free of `..` (so unpacking stays inside the layer).
#![no_main]

use std::path::{Component, Path};

use brim_agent::containerizer::layer::{Action, EntryHeader, EntryKind, LayerCheck, LayerLimits};
use brim_agent::containerizer::manifest;
use libfuzzer_sys::fuzz_target;

fn inside(p: &Path) {
    assert!(
        p.components().all(|c| matches!(c, Component::Normal(_))),
        "validator let {p:?} through"
    );
}

fuzz_target!(|data: &[u8]| {
    let _ = manifest::parse_index(data, "amd64");
    if let Ok(m) = manifest::parse_manifest(data) {
        assert!(!m.layers.is_empty() && m.layers.len() <= manifest::MAX_LAYERS);
        for l in &m.layers {
            assert_eq!(l.digest.hex().len(), 64);
            inside(&l.digest.blob_path());
        }
    }
    let _ = manifest::parse_config(data);
    if let Ok(m) = manifest::parse_docker_manifest(data) {
        inside(&m.config);
        m.layers.iter().for_each(|l| inside(l));
    }
    let mut check = LayerCheck::new(LayerLimits {
        max_entry_bytes: 1 << 20,
        max_layer_bytes: 4 << 20,
        max_entries: 256,
    });
    let mut archive = tar::Archive::new(data);
    let Ok(entries) = archive.entries() else {
        return;
    };
    for entry in entries.take(256) {
        let Ok(entry) = entry else { break };
        let path = entry.path_bytes().into_owned();
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let h = entry.header();
        let header = EntryHeader {
            path: &path,
            kind: EntryKind::from_tar(h.entry_type().as_byte()),
            size: h.entry_size().unwrap_or(u64::MAX),
            link: link.as_deref(),
            mode: h.mode().unwrap_or(0),
        };
        match check.check(&header) {
            Ok(Action::Dir { path, .. })
            | Ok(Action::File { path, .. })
            | Ok(Action::Fifo { path, .. })
            | Ok(Action::Whiteout { path }) => inside(&path),
            Ok(Action::Symlink { path, target }) => {
                inside(&path);
                assert!(brim_agent::containerizer::layer::symlink_stays_inside(&path, &target));
            }
            Ok(Action::Hardlink { path, target }) => {
                inside(&path);
                inside(&target);
            }
            Ok(Action::Opaque { path }) => {
                if !path.as_os_str().is_empty() {
                    inside(&path);
                }
            }
            Ok(Action::Skip) | Err(_) => {}
        }
    }
});
