//! Just enough of the PE/COFF format to tell what a Windows DLL is: its
//! machine (32- or 64-bit), whether it is a DLL at all, and the names it
//! exports — which say whether it is an ISAPI extension or an IIS native
//! module.

use std::fmt;

/// The CPU a PE image is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    /// `IMAGE_FILE_MACHINE_I386` (0x14c): a 32-bit DLL, for an application
    /// pool with 32-bit applications enabled.
    X86,
    /// `IMAGE_FILE_MACHINE_AMD64` (0x8664).
    X64,
    /// `IMAGE_FILE_MACHINE_ARM64` (0xAA64).
    Arm64,
}

impl Machine {
    /// Whether the image is 32-bit.
    pub fn is_32_bit(self) -> bool {
        self == Machine::X86
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Machine::X86 => "32-bit x86",
            Machine::X64 => "64-bit x64",
            Machine::Arm64 => "64-bit ARM64",
        })
    }
}

/// What a PE file says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeInfo {
    /// The target CPU.
    pub machine: Machine,
    /// `IMAGE_FILE_DLL` is set.
    pub is_dll: bool,
    /// The exported names, in the export table's (sorted) order.
    pub exports: Vec<String>,
}

/// Why a file could not be read as a PE image.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeError {
    /// No `MZ` signature: not a Windows executable or DLL at all.
    #[error("not a Windows DLL (no MZ signature; is it a Linux .so or another kind of file?)")]
    NotPe,
    /// The file ends where a header should be, or a header points outside
    /// the file.
    #[error("a damaged PE file: {0}")]
    Truncated(&'static str),
    /// A machine type this tool does not know.
    #[error("an image for machine type {0:#06x}, which IIS cannot load")]
    UnknownMachine(u16),
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u16(&self, at: usize, what: &'static str) -> Result<u16, PeError> {
        let b = self.0.get(at..at + 2).ok_or(PeError::Truncated(what))?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&self, at: usize, what: &'static str) -> Result<u32, PeError> {
        let b = self.0.get(at..at + 4).ok_or(PeError::Truncated(what))?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A NUL-terminated ASCII string at `at`.
    fn c_str(&self, at: usize, what: &'static str) -> Result<String, PeError> {
        let rest = self.0.get(at..).ok_or(PeError::Truncated(what))?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(PeError::Truncated(what))?;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    }
}

struct Section {
    virtual_address: u32,
    virtual_size: u32,
    raw_size: u32,
    raw_pointer: u32,
}

/// The file offset of relative virtual address `rva`.
fn offset_of(sections: &[Section], rva: u32, what: &'static str) -> Result<usize, PeError> {
    for s in sections {
        let size = s.virtual_size.max(s.raw_size);
        if rva >= s.virtual_address && rva - s.virtual_address < size {
            return Ok((rva - s.virtual_address + s.raw_pointer) as usize);
        }
    }
    Err(PeError::Truncated(what))
}

/// Reads the machine, the DLL flag and the export names of a PE image.
pub fn read(bytes: &[u8]) -> Result<PeInfo, PeError> {
    let r = Reader(bytes);
    if bytes.get(..2) != Some(b"MZ") {
        return Err(PeError::NotPe);
    }
    let pe = r.u32(0x3C, "the DOS header")? as usize;
    if bytes.get(pe..pe + 4) != Some(b"PE\0\0") {
        return Err(PeError::Truncated("the PE signature"));
    }
    let coff = pe + 4;
    let machine = match r.u16(coff, "the COFF header")? {
        0x014C => Machine::X86,
        0x8664 => Machine::X64,
        0xAA64 => Machine::Arm64,
        other => return Err(PeError::UnknownMachine(other)),
    };
    let sections_count = r.u16(coff + 2, "the COFF header")? as usize;
    let optional_size = r.u16(coff + 16, "the COFF header")? as usize;
    let characteristics = r.u16(coff + 18, "the COFF header")?;
    let optional = coff + 20;
    let (count_at, dirs_at) = match r.u16(optional, "the optional header")? {
        0x10B => (optional + 92, optional + 96),
        0x20B => (optional + 108, optional + 112),
        _ => return Err(PeError::Truncated("the optional header's magic")),
    };
    let dir_count = r.u32(count_at, "the optional header")?;
    let mut sections = Vec::with_capacity(sections_count);
    let table = optional + optional_size;
    for i in 0..sections_count {
        let at = table + i * 40;
        sections.push(Section {
            virtual_size: r.u32(at + 8, "the section table")?,
            virtual_address: r.u32(at + 12, "the section table")?,
            raw_size: r.u32(at + 16, "the section table")?,
            raw_pointer: r.u32(at + 20, "the section table")?,
        });
    }
    let mut exports = Vec::new();
    let export_rva = if dir_count > 0 {
        r.u32(dirs_at, "the data directories")?
    } else {
        0
    };
    if export_rva != 0 {
        let dir = offset_of(&sections, export_rva, "the export directory")?;
        let names = r.u32(dir + 24, "the export directory")? as usize;
        let names_rva = r.u32(dir + 32, "the export directory")?;
        if names > 0 {
            let table = offset_of(&sections, names_rva, "the export name table")?;
            for i in 0..names {
                let rva = r.u32(table + i * 4, "the export name table")?;
                let at = offset_of(&sections, rva, "an export name")?;
                exports.push(r.c_str(at, "an export name")?);
            }
        }
    }
    Ok(PeInfo {
        machine,
        is_dll: characteristics & 0x2000 != 0,
        exports,
    })
}

/// What kind of IIS DLL a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DllKind {
    /// `GetExtensionVersion`, `HttpExtensionProc`, `TerminateExtension`.
    Isapi,
    /// `RegisterModule`.
    NativeModule,
}

impl fmt::Display for DllKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DllKind::Isapi => "ISAPI extension",
            DllKind::NativeModule => "IIS native module",
        })
    }
}

/// The ISAPI extension's entry points.
pub const ISAPI_EXPORTS: [&str; 3] = [
    "GetExtensionVersion",
    "HttpExtensionProc",
    "TerminateExtension",
];
/// The native module's entry point.
pub const NATIVE_EXPORT: &str = "RegisterModule";

/// A DLL IIS cannot use, in words with the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KindError {
    /// An executable, not a DLL.
    #[error("a Windows program, not a DLL: build the crate as a cdylib")]
    NotDll,
    /// The entry points are there only with stdcall decoration.
    #[error(
        "it exports {found} (stdcall-decorated), but IIS looks up the undecorated {wanted}: call \
         kallithea_build::isapi_exports() or native_module_exports() from the crate's build script"
    )]
    Decorated {
        /// The decorated names found.
        found: String,
        /// The names IIS looks up.
        wanted: String,
    },
    /// Neither set of entry points.
    #[error(
        "it exports neither an ISAPI extension's entry points (GetExtensionVersion, \
         HttpExtensionProc, TerminateExtension) nor a native module's (RegisterModule){missing}"
    )]
    NoEntryPoints {
        /// What was partly there.
        missing: String,
    },
    /// Both sets.
    #[error("it exports both an ISAPI extension's entry points and RegisterModule: build one or the other")]
    Both,
}

/// Tells an ISAPI extension from a native module by the exports.
pub fn kind(info: &PeInfo) -> Result<DllKind, KindError> {
    if !info.is_dll {
        return Err(KindError::NotDll);
    }
    let has = |name: &str| info.exports.iter().any(|e| e == name);
    let isapi = ISAPI_EXPORTS.iter().all(|n| has(n));
    let native = has(NATIVE_EXPORT);
    match (isapi, native) {
        (true, true) => return Err(KindError::Both),
        (true, false) => return Ok(DllKind::Isapi),
        (false, true) => return Ok(DllKind::NativeModule),
        (false, false) => {}
    }
    // `_Name@N` or `Name@N`: stdcall decoration that leaked.
    let undecorate = |e: &str| -> Option<String> {
        let (name, n) = e.rsplit_once('@')?;
        n.parse::<u32>().ok()?;
        Some(name.trim_start_matches('_').to_owned())
    };
    let wanted: Vec<&str> = ISAPI_EXPORTS
        .iter()
        .copied()
        .chain(std::iter::once(NATIVE_EXPORT))
        .collect();
    let decorated: Vec<&String> = info
        .exports
        .iter()
        .filter(|e| undecorate(e).is_some_and(|u| wanted.contains(&u.as_str())))
        .collect();
    if !decorated.is_empty() {
        let found = decorated
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let wanted = decorated
            .iter()
            .filter_map(|e| undecorate(e))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(KindError::Decorated { found, wanted });
    }
    let partial: Vec<&str> = ISAPI_EXPORTS.iter().copied().filter(|n| has(n)).collect();
    let missing = if partial.is_empty() {
        String::new()
    } else {
        let lacking: Vec<&str> = ISAPI_EXPORTS.iter().copied().filter(|n| !has(n)).collect();
        format!(
            "; it has {} but lacks {}",
            partial.join(", "),
            lacking.join(", ")
        )
    };
    Err(KindError::NoEntryPoints { missing })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(exports: &[&str]) -> PeInfo {
        PeInfo {
            machine: Machine::X64,
            is_dll: true,
            exports: exports.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn kinds_by_exports() {
        assert_eq!(kind(&info(&ISAPI_EXPORTS)), Ok(DllKind::Isapi));
        assert_eq!(kind(&info(&["RegisterModule"])), Ok(DllKind::NativeModule));
        assert_eq!(
            kind(&info(&[
                "GetExtensionVersion",
                "HttpExtensionProc",
                "TerminateExtension",
                "RegisterModule"
            ])),
            Err(KindError::Both)
        );
        let err = kind(&info(&["_RegisterModule@12"])).unwrap_err();
        assert!(
            err.to_string().contains("undecorated RegisterModule"),
            "{err}"
        );
        let err = kind(&info(&["GetExtensionVersion", "Other"])).unwrap_err();
        assert!(
            err.to_string()
                .contains("lacks HttpExtensionProc, TerminateExtension"),
            "{err}"
        );
        let mut exe = info(&ISAPI_EXPORTS);
        exe.is_dll = false;
        assert_eq!(kind(&exe), Err(KindError::NotDll));
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert_eq!(read(b""), Err(PeError::NotPe));
        assert_eq!(read(b"\x7fELF...."), Err(PeError::NotPe));
        let mut fake = b"MZ".to_vec();
        fake.resize(0x40, 0);
        fake[0x3C] = 0xF0;
        assert!(matches!(read(&fake), Err(PeError::Truncated(_))));
        // Every prefix of a header-only image fails cleanly.
        let mut img = vec![0u8; 0x200];
        img[..2].copy_from_slice(b"MZ");
        img[0x3C] = 0x40;
        img[0x40..0x44].copy_from_slice(b"PE\0\0");
        img[0x44..0x46].copy_from_slice(&0x8664u16.to_le_bytes());
        img[0x54..0x56].copy_from_slice(&240u16.to_le_bytes());
        img[0x58..0x5A].copy_from_slice(&0x20Bu16.to_le_bytes());
        for n in 0..img.len() {
            let _ = read(&img[..n]);
        }
        let whole = read(&img).unwrap();
        assert_eq!(whole.machine, Machine::X64);
        assert!(whole.exports.is_empty());
    }
}
