//! File inputs (beacon logs, enrich files) are read only from the directory the minion's config
//! names (`input_dir`): the name is checked lexically (`overlord_core::security::input_candidate`),
//! canonicalised (symlinks resolved) and checked again to lie inside the canonical directory
//! (`within`); only regular files, their size checked against the module's limit before a byte
//! is read; opened non-blocking so a FIFO swapped in cannot hang the minion, and re-checked on
//! the open handle. Errors name the input and the reason, never the file's content.

use crate::module::{ModuleCtx, ModuleError};
use overlord_core::security::{InputError, clip, input_candidate, within};
use std::path::PathBuf;

/// An input that passed every check.
#[derive(Debug)]
pub struct CheckedInput {
    /// Canonical path inside the input directory.
    pub path: PathBuf,
    /// The name as the job gave it (clipped), for findings and errors.
    pub name: String,
    pub size: u64,
    pub file: std::fs::File,
}

fn io_reason(e: &std::io::Error) -> String {
    // The OS's words for the failure ("No such file or directory"), never file content.
    e.kind().to_string()
}

/// Checks and opens input `name` for a module that reads at most `limit` bytes.
pub fn open_input(ctx: &ModuleCtx, name: &str, limit: u64) -> Result<CheckedInput, ModuleError> {
    let invalid = |e: InputError| ModuleError::Invalid(e.to_string());
    let root = ctx
        .input_dir
        .as_ref()
        .ok_or(invalid(InputError::Disabled))?;
    let shown = clip(name, 128);
    let candidate = input_candidate(root, name).map_err(invalid)?;
    let canon = std::fs::canonicalize(&candidate)
        .map_err(|e| invalid(InputError::Unreadable(shown.clone(), io_reason(&e))))?;
    if !within(root, &canon) {
        return Err(invalid(InputError::Escapes(shown)));
    }
    let meta = std::fs::metadata(&canon)
        .map_err(|e| invalid(InputError::Unreadable(shown.clone(), io_reason(&e))))?;
    if !meta.is_file() {
        return Err(invalid(InputError::NotRegular(shown)));
    }
    if meta.len() > limit {
        return Err(invalid(InputError::TooLarge {
            name: shown,
            size: meta.len(),
            limit,
        }));
    }
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK | O_NOFOLLOW: a FIFO swapped in after the check does not block the open,
        // a symlink swapped in is not followed.
        o.custom_flags(0o4000 | 0o400000);
    }
    let file = o
        .open(&canon)
        .map_err(|e| invalid(InputError::Unreadable(shown.clone(), io_reason(&e))))?;
    let m2 = file
        .metadata()
        .map_err(|e| invalid(InputError::Unreadable(shown.clone(), io_reason(&e))))?;
    if !m2.is_file() {
        return Err(invalid(InputError::NotRegular(shown)));
    }
    if m2.len() > limit {
        return Err(invalid(InputError::TooLarge {
            name: shown,
            size: m2.len(),
            limit,
        }));
    }
    Ok(CheckedInput {
        path: canon,
        name: shown,
        size: m2.len(),
        file,
    })
}

/// A directory input (a Zeek log directory a live `beacon` task follows) that passed the checks.
#[derive(Debug)]
pub struct CheckedDir {
    /// Canonical path strictly inside the input directory.
    pub path: PathBuf,
    /// The name as the job gave it (clipped).
    pub name: String,
}

/// Checks directory input `name`: lexically, then canonicalised (symlinks resolved) it must lie
/// strictly inside the input directory and be a directory. A missing directory is a transient
/// `ModuleError::Failed` (it may exist on another minion); every other refusal is `Invalid`.
pub fn open_dir(ctx: &ModuleCtx, name: &str) -> Result<CheckedDir, ModuleError> {
    let invalid = |e: InputError| ModuleError::Invalid(e.to_string());
    let root = ctx
        .input_dir
        .as_ref()
        .ok_or(invalid(InputError::Disabled))?;
    let shown = clip(name, 128);
    let candidate = input_candidate(root, name).map_err(invalid)?;
    let canon = match std::fs::canonicalize(&candidate) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ModuleError::Failed(format!(
                "input directory {shown:?} does not exist on minion {}",
                ctx.minion_id
            )));
        }
        Err(e) => return Err(invalid(InputError::Unreadable(shown, io_reason(&e)))),
    };
    if !within(root, &canon) {
        return Err(invalid(InputError::Escapes(shown)));
    }
    let meta = std::fs::metadata(&canon)
        .map_err(|e| invalid(InputError::Unreadable(shown.clone(), io_reason(&e))))?;
    if !meta.is_dir() {
        return Err(ModuleError::Invalid(format!(
            "input {shown:?} is not a directory"
        )));
    }
    Ok(CheckedDir {
        path: canon,
        name: shown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlord_core::scope::Scope;

    fn ctx(dir: Option<PathBuf>) -> ModuleCtx {
        ModuleCtx {
            minion_id: "m".into(),
            provider: "p".into(),
            scope: Scope::loopback(),
            input_dir: dir.map(|d| std::fs::canonicalize(d).unwrap()),
        }
    }

    #[test]
    fn only_regular_files_inside_the_input_dir_within_the_limit() {
        let base = tempfile::tempdir().unwrap();
        let inputs = base.path().join("inputs");
        std::fs::create_dir(&inputs).unwrap();
        std::fs::write(inputs.join("ok.log"), "secret line\n").unwrap();
        std::fs::write(base.path().join("outside.txt"), "TOP SECRET CONTENT").unwrap();
        std::os::unix::fs::symlink(base.path().join("outside.txt"), inputs.join("link")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", inputs.join("zero")).unwrap();
        let fifo = inputs.join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let c = ctx(Some(inputs.clone()));
        let ok = open_input(&c, "ok.log", 1 << 20).unwrap();
        assert_eq!(ok.size, 12);
        let err = |name: &str, limit: u64| open_input(&c, name, limit).unwrap_err().to_string();
        for (name, want) in [
            ("../outside.txt", "leaves"),
            ("link", "leaves"),
            ("zero", "leaves"),
            ("/dev/zero", "not a relative path"),
            ("/etc/shadow", "not a relative path"),
            ("fifo", "not a regular file"),
            ("missing", "cannot be opened"),
        ] {
            let e = err(name, 1 << 20);
            assert!(e.contains(want), "{name}: {e}");
            assert!(!e.contains("SECRET"), "{e}");
        }
        let e = err("ok.log", 4);
        assert!(e.contains("12 bytes, over this module's limit of 4"), "{e}");
        let e = open_input(&ctx(None), "ok.log", 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("input_dir"), "{e}");
    }

    #[test]
    fn directory_inputs_stay_strictly_inside_the_input_dir() {
        let base = tempfile::tempdir().unwrap();
        let inputs = base.path().join("inputs");
        std::fs::create_dir_all(inputs.join("zeek")).unwrap();
        std::fs::write(inputs.join("file.log"), "x").unwrap();
        std::os::unix::fs::symlink(base.path(), inputs.join("up")).unwrap();
        let c = ctx(Some(inputs.clone()));
        let d = open_dir(&c, "zeek").unwrap();
        assert_eq!(d.path, std::fs::canonicalize(inputs.join("zeek")).unwrap());
        for (name, want) in [
            ("..", "leaves"),
            ("up", "leaves"),
            (".", "not a relative path"),
            ("/etc", "not a relative path"),
            ("file.log", "not a directory"),
        ] {
            let e = open_dir(&c, name).unwrap_err();
            assert!(e.permanent() && e.to_string().contains(want), "{name}: {e}");
        }
        // missing here: maybe present on another minion (a retry may go there)
        let e = open_dir(&c, "nope").unwrap_err();
        assert!(!e.permanent(), "{e}");
        assert!(open_dir(&ctx(None), "zeek").unwrap_err().permanent());
    }
}
