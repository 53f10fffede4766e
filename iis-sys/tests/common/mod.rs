//! The ABI reference the tests check the crate against, from the
//! repository's `iis-sys/reference` (see its README for where the
//! tables come from).

/// The text of reference table `name`.
pub fn reference(name: &str) -> &'static str {
    match name {
        "vtables.tsv" => include_str!("../../reference/vtables.tsv"),
        "http_h_layouts.tsv" => include_str!("../../reference/http_h_layouts.tsv"),
        "constants.tsv" => include_str!("../../reference/constants.tsv"),
        other => panic!("no reference table {other} in iis-sys/reference"),
    }
}
