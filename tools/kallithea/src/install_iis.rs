//! `install-iis`: the `web.config` of the virtual directory and idempotent
//! PowerShell scripts (using `appcmd`) that install and uninstall an ISAPI
//! extension or native module built with this framework.

use std::fmt::Write as _;

use crate::pe::{DllKind, Machine};

/// Everything the generated files depend on.
#[derive(Clone, Debug)]
pub struct Install {
    /// The DLL's file name (`portal.dll`).
    pub dll_name: String,
    /// ISAPI extension or native module.
    pub kind: DllKind,
    /// The DLL's CPU: a 32-bit DLL needs a pool with 32-bit applications.
    pub machine: Machine,
    /// The virtual directory (`/` or `/portal`).
    pub virtual_dir: String,
    /// The IIS site.
    pub site: String,
    /// The application pool.
    pub pool: String,
    /// The folder on the server holding the DLL, its configuration and
    /// `web.config` (a Windows path).
    pub physical_path: String,
    /// `limits.max_body_bytes` from the configuration (`None`: unlimited).
    pub max_body_bytes: Option<u64>,
}

/// A bad input, in words with the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InstallError {
    /// The virtual directory.
    #[error("--virtualdir {0:?}: {1}")]
    VirtualDir(String, &'static str),
    /// A site or pool name.
    #[error("{0} {1:?}: {2}")]
    Name(&'static str, String, &'static str),
    /// The physical path.
    #[error(
        "--physical-path {0:?}: must be an absolute Windows path (C:\\inetpub\\portal or \\\\server\\share\\portal)"
    )]
    PhysicalPath(String),
    /// An ARM64 DLL.
    #[error("the DLL is built for {0}; IIS worker processes here are x64 or x86")]
    Machine(Machine),
}

/// IIS's largest `maxAllowedContentLength` (a `uint`).
const MAX_CONTENT_LENGTH: u64 = u32::MAX as u64;

impl Install {
    /// Checks the inputs; the generated files are only as good as them.
    pub fn validate(&self) -> Result<(), InstallError> {
        let v = &self.virtual_dir;
        let vdir = |why| Err(InstallError::VirtualDir(v.clone(), why));
        if !v.starts_with('/') {
            return vdir("must start with / (/ for the site's root)");
        }
        if v.len() > 1 && v.ends_with('/') {
            return vdir("must not end with / (write /portal)");
        }
        if v.split('/').any(|s| s == "." || s == "..") || v.contains("//") {
            return vdir("must be a plain path without . or .. or empty segments");
        }
        if v.chars().any(|c| {
            c.is_control()
                || matches!(
                    c,
                    '\\' | '\'' | '"' | '<' | '>' | '&' | '%' | '?' | '*' | ':' | '|' | '`' | '$'
                )
        }) {
            return vdir("may hold letters, digits, - _ . and / only");
        }
        for (what, value) in [("--site", &self.site), ("--pool", &self.pool)] {
            if value.trim().is_empty() {
                return Err(InstallError::Name(what, value.clone(), "must not be empty"));
            }
            if value.chars().any(|c| {
                c.is_control()
                    || matches!(
                        c,
                        '\'' | '"' | '/' | '\\' | '[' | ']' | '`' | '$' | '<' | '>' | '&'
                    )
            }) {
                return Err(InstallError::Name(
                    what,
                    value.clone(),
                    "must not contain quotes, slashes, brackets, $, ` or XML markup",
                ));
            }
        }
        let p = &self.physical_path;
        let drive = p.len() >= 3 && p.as_bytes()[0].is_ascii_alphabetic() && &p[1..3] == ":\\";
        let unc = p.starts_with("\\\\") && p.len() > 2;
        if !(drive || unc)
            || p.chars()
                .any(|c| c.is_control() || matches!(c, '"' | '<' | '>' | '|' | '`' | '$'))
        {
            return Err(InstallError::PhysicalPath(p.clone()));
        }
        if self.machine == Machine::Arm64 {
            return Err(InstallError::Machine(self.machine));
        }
        Ok(())
    }

    /// The handler's (and the native module's) name: `Kallithea-<dll>`.
    pub fn handler_name(&self) -> String {
        let stem = self
            .dll_name
            .rsplit_once('.')
            .map_or(self.dll_name.as_str(), |(s, _)| s);
        format!("Kallithea-{stem}")
    }

    fn dll_path(&self) -> String {
        format!(
            "{}\\{}",
            self.physical_path.trim_end_matches('\\'),
            self.dll_name
        )
    }

    fn bitness(&self) -> &'static str {
        if self.machine.is_32_bit() {
            "bitness32"
        } else {
            "bitness64"
        }
    }

    fn max_content_length(&self) -> u64 {
        self.max_body_bytes
            .map_or(MAX_CONTENT_LENGTH, |n| n.min(MAX_CONTENT_LENGTH))
    }

    /// The virtual directory's `web.config`.
    pub fn web_config(&self) -> String {
        let name = xml(&self.handler_name());
        let mut x = String::new();
        x.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
        let _ = writeln!(
            x,
            "<!-- Generated by kallithea install-iis for {} ({}, {}) at {}{}.\n     \
             Every request under this virtual directory goes to the DLL; IIS\n     \
             authenticates it with Windows authentication first. -->",
            xml(&self.dll_name),
            self.kind,
            self.machine,
            xml(&self.site),
            xml(&self.virtual_dir)
        );
        x.push_str("<configuration>\n  <system.webServer>\n");
        match self.kind {
            DllKind::Isapi => {
                x.push_str("    <handlers accessPolicy=\"Read, Script, Execute\">\n");
                x.push_str("      <clear />\n");
                let _ = writeln!(
                    x,
                    "      <add name=\"{name}\" path=\"*\" verb=\"*\" modules=\"IsapiModule\" \
                     scriptProcessor=\"{}\" resourceType=\"Unspecified\" requireAccess=\"Execute\" \
                     preCondition=\"{}\" />",
                    xml(&self.dll_path()),
                    self.bitness()
                );
                x.push_str("    </handlers>\n");
            }
            DllKind::NativeModule => {
                x.push_str("    <modules>\n");
                let _ = writeln!(x, "      <add name=\"{name}\" />");
                x.push_str("    </modules>\n");
                x.push_str("    <handlers accessPolicy=\"Read, Script\">\n");
                x.push_str("      <clear />\n");
                let _ = writeln!(
                    x,
                    "      <add name=\"{name}\" path=\"*\" verb=\"*\" modules=\"{name}\" \
                     resourceType=\"Unspecified\" requireAccess=\"Script\" />"
                );
                x.push_str("    </handlers>\n");
            }
        }
        x.push_str("    <security>\n      <authentication>\n");
        x.push_str("        <anonymousAuthentication enabled=\"false\" />\n");
        x.push_str("        <windowsAuthentication enabled=\"true\" />\n");
        x.push_str("      </authentication>\n      <requestFiltering>\n");
        let _ = writeln!(
            x,
            "        <requestLimits maxAllowedContentLength=\"{}\" />",
            self.max_content_length()
        );
        x.push_str("      </requestFiltering>\n    </security>\n");
        x.push_str("  </system.webServer>\n</configuration>\n");
        x
    }

    /// The sections `web.config` sets that IIS locks by default.
    fn unlocked_sections(&self) -> Vec<&'static str> {
        let mut s = vec![
            "system.webServer/handlers",
            "system.webServer/security/authentication/anonymousAuthentication",
            "system.webServer/security/authentication/windowsAuthentication",
        ];
        if self.kind == DllKind::NativeModule {
            s.push("system.webServer/modules");
        }
        s
    }

    fn ps_header(&self, what: &str) -> String {
        let mut p = String::new();
        let _ = writeln!(
            p,
            "# Generated by kallithea install-iis: {what} {} ({}, {})\n\
             # at \"{}{}\". Run it from an elevated PowerShell on the IIS server.\n\
             # Safe to run again: every step checks what is there first.",
            self.dll_name, self.kind, self.machine, self.site, self.virtual_dir
        );
        p.push_str("#Requires -RunAsAdministrator\n$ErrorActionPreference = 'Stop'\n\n");
        let _ = writeln!(p, "$site = {}", ps(&self.site));
        let _ = writeln!(p, "$vdir = {}", ps(&self.virtual_dir));
        let _ = writeln!(p, "$pool = {}", ps(&self.pool));
        let _ = writeln!(p, "$physical = {}", ps(&self.physical_path));
        let _ = writeln!(p, "$dll = {}", ps(&self.dll_path()));
        let _ = writeln!(p, "$name = {}", ps(&self.handler_name()));
        p.push_str(
            "$app = if ($vdir -eq '/') { \"$site/\" } else { \"$site$vdir\" }\n\
             $appcmd = Join-Path $env:windir 'system32\\inetsrv\\appcmd.exe'\n\
             if (-not (Test-Path $appcmd)) { throw \"IIS is not installed ($appcmd is missing)\" }\n\n\
             function Invoke-AppCmd {\n\
             \x20   $out = & $appcmd @args 2>&1\n\
             \x20   if ($LASTEXITCODE -ne 0) { throw \"appcmd $($args -join ' ') failed: $out\" }\n\
             \x20   $out\n\
             }\n\
             function Test-AppCmd {\n\
             \x20   & $appcmd @args *> $null\n\
             \x20   $LASTEXITCODE -eq 0\n\
             }\n\
             function Test-Config([string] $section, [string] $text) {\n\
             \x20   (& $appcmd list config /section:$section 2>$null | Out-String).Contains($text)\n\
             }\n\n",
        );
        p
    }

    /// The install script.
    pub fn install_ps1(&self) -> String {
        let mut p = self.ps_header("installs");
        p.push_str(
            "if (-not (Test-Path $dll)) {\n\
             \x20   throw \"$dll is missing: copy the DLL, its .toml configuration and web.config to $physical first\"\n\
             }\n",
        );
        p.push_str(
            "if (-not (Test-AppCmd list config /section:system.webServer/security/authentication/windowsAuthentication)) {\n\
             \x20   throw 'Windows authentication is not installed: Install-WindowsFeature Web-Windows-Auth (or Windows Features > IIS > Security > Windows Authentication)'\n\
             }\n",
        );
        if self.kind == DllKind::Isapi {
            p.push_str(
                "if (-not (Test-AppCmd list module /name:IsapiModule)) {\n\
                 \x20   throw 'ISAPI extensions are not installed: Install-WindowsFeature Web-ISAPI-Ext'\n\
                 }\n",
            );
        }
        let _ = write!(
            p,
            "\n# 1. The application pool: no managed code, 32-bit applications {}.\n\
             if (-not (Test-AppCmd list apppool /name:$pool)) {{ Invoke-AppCmd add apppool /name:$pool | Out-Null }}\n\
             Invoke-AppCmd set apppool /apppool.name:$pool /managedRuntimeVersion: /enable32BitAppOnWin64:{} | Out-Null\n",
            if self.machine.is_32_bit() {
                "on (the DLL is 32-bit)"
            } else {
                "off (the DLL is 64-bit)"
            },
            self.machine.is_32_bit()
        );
        p.push_str(
            "\n# 2. The application at the virtual directory (at the site's root: the\n\
             #    root application's pool and folder).\n\
             if ($vdir -ne '/' -and -not (Test-AppCmd list app $app)) {\n\
             \x20   Invoke-AppCmd add app /site.name:$site /path:$vdir /physicalPath:$physical /applicationPool:$pool | Out-Null\n\
             } else {\n\
             \x20   Invoke-AppCmd set app $app /applicationPool:$pool | Out-Null\n\
             \x20   Invoke-AppCmd set vdir \"$($app.TrimEnd('/'))/\" /physicalPath:$physical | Out-Null\n\
             }\n",
        );
        match self.kind {
            DllKind::Isapi => p.push_str(
                "\n# 3. The ISAPI/CGI restriction that allows the DLL.\n\
                 $section = 'system.webServer/security/isapiCgiRestriction'\n\
                 if (Test-Config $section \"path=`\"$dll`\"\") {\n\
                 \x20   Invoke-AppCmd set config /section:$section \"/[path='$dll'].allowed:True\" /commit:apphost | Out-Null\n\
                 } else {\n\
                 \x20   Invoke-AppCmd set config /section:$section \"/+[path='$dll',allowed='True',description='$name']\" /commit:apphost | Out-Null\n\
                 }\n",
            ),
            DllKind::NativeModule => {
                let _ = write!(
                    p,
                    "\n# 3. The global module registration (loaded by {} pools only; enabled\n\
                     #    for this application alone by its web.config).\n\
                     if (-not (Test-Config 'system.webServer/globalModules' \"name=`\"$name`\"\")) {{\n\
                     \x20   Invoke-AppCmd install module /name:$name /image:$dll /add:false /preCondition:{} | Out-Null\n\
                     }}\n",
                    if self.machine.is_32_bit() {
                        "32-bit"
                    } else {
                        "64-bit"
                    },
                    self.bitness()
                );
            }
        }
        p.push_str(
            "\n# 4. Let this application's web.config set the sections IIS locks by default.\n\
             foreach ($s in @(\n",
        );
        let sections = self.unlocked_sections();
        for (i, s) in sections.iter().enumerate() {
            let _ = writeln!(
                p,
                "    '{s}'{}",
                if i + 1 < sections.len() { "," } else { "" }
            );
        }
        p.push_str(
            ")) {\n\
             \x20   Invoke-AppCmd unlock config $app /section:$s /commit:apphost | Out-Null\n\
             }\n\n\
             Invoke-AppCmd recycle apppool /apppool.name:$pool | Out-Null\n\
             Write-Host \"Installed $name at $app (pool $pool).\"\n",
        );
        p
    }

    /// The uninstall script.
    pub fn uninstall_ps1(&self) -> String {
        let mut p = self.ps_header("uninstalls");
        p.push_str(
            "# 1. The application (the site's root application stays, back on the\n\
             #    default pool).\n\
             if ($vdir -ne '/') {\n\
             \x20   if (Test-AppCmd list app $app) { Invoke-AppCmd delete app $app | Out-Null }\n\
             } elseif (Test-AppCmd list app $app) {\n\
             \x20   Invoke-AppCmd set app $app /applicationPool:DefaultAppPool | Out-Null\n\
             }\n",
        );
        match self.kind {
            DllKind::Isapi => p.push_str(
                "\n# 2. The ISAPI/CGI restriction entry.\n\
                 $section = 'system.webServer/security/isapiCgiRestriction'\n\
                 if (Test-Config $section \"path=`\"$dll`\"\") {\n\
                 \x20   Invoke-AppCmd set config /section:$section \"/-[path='$dll']\" /commit:apphost | Out-Null\n\
                 }\n",
            ),
            DllKind::NativeModule => p.push_str(
                "\n# 2. The global module registration.\n\
                 if (Test-Config 'system.webServer/globalModules' \"name=`\"$name`\"\") {\n\
                 \x20   Invoke-AppCmd uninstall module $name | Out-Null\n\
                 }\n",
            ),
        }
        p.push_str(
            "\n# 3. The application pool, unless another application still uses it.\n\
             if (Test-AppCmd list apppool /name:$pool) {\n\
             \x20   $users = & $appcmd list app /apppool.name:$pool 2>$null\n\
             \x20   if (-not $users) { Invoke-AppCmd delete apppool /apppool.name:$pool | Out-Null }\n\
             \x20   else { Write-Host \"Kept pool ${pool}: still used by $users\" }\n\
             }\n\
             Write-Host \"Uninstalled $name from $app.\"\n",
        );
        p
    }
}

/// Text for an XML attribute or comment.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '-' if out.ends_with('-') => out.push_str("&#45;"),
            c => out.push(c),
        }
    }
    out
}

/// A PowerShell single-quoted string.
fn ps(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Install {
        Install {
            dll_name: "portal.dll".into(),
            kind: DllKind::Isapi,
            machine: Machine::X64,
            virtual_dir: "/portal".into(),
            site: "Default Web Site".into(),
            pool: "Kallithea".into(),
            physical_path: "C:\\inetpub\\portal".into(),
            max_body_bytes: Some(10_000_000),
        }
    }

    #[test]
    fn bad_inputs_are_refused_with_the_reason() {
        type Change = fn(&mut Install);
        let cases: Vec<(Change, &str)> = vec![
            (|i| i.virtual_dir = "portal".into(), "must start with /"),
            (|i| i.virtual_dir = "/portal/".into(), "must not end with /"),
            (|i| i.virtual_dir = "/a/../b".into(), "without . or .."),
            (|i| i.virtual_dir = "/a'b".into(), "letters, digits"),
            (|i| i.site = " ".into(), "must not be empty"),
            (|i| i.pool = "a'b".into(), "must not contain quotes"),
            (
                |i| i.physical_path = "/srv/portal".into(),
                "absolute Windows path",
            ),
            (
                |i| i.physical_path = "portal".into(),
                "absolute Windows path",
            ),
            (|i| i.machine = Machine::Arm64, "ARM64"),
        ];
        for (change, why) in cases {
            let mut i = base();
            change(&mut i);
            let err = i.validate().unwrap_err().to_string();
            assert!(err.contains(why), "{err} lacks {why:?}");
        }
        assert!(base().validate().is_ok());
        let mut unc = base();
        unc.physical_path = "\\\\server\\share\\portal".into();
        assert!(unc.validate().is_ok());
    }

    #[test]
    fn limits_follow_the_configuration() {
        let mut i = base();
        assert!(i
            .web_config()
            .contains("maxAllowedContentLength=\"10000000\""));
        i.max_body_bytes = None;
        assert!(i
            .web_config()
            .contains("maxAllowedContentLength=\"4294967295\""));
        i.max_body_bytes = Some(u64::MAX);
        assert!(i
            .web_config()
            .contains("maxAllowedContentLength=\"4294967295\""));
    }

    #[test]
    fn quoting() {
        assert_eq!(ps("it's"), "'it''s'");
        assert_eq!(xml("a&b<\"c\">--d"), "a&amp;b&lt;&quot;c&quot;&gt;-&#45;d");
    }
}
