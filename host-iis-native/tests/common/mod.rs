//! Finds `shared/reference/iis-native`, the ABI reference the tests check
//! the crate against.

use std::path::PathBuf;

/// The folders searched, in order: `KALLITHEA_IIS_REFERENCE`, then
/// `shared/reference/iis-native` beside the repository, then `/work/shared`.
fn candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("KALLITHEA_IIS_REFERENCE") {
        dirs.push(PathBuf::from(d));
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    dirs.push(repo.join("../shared/reference/iis-native"));
    dirs.push(PathBuf::from("/work/shared/reference/iis-native"));
    dirs
}

/// The text of reference file `name`; panics, saying where it looked, if
/// it is nowhere.
pub fn reference(name: &str) -> String {
    let dirs = candidates();
    for d in &dirs {
        if let Ok(text) = std::fs::read_to_string(d.join(name)) {
            return text;
        }
    }
    panic!(
        "the IIS native-module reference {name} was not found in any of {dirs:?}: set \
         KALLITHEA_IIS_REFERENCE to the folder holding it"
    );
}
