//! The layout check both bindings' tests run: C static assertions generated
//! from a binding's layout table, compiled (not run) with the mingw-w64
//! cross compilers (`gcc-mingw-w64-x86-64`, `gcc-mingw-w64-i686`).

use std::process::Command;

use super::{Offset, Size};

/// The two Windows targets IIS runs extensions and modules on.
#[derive(Clone, Copy)]
pub enum Arch {
    /// x86-64 (`x86_64-w64-mingw32-gcc`).
    X64,
    /// 32-bit x86 (`i686-w64-mingw32-gcc`).
    X86,
}

impl Arch {
    /// The cross compiler for the architecture.
    pub fn compiler(self) -> &'static str {
        match self {
            Arch::X64 => "x86_64-w64-mingw32-gcc",
            Arch::X86 => "i686-w64-mingw32-gcc",
        }
    }

    fn pick(self, x64: usize, x86: usize) -> usize {
        match self {
            Arch::X64 => x64,
            Arch::X86 => x86,
        }
    }
}

/// One `_Static_assert` line per size and offset in the tables, for `arch`.
pub fn layout_assertions(arch: Arch, sizes: &[Size], offsets: &[Offset]) -> String {
    let mut c = String::new();
    for s in sizes {
        let n = arch.pick(s.x64, s.x86);
        c += &format!(
            "_Static_assert(sizeof({ty}) == {n}, \"sizeof({ty}) is not {n}\");\n",
            ty = s.ty
        );
    }
    for o in offsets {
        let n = arch.pick(o.x64, o.x86);
        c += &format!(
            "_Static_assert(offsetof({ty}, {f}) == {n}, \"offsetof({ty}, {f}) is not {n}\");\n",
            ty = o.ty,
            f = o.field
        );
    }
    c
}

/// Compiles `source` for `arch` in a scratch folder named after `crate_tag`
/// and `tag`; `Err` carries the compiler's complaints.
pub fn compile(arch: Arch, crate_tag: &str, tag: &str, source: &str) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("{crate_tag}-layout-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{tag}.c"));
    std::fs::write(&file, source).unwrap();
    let out = Command::new(arch.compiler())
        .args(["-std=c11", "-c", "-o"])
        .arg(dir.join(format!("{tag}.o")))
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} is needed for the layout check ({e}): apt-get install gcc-mingw-w64-x86-64 gcc-mingw-w64-i686 (scripts/test does it)",
                arch.compiler()
            )
        });
    let _ = std::fs::remove_dir_all(&dir);
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
