//! `kallithea install-iis`: PE detection on real 32- and 64-bit DLLs built
//! here with mingw-w64, the generated files against golden copies, their
//! XML and the command's errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use kallithea_cli::install_iis::Install;
use kallithea_cli::pe::{self, DllKind, KindError, Machine, PeError};

fn temp(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kallithea-cli-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Builds a Windows image with mingw-w64 exporting `exports` (stdcall, as
/// IIS calls them); `undecorated` strips the `@N` of 32-bit stdcall names.
fn build(dir: &Path, x86: bool, file: &str, exports: &[&str], undecorated: bool) -> PathBuf {
    let exe = file.ends_with(".exe");
    let mut c = String::from("#include <windows.h>\n");
    for e in exports {
        c += &format!(
            "__declspec(dllexport) DWORD WINAPI {e}(void *a, void *b, void *c) {{ return 0; }}\n"
        );
    }
    if exe {
        c += "int main(void) { return 0; }\n";
    }
    let src = dir.join(format!("{file}.c"));
    std::fs::write(&src, c).unwrap();
    let out = dir.join(file);
    let compiler = if x86 {
        "i686-w64-mingw32-gcc"
    } else {
        "x86_64-w64-mingw32-gcc"
    };
    let mut cmd = Command::new(compiler);
    if !exe {
        cmd.arg("-shared");
    }
    if undecorated && x86 {
        cmd.arg("-Wl,--kill-at");
    }
    let status = cmd.arg("-o").arg(&out).arg(&src).status().unwrap_or_else(|e| {
        panic!("{compiler} is needed ({e}): apt-get install gcc-mingw-w64-x86-64 gcc-mingw-w64-i686")
    });
    assert!(status.success(), "{compiler} failed");
    out
}

fn read(path: &Path) -> pe::PeInfo {
    pe::read(&std::fs::read(path).unwrap()).unwrap()
}

const ISAPI: [&str; 3] = [
    "GetExtensionVersion",
    "HttpExtensionProc",
    "TerminateExtension",
];

#[test]
fn real_dlls_are_told_apart_by_machine_and_exports() {
    let dir = temp("pe");
    let isapi64 = read(&build(&dir, false, "isapi64.dll", &ISAPI, true));
    assert_eq!(isapi64.machine, Machine::X64);
    assert_eq!(pe::kind(&isapi64), Ok(DllKind::Isapi));

    let isapi32 = read(&build(&dir, true, "isapi32.dll", &ISAPI, true));
    assert_eq!(isapi32.machine, Machine::X86);
    assert_eq!(pe::kind(&isapi32), Ok(DllKind::Isapi));

    let native32 = read(&build(
        &dir,
        true,
        "native32.dll",
        &["RegisterModule"],
        true,
    ));
    assert_eq!(native32.machine, Machine::X86);
    assert!(native32.machine.is_32_bit());
    assert_eq!(pe::kind(&native32), Ok(DllKind::NativeModule));

    let native64 = read(&build(
        &dir,
        false,
        "native64.dll",
        &["RegisterModule"],
        true,
    ));
    assert_eq!(
        (native64.machine, pe::kind(&native64)),
        (Machine::X64, Ok(DllKind::NativeModule))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unusable_files_get_a_clear_error() {
    let dir = temp("bad");
    // 32-bit stdcall names that kept their decoration.
    let decorated = read(&build(
        &dir,
        true,
        "decorated.dll",
        &["RegisterModule"],
        false,
    ));
    assert!(
        decorated.exports.iter().any(|e| e.contains('@')),
        "{:?}",
        decorated.exports
    );
    let err = pe::kind(&decorated).unwrap_err();
    assert!(matches!(err, KindError::Decorated { .. }), "{err}");
    assert!(err.to_string().contains("native_module_exports"), "{err}");

    let other = read(&build(&dir, false, "other.dll", &["Something"], true));
    let err = pe::kind(&other).unwrap_err();
    assert!(matches!(err, KindError::NoEntryPoints { .. }), "{err}");

    let exe = read(&build(&dir, false, "prog.exe", &[], true));
    assert_eq!(pe::kind(&exe), Err(KindError::NotDll));

    // A Linux binary (this test itself) and a text file.
    let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    assert_eq!(pe::read(&me), Err(PeError::NotPe));
    assert_eq!(pe::read(b"just text\n"), Err(PeError::NotPe));
    // A DLL cut short.
    let bytes = std::fs::read(dir.join("other.dll")).unwrap();
    assert!(pe::read(&bytes[..300]).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

fn isapi_install() -> Install {
    Install {
        dll_name: "portal.dll".into(),
        kind: DllKind::Isapi,
        machine: Machine::X64,
        virtual_dir: "/portal".into(),
        site: "Default Web Site".into(),
        pool: "Portal".into(),
        physical_path: "C:\\inetpub\\portal".into(),
        max_body_bytes: Some(104_857_600),
    }
}

fn native_install() -> Install {
    Install {
        dll_name: "portal_iis.dll".into(),
        kind: DllKind::NativeModule,
        machine: Machine::X86,
        virtual_dir: "/".into(),
        site: "Intranet".into(),
        pool: "Kallithea 32".into(),
        physical_path: "D:\\apps\\portal".into(),
        max_body_bytes: None,
    }
}

/// Compares with `tests/golden/<name>`; `UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, text: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(
        text,
        want,
        "{} differs (UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

#[test]
fn generated_files_match_the_golden_copies() {
    for (tag, i) in [("isapi", isapi_install()), ("native", native_install())] {
        i.validate().unwrap();
        golden(&format!("{tag}/web.config"), &i.web_config());
        golden(&format!("{tag}/install.ps1"), &i.install_ps1());
        golden(&format!("{tag}/uninstall.ps1"), &i.uninstall_ps1());
    }
}

fn attr<'a>(n: roxmltree::Node<'a, 'a>, name: &str) -> &'a str {
    n.attribute(name)
        .unwrap_or_else(|| panic!("<{}> has no {name}", n.tag_name().name()))
}

#[test]
fn web_config_is_well_formed_with_the_expected_elements() {
    for i in [isapi_install(), native_install()] {
        let text = i.web_config();
        let doc = roxmltree::Document::parse(&text)
            .unwrap_or_else(|e| panic!("not well-formed: {e}\n{text}"));
        let find = |name: &str| {
            doc.descendants()
                .find(|n| n.has_tag_name(name))
                .unwrap_or_else(|| panic!("no <{name}> in\n{text}"))
        };
        assert_eq!(doc.root_element().tag_name().name(), "configuration");
        assert_eq!(attr(find("windowsAuthentication"), "enabled"), "true");
        assert_eq!(attr(find("anonymousAuthentication"), "enabled"), "false");
        let handlers = find("handlers");
        let add: Vec<_> = handlers.children().filter(|n| n.is_element()).collect();
        assert_eq!(add[0].tag_name().name(), "clear");
        let h = add[1];
        assert_eq!((attr(h, "path"), attr(h, "verb")), ("*", "*"));
        match i.kind {
            DllKind::Isapi => {
                assert_eq!(attr(h, "modules"), "IsapiModule");
                assert_eq!(
                    attr(h, "scriptProcessor"),
                    "C:\\inetpub\\portal\\portal.dll"
                );
                assert_eq!(attr(h, "preCondition"), "bitness64");
                assert_eq!(
                    attr(find("requestLimits"), "maxAllowedContentLength"),
                    "104857600"
                );
            }
            DllKind::NativeModule => {
                assert_eq!(attr(h, "modules"), "Kallithea-portal_iis");
                assert_eq!(
                    attr(find("modules").first_element_child().unwrap(), "name"),
                    "Kallithea-portal_iis"
                );
                assert_eq!(
                    attr(find("requestLimits"), "maxAllowedContentLength"),
                    "4294967295"
                );
            }
        }
    }
}

#[test]
fn scripts_follow_the_dll_and_its_bitness() {
    let isapi = isapi_install().install_ps1();
    assert!(isapi.contains("/enable32BitAppOnWin64:false"));
    assert!(isapi.contains("isapiCgiRestriction"));
    assert!(!isapi.contains("install module"));
    let native = native_install().install_ps1();
    assert!(native.contains("/enable32BitAppOnWin64:true"));
    assert!(native.contains("/preCondition:bitness32"));
    assert!(native.contains("'system.webServer/modules'"));
    assert!(native.contains("$pool = 'Kallithea 32'"));
    let un = native_install().uninstall_ps1();
    assert!(un.contains("uninstall module"));
}

fn kallithea(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kallithea"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_command_writes_the_files_and_refuses_bad_input() {
    let dir = temp("cli");
    let dll = build(&dir, true, "portal.dll", &["RegisterModule"], true);
    let config = dir.join("portal.toml");
    std::fs::write(&config, "[limits]\nmax_body_bytes = 5000\n").unwrap();
    let out = dir.join("iis");
    let args = |extra: &[&str]| -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = vec![
            "install-iis".into(),
            dll.clone().into(),
            "-c".into(),
            config.clone().into(),
            "--out".into(),
            out.clone().into(),
        ];
        v.extend(extra.iter().map(Into::into));
        v
    };
    let run = |a: Vec<std::ffi::OsString>| {
        let refs: Vec<&std::ffi::OsStr> = a.iter().map(|s| s.as_os_str()).collect();
        kallithea(&refs)
    };
    let (ok, stdout, stderr) = run(args(&[]));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("IIS native module (32-bit x86)"),
        "{stdout}"
    );
    let web = std::fs::read_to_string(out.join("web.config")).unwrap();
    assert!(web.contains("maxAllowedContentLength=\"5000\""), "{web}");
    let install = std::fs::read_to_string(out.join("install.ps1")).unwrap();
    assert!(install.contains("/enable32BitAppOnWin64:true"));
    assert!(
        install.contains("C:\\inetpub\\kallithea\\portal"),
        "{install}"
    );

    // Again: the same files, nothing to refuse.
    assert!(run(args(&[])).0);
    // A hand-edited file is not clobbered without --force.
    std::fs::write(out.join("web.config"), "edited").unwrap();
    let (ok, _, stderr) = run(args(&[]));
    assert!(!ok);
    assert!(stderr.contains("web.config exists and differs"), "{stderr}");
    assert!(run(args(&["--force"])).0);

    // Bad input: a virtual directory, a configuration, a non-DLL.
    let (ok, _, stderr) = run(args(&["--virtualdir", "portal"]));
    assert!(!ok && stderr.contains("must start with /"), "{stderr}");
    std::fs::write(&config, "worker_threads = 0\n").unwrap();
    let (ok, _, stderr) = run(args(&[]));
    assert!(!ok && stderr.contains("worker_threads"), "{stderr}");
    std::fs::write(&config, "").unwrap();
    std::fs::write(&dll, "not a dll").unwrap();
    let (ok, _, stderr) = run(args(&[]));
    assert!(!ok && stderr.contains("not a Windows DLL"), "{stderr}");
    let (ok, stdout, _) = kallithea(&["install-iis".as_ref(), "--help".as_ref()]);
    assert!(ok && stdout.contains("Examples:"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
