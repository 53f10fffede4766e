//! Every vtable slot the native-module binding fills or calls, and the
//! simulator serves, sits where the ABI reference (`reference/vtables.tsv`,
//! compiled into the test) puts it, with the method and signature assumed.

use std::collections::HashMap;

use iis_sys::native::{IIS_INTERFACE_SLOTS, MODULE_SLOTS, SLOTS};

mod common;

struct Row {
    method: String,
    signature: String,
}

/// (interface, slot) → row.
fn reference() -> HashMap<(String, usize), Row> {
    let text = common::reference("vtables.tsv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header line").split('\t').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("vtables.tsv has no {name} column: {header:?}"))
    };
    let (i, s, m, g) = (
        col("interface"),
        col("slot"),
        col("method"),
        col("signature"),
    );
    let mut rows = HashMap::new();
    for (n, line) in lines.enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        let slot = f[s]
            .parse()
            .unwrap_or_else(|_| panic!("vtables.tsv line {}: bad slot {:?}", n + 2, f[s]));
        rows.insert(
            (f[i].to_owned(), slot),
            Row {
                method: f[m].to_owned(),
                signature: f[g].to_owned(),
            },
        );
    }
    rows
}

#[test]
fn every_slot_the_crate_uses_matches_the_reference() {
    let rows = reference();
    let mut wrong = Vec::new();
    for slot in SLOTS {
        match rows.get(&(slot.interface.to_owned(), slot.index)) {
            None => wrong.push(format!(
                "{}[{}] {}: no such slot in the reference",
                slot.interface, slot.index, slot.method
            )),
            Some(r) if r.method != slot.method || r.signature != slot.signature => {
                wrong.push(format!(
                    "{}[{}]: the crate has {} {:?}, the reference {} {:?}",
                    slot.interface, slot.index, slot.method, slot.signature, r.method, r.signature
                ))
            }
            Some(_) => {}
        }
    }
    assert!(wrong.is_empty(), "slots that differ:\n{}", wrong.join("\n"));
    assert!(SLOTS.len() >= 40, "the table lists {} slots", SLOTS.len());
}

#[test]
fn no_slot_is_listed_twice() {
    let mut seen = std::collections::HashSet::new();
    for slot in SLOTS {
        assert!(
            seen.insert((slot.interface, slot.index)),
            "{}[{}] listed twice",
            slot.interface,
            slot.index
        );
    }
}

#[test]
fn interface_sizes_match_the_reference() {
    let rows = reference();
    let count = |iface: &str| rows.keys().filter(|(i, _)| i == iface).count();
    assert_eq!(count("CHttpModule"), MODULE_SLOTS);
    assert_eq!(count("IHttpModuleFactory"), 2);
    for (iface, n) in IIS_INTERFACE_SLOTS {
        assert_eq!(count(iface), *n, "{iface}");
    }
}
