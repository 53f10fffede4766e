//! Binary layouts as the public headers define them, per architecture: the
//! table type both IIS bindings declare their structs' expected sizes and
//! offsets in, the macro that asserts them at compile time, and (with the
//! `layout-check` feature, for the bindings' tests) the check of the same
//! tables against mingw-w64's headers with both cross compilers.

/// A struct's expected size on x64 and x86.
#[derive(Debug)]
pub struct Size {
    /// The C type's name.
    pub ty: &'static str,
    /// `sizeof` on x64.
    pub x64: usize,
    /// `sizeof` on 32-bit x86.
    pub x86: usize,
}

/// A field's expected offset on x64 and x86 (`field` may be a path such
/// as `FromMemory.pBuffer`).
#[derive(Debug)]
pub struct Offset {
    /// The C type's name.
    pub ty: &'static str,
    /// The field, or a path to a nested one.
    pub field: &'static str,
    /// `offsetof` on x64.
    pub x64: usize,
    /// `offsetof` on 32-bit x86.
    pub x86: usize,
}

/// Picks the value for the target being compiled.
pub const fn for_target(x64: usize, x86: usize) -> usize {
    if cfg!(target_pointer_width = "64") {
        x64
    } else {
        x86
    }
}

/// Defines `SIZES` and `OFFSETS` (the expected layouts on x64 and x86) from
/// a table, and asserts at compile time that the Rust structs of the
/// enclosing module (`super::`) match it on the target being built. Shared
/// by the ISAPI and native-module bindings (and their simulator):
/// `layout_table! { TYPE (x64 size, x86 size) { field.path: x64, x86; … } … }`.
#[macro_export]
#[doc(hidden)]
macro_rules! layout_table {
    ($( $ty:ident ($s64:expr, $s86:expr) { $( $first:ident $(. $rest:ident)* : $o64:expr, $o86:expr; )* } )*) => {
        /// Every struct's expected size.
        pub const SIZES: &[$crate::layout::Size] = &[$( $crate::layout::Size {
            ty: stringify!($ty),
            x64: $s64,
            x86: $s86,
        }, )*];
        /// Every field's expected offset.
        pub const OFFSETS: &[$crate::layout::Offset] = &[$($( $crate::layout::Offset {
            ty: stringify!($ty),
            field: concat!(stringify!($first) $(, ".", stringify!($rest))*),
            x64: $o64,
            x86: $o86,
        }, )*)*];
        // The Rust structs match the table for the target being built.
        const _: () = {
            $(
                assert!(
                    std::mem::size_of::<super::$ty>() == $crate::layout::for_target($s64, $s86)
                );
                $( assert!(
                    std::mem::offset_of!(super::$ty, $first $(. $rest)*)
                        == $crate::layout::for_target($o64, $o86)
                ); )*
            )*
        };
    };
}

#[cfg(feature = "layout-check")]
pub mod mingw;
