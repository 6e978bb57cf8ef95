//! No error-looking lines from a headless machine's graphics stack. Mesa's Vulkan drivers
//! (lavapipe included) probe Wayland while wgpu enumerates adapters, and libwayland prints
//! `error: XDG_RUNTIME_DIR is invalid or not set in the environment.` when the session has
//! no runtime directory, as on a server or in CI. Where there is neither that directory nor
//! a `WAYLAND_DISPLAY`, no Wayland compositor can be reached anyway, so the CLI points
//! `XDG_RUNTIME_DIR` at a private, empty directory of its own (`~/.cache/tandem/runtime`,
//! mode 0700) before any GPU call: the probe
//! then finds no socket and fails silently. A desktop session's variables are left alone.

/// Give the process an empty private runtime directory when the session has none. Call
/// first thing in `main`, before any thread starts.
pub(crate) fn headless_runtime_dir() {
    #[cfg(all(unix, not(target_vendor = "apple")))]
    {
        use std::os::unix::fs::PermissionsExt;
        let valid = std::env::var_os("XDG_RUNTIME_DIR")
            .is_some_and(|d| std::path::Path::new(&d).is_absolute());
        if valid || std::env::var_os("WAYLAND_DISPLAY").is_some_and(|d| !d.is_empty()) {
            return;
        }
        let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) else {
            return;
        };
        let dir = std::path::Path::new(&home).join(".cache/tandem/runtime");
        let made = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)));
        if made.is_ok() && dir.is_absolute() {
            // Single-threaded here (the first statement of main), so setting it is sound.
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
        }
    }
}
