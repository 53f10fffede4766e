//! The one GSSAPI call the `libgssapi` crate does not wrap: acquiring acceptor
//! credentials from an explicit credential store, so that the keytab and the
//! replay cache come from host-hyper's configuration rather than from
//! process-wide environment variables (`KRB5_KTNAME`, `KRB5RCACHEDIR`).
#![allow(unsafe_code)]

use std::ffi::{c_void, CStr};
use std::ptr;

use libgssapi::credential::Cred;
use libgssapi::error::{Error, MajorFlags};
use libgssapi_sys as sys;

/// 1.2.840.113554.1.2.2, Kerberos 5 (RFC 1964).
const MECH_KRB5: &[u8] = b"\x2a\x86\x48\x86\xf7\x12\x01\x02\x02";
/// 1.3.6.1.5.5.2, SPNEGO (RFC 4178).
const MECH_SPNEGO: &[u8] = b"\x2b\x06\x01\x05\x05\x02";

/// 1.2.840.113554.1.2.1.4, a host-based service name (`HTTP@www.example.com`).
const NT_HOSTBASED_SERVICE: &[u8] = b"\x2a\x86\x48\x86\xf7\x12\x01\x02\x01\x04";
/// 1.2.840.113554.1.2.2.1, a Kerberos principal name
/// (`HTTP/www.example.com@EXAMPLE.COM`).
const NT_KRB5_PRINCIPAL: &[u8] = b"\x2a\x86\x48\x86\xf7\x12\x01\x02\x02\x01";

/// GSS_ERROR(): a calling or routine error, as opposed to supplementary bits.
fn failed(major: u32) -> bool {
    major & 0xffff_0000 != 0
}

fn check(major: u32, minor: u32) -> Result<(), Error> {
    if failed(major) {
        Err(Error {
            major: MajorFlags::from_bits_retain(major),
            minor,
        })
    } else {
        Ok(())
    }
}

/// An OID set the library allocated; released on drop.
struct OidSet(sys::gss_OID_set);

impl Drop for OidSet {
    fn drop(&mut self) {
        if !self.0.is_null() {
            let mut minor = 0;
            // SAFETY: the set was allocated by gss_create_empty_oid_set (and
            // possibly grown by gss_add_oid_set_member, which updates
            // `self.0`); it is released once, here.
            unsafe { sys::gss_release_oid_set(&mut minor, &mut self.0) };
        }
    }
}

/// An imported name; released on drop.
struct GssName(sys::gss_name_t);

impl Drop for GssName {
    fn drop(&mut self) {
        if !self.0.is_null() {
            let mut minor = 0;
            // SAFETY: the name came from gss_import_name and is released once.
            unsafe { sys::gss_release_name(&mut minor, &mut self.0) };
        }
    }
}

/// Imports `principal`: a Kerberos principal when it has a `/`
/// (`HTTP/host@REALM`), else a host-based service (`HTTP@host`).
fn import_name(principal: &str) -> Result<GssName, Error> {
    let kind = if principal.contains('/') {
        NT_KRB5_PRINCIPAL
    } else {
        NT_HOSTBASED_SERVICE
    };
    let mut oid = sys::gss_OID_desc {
        length: kind.len() as u32,
        elements: kind.as_ptr() as *mut c_void,
    };
    let mut buffer = sys::gss_buffer_desc {
        length: principal.len(),
        value: principal.as_ptr() as *mut c_void,
    };
    let mut name = GssName(ptr::null_mut());
    let mut minor = 0;
    // SAFETY: the buffer and OID point at data that outlives the call (the
    // library copies what it keeps); on success `name.0` holds a new name
    // that `GssName` releases.
    let major = unsafe { sys::gss_import_name(&mut minor, &mut buffer, &mut oid, &mut name.0) };
    check(major, minor)?;
    Ok(name)
}

/// Acceptor credentials for the Kerberos and SPNEGO mechanisms, for
/// `principal`'s key or (without one) every service key in `keytab`
/// (`FILE:/path`), with replays recorded in `rcache` (`file2:/path`).
pub(super) fn acquire_acceptor(
    keytab: &CStr,
    rcache: &CStr,
    principal: Option<&str>,
) -> Result<Cred, Error> {
    let name = principal.map(import_name).transpose()?;
    let mut minor = 0;
    let mut mechs = OidSet(ptr::null_mut());
    // SAFETY: both pointers are to live locals; on success the library stores a
    // new set in `mechs.0`, which `OidSet` releases.
    let major = unsafe { sys::gss_create_empty_oid_set(&mut minor, &mut mechs.0) };
    check(major, minor)?;
    for oid in [MECH_KRB5, MECH_SPNEGO] {
        let mut desc = sys::gss_OID_desc {
            length: oid.len() as u32,
            elements: oid.as_ptr() as *mut c_void,
        };
        // SAFETY: `desc` points at static bytes the call only reads (it copies
        // them into the set); `mechs.0` is the set created above.
        let major = unsafe { sys::gss_add_oid_set_member(&mut minor, &mut desc, &mut mechs.0) };
        check(major, minor)?;
    }
    let mut elements = [
        sys::gss_key_value_element_desc {
            key: c"keytab".as_ptr(),
            value: keytab.as_ptr(),
        },
        sys::gss_key_value_element_desc {
            key: c"rcache".as_ptr(),
            value: rcache.as_ptr(),
        },
    ];
    let store = sys::gss_key_value_set_desc {
        count: elements.len() as u32,
        elements: elements.as_mut_ptr(),
    };
    let mut cred: sys::gss_cred_id_t = ptr::null_mut();
    // SAFETY: every pointer is to a live local, to a name imported above, or
    // to NUL-terminated strings that outlive the call (the library copies
    // what it keeps); no name means "any service key in the keytab"; the
    // out-pointers for the actual mechanisms and lifetime may be null.
    let major = unsafe {
        sys::gss_acquire_cred_from(
            &mut minor,
            name.as_ref().map_or(ptr::null_mut(), |n| n.0),
            sys::_GSS_C_INDEFINITE,
            mechs.0,
            sys::GSS_C_ACCEPT as sys::gss_cred_usage_t,
            &store,
            &mut cred,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    check(major, minor)?;
    // SAFETY: `cred` was just created by a successful call and nothing else
    // refers to it; `Cred` releases it exactly once when its last clone drops.
    Ok(unsafe { Cred::from_c(cred) })
}
