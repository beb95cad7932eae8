//! Can `LD_PRELOAD` reach a program? The loader ignores it for statically
//! linked programs and in secure-execution mode (setuid, setgid, file
//! capabilities), and cannot load a library of another ELF class or
//! machine: each of those would run the program silently unsteered.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Finds `program` the way `execvp` does.
pub fn resolve(program: &OsStr) -> Result<PathBuf, String> {
    if program.as_bytes().contains(&b'/') {
        let p = PathBuf::from(program);
        return if p.exists() {
            Ok(p)
        } else {
            Err("no such file".to_string())
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .ok_or_else(|| "command not found in PATH".to_string())
}

/// `Ok` if the loader will preload the library into `path`, else why not.
pub fn reachable(path: &Path) -> Result<(), String> {
    reachable_depth(path, 0)
}

fn reachable_depth(path: &Path, depth: u32) -> Result<(), String> {
    let meta = path.metadata().map_err(|e| e.to_string())?;
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mode = meta.mode();
    if mode & 0o4000 != 0 && meta.uid() != uid {
        return Err(format!(
            "it is setuid (owner uid {}), so the loader ignores LD_PRELOAD",
            meta.uid()
        ));
    }
    if mode & 0o2000 != 0 && mode & 0o010 != 0 && meta.gid() != gid {
        return Err(format!(
            "it is setgid (group gid {}), so the loader ignores LD_PRELOAD",
            meta.gid()
        ));
    }
    if uid != 0 && has_file_capabilities(path) {
        return Err("it has file capabilities, so the loader ignores LD_PRELOAD".to_string());
    }
    let mut head = vec![0u8; 4096];
    let n = File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| e.to_string())?;
    head.truncate(n);
    if head.starts_with(b"#!") {
        if depth > 3 {
            return Err("too many nested interpreters".to_string());
        }
        let line = head[2..].split(|&b| b == b'\n').next().unwrap_or(&[]);
        let interp = line
            .split(|b| b.is_ascii_whitespace())
            .find(|t| !t.is_empty())
            .ok_or_else(|| "empty #! line".to_string())?;
        let interp = Path::new(OsStr::from_bytes(interp));
        return reachable_depth(interp, depth + 1)
            .map_err(|e| format!("its interpreter {}: {e}", interp.display()));
    }
    elf_check(&head)
}

fn has_file_capabilities(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: both strings are NUL-terminated; a null buffer with size 0
    // asks only for the attribute's size.
    let r = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    r > 0
}

const PT_INTERP: u32 = 3;

fn elf_check(h: &[u8]) -> Result<(), String> {
    if h.len() < 64 || &h[..4] != b"\x7fELF" {
        // Not ELF and not a script: exec will fail on its own.
        return Ok(());
    }
    let is64 = h[4] == 2;
    let le = h[5] == 1;
    let u16_at = |o: usize| -> u16 {
        let b = [h[o], h[o + 1]];
        if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }
    };
    let u32_at = |o: usize| -> Option<u32> {
        let b: [u8; 4] = h.get(o..o + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let u64_at = |o: usize| -> Option<u64> {
        let b: [u8; 8] = h.get(o..o + 8)?.try_into().ok()?;
        Some(if le {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    let ours64 = cfg!(target_pointer_width = "64");
    if is64 != ours64 {
        return Err(format!(
            "it is a {}-bit program and the library is {}-bit",
            if is64 { 64 } else { 32 },
            if ours64 { 64 } else { 32 }
        ));
    }
    let machine = u16_at(18);
    let ours = if cfg!(target_arch = "x86_64") {
        Some(62)
    } else if cfg!(target_arch = "aarch64") {
        Some(183)
    } else {
        None
    };
    if let Some(m) = ours {
        if machine != m {
            return Err(format!(
                "it is built for another machine (ELF e_machine {machine})"
            ));
        }
    }
    let (phoff, phentsize, phnum) = if is64 {
        (
            u64_at(0x20).unwrap_or(0) as usize,
            u16_at(0x36) as usize,
            u16_at(0x38) as usize,
        )
    } else {
        (
            u32_at(0x1c).unwrap_or(0) as usize,
            u16_at(0x2a) as usize,
            u16_at(0x2c) as usize,
        )
    };
    let mut saw_all = true;
    for i in 0..phnum {
        match u32_at(phoff + i * phentsize) {
            Some(PT_INTERP) => return Ok(()),
            Some(_) => {}
            None => saw_all = false,
        }
    }
    if saw_all {
        Err(
            "it is statically linked (no ELF interpreter), so LD_PRELOAD cannot reach it"
                .to_string(),
        )
    } else {
        // Program headers beyond what was read: assume dynamic rather than
        // refuse a program we could not fully inspect.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_program_is_reachable() {
        assert_eq!(reachable(Path::new("/bin/sh")), Ok(()));
    }

    #[test]
    fn resolve_uses_path() {
        assert!(resolve(OsStr::new("sh")).unwrap().is_absolute());
        assert!(resolve(OsStr::new("no-such-program-ldsaref")).is_err());
    }
}
