//! Start at login: the tray process registers itself with the platform's autostart (an XDG
//! autostart entry on Linux, a launch agent on macOS, the Run key on Windows) through the
//! `auto-launch` crate, started with [`HIDDEN_ARG`] so that a login brings up the tray only.

use std::path::{Path, PathBuf};

use crate::HIDDEN_ARG;

/// The autostart entry's name (`~/.config/autostart/k8s-tunnels.desktop` on Linux).
pub const APP_NAME: &str = "k8s-tunnels";

/// Why start at login could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum AutostartError {
    /// The program's path is not valid UTF-8, which an autostart entry cannot hold.
    #[error("the program path {} is not valid UTF-8", .0.display())]
    Path(PathBuf),
    /// The platform's autostart refused.
    #[error("cannot change the autostart entry")]
    Launcher(#[source] auto_launch::Error),
}

/// Starts `program` with [`HIDDEN_ARG`] at login (`enabled`), or not.
pub fn set(program: &Path, enabled: bool) -> Result<(), AutostartError> {
    set_entry(APP_NAME, program, enabled)
}

/// [`set`] for the entry `name` (tests use their own, never the app's).
fn set_entry(name: &str, program: &Path, enabled: bool) -> Result<(), AutostartError> {
    let path = program
        .to_str()
        .ok_or_else(|| AutostartError::Path(program.to_path_buf()))?;
    let launcher = auto_launch::AutoLaunchBuilder::new()
        .set_app_name(name)
        .set_app_path(&exec_path(path))
        .set_args(&[HIDDEN_ARG])
        // The user's own Run key (HKCU): an elevated process would otherwise write the
        // machine's (HKLM), starting the app for every user of the machine.
        .set_windows_enable_mode(auto_launch::WindowsEnableMode::CurrentUser)
        .build()
        .map_err(AutostartError::Launcher)?;
    if enabled {
        launcher.enable()
    } else {
        launcher.disable()
    }
    .map_err(AutostartError::Launcher)
}

/// The path as the `Exec=` key of a desktop entry needs it: auto-launch writes it verbatim, so
/// a path with a space or a reserved character is quoted (Desktop Entry spec, "The Exec key"),
/// and `%` (a field code there) doubled.
#[cfg(target_os = "linux")]
fn exec_path(path: &str) -> String {
    let plain = path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@".contains(c));
    if plain {
        return path.to_string();
    }
    let mut quoted = String::from("\"");
    for c in path.chars() {
        match c {
            '"' | '`' | '$' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            '%' => quoted.push_str("%%"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The path as the command line of a Run key value needs it: auto-launch writes
/// `<path> <args>` verbatim, and an unquoted path with a space (`C:\Program Files\…`) would
/// run `C:\Program` — or whatever someone put there. Windows paths cannot hold `"`.
#[cfg(windows)]
fn exec_path(path: &str) -> String {
    format!("\"{path}\"")
}

#[cfg(not(any(target_os = "linux", windows)))]
fn exec_path(path: &str) -> String {
    path.to_string()
}

#[cfg(all(test, windows))]
mod windows_tests {
    use super::*;

    /// The real Run key of the current user (under Wine: the prefix's registry), under an
    /// entry of this test's own.
    #[test]
    fn the_run_key_starts_the_quoted_tray_binary_hidden_and_is_removed() {
        const RUN: &str = r"Software\Microsoft\Windows\CurrentVersion\Run";
        let name = format!("k8s-tunnels-test-{}", std::process::id());
        let program = Path::new(r"C:\Program Files\k8s-tunnels\k8s-tunnels-desktop.exe");
        set_entry(&name, program, true).expect("enable");
        let value = windows_registry::CURRENT_USER
            .open(RUN)
            .and_then(|key| key.get_string(&name))
            .expect("the Run value");
        assert_eq!(
            value,
            r#""C:\Program Files\k8s-tunnels\k8s-tunnels-desktop.exe" --hidden"#
        );
        set_entry(&name, program, false).expect("disable");
        let gone = windows_registry::CURRENT_USER
            .open(RUN)
            .and_then(|key| key.get_string(&name));
        assert!(gone.is_err(), "the Run value is removed");
    }

    #[test]
    fn run_key_paths_are_always_quoted() {
        assert_eq!(
            exec_path(r"C:\Program Files\k8s-tunnels\k8s-tunnels-desktop.exe"),
            r#""C:\Program Files\k8s-tunnels\k8s-tunnels-desktop.exe""#
        );
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn exec_paths_are_quoted_only_when_they_need_it() {
        assert_eq!(
            exec_path("/usr/bin/k8s-tunnels-desktop"),
            "/usr/bin/k8s-tunnels-desktop"
        );
        assert_eq!(
            exec_path("/home/a b/$x\"%.AppImage"),
            r#""/home/a b/\$x\"%%.AppImage""#
        );
    }
}
