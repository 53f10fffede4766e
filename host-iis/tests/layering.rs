//! The layering the design asks for, read from the workspace's manifests
//! (`cargo metadata`): `kallithea-core ← host-iis ← {host-isapi,
//! host-iis-native}`, the two bindings beside each other, neither built on
//! the other, both on `iis-sys`'s declarations, and the core knowing no
//! host.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Each workspace package's dependencies on other workspace packages
/// (normal and build dependencies; dev-dependencies do not ship).
fn workspace_graph() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let names: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .filter_map(|d| d["name"].as_str())
                .filter(|d| names.contains(*d))
                .map(str::to_owned)
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

/// Every workspace package `package` is built on, directly or not.
fn closure(graph: &BTreeMap<String, BTreeSet<String>>, package: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![package.to_owned()];
    while let Some(p) = todo.pop() {
        for d in graph.get(&p).into_iter().flatten() {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

#[test]
fn the_two_iis_bindings_stand_beside_each_other_on_the_engine() {
    let graph = workspace_graph();
    let isapi = closure(&graph, "host-isapi");
    let native = closure(&graph, "host-iis-native");
    assert!(
        !isapi.contains("host-iis-native"),
        "host-isapi is built on the native module: {isapi:?}"
    );
    assert!(
        !native.contains("host-isapi"),
        "host-iis-native is built on host-isapi: {native:?}"
    );
    assert!(isapi.contains("host-iis") && native.contains("host-iis"));
    let engine = closure(&graph, "host-iis");
    assert!(engine.contains("kallithea-core"), "{engine:?}");
    for binding in ["host-isapi", "host-iis-native", "host-hyper"] {
        assert!(
            !engine.contains(binding),
            "the engine is built on {binding}"
        );
    }
    let sys = closure(&graph, "iis-sys");
    assert!(sys.is_empty(), "iis-sys is declarations only: {sys:?}");
    assert!(isapi.contains("iis-sys") && native.contains("iis-sys"));
    let core = closure(&graph, "kallithea-core");
    for host in ["host-iis", "host-isapi", "host-iis-native", "host-hyper"] {
        assert!(!core.contains(host), "kallithea-core is built on {host}");
    }
}
