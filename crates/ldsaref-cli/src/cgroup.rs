//! The cgroup v2 hierarchy, as the cgroup backend uses it: where it is
//! mounted, one cgroup per profile (`ldsaref.slice/ldsaref-P.slice`, the
//! names systemd gives slices), and moving this process into one.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where `nft` resolves `socket cgroupv2` paths from.
const NFT_CGROUP_BASE: &str = "/sys/fs/cgroup";

/// The proc inode of the initial cgroup namespace (`PROC_CGROUP_INIT_INO`
/// in the kernel), as `/proc/self/ns/cgroup` names it.
const INITIAL_CGROUP_NS: &str = "cgroup:[4026531835]";

/// The cgroup2 file system of this mount namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup2 {
    /// Its mount point, e.g. `/sys/fs/cgroup` or `/sys/fs/cgroup/unified`.
    pub mount: PathBuf,
    /// Mounted by ldsaref itself, in a mount namespace of its own (see
    /// [`Cgroup2::find`]).
    pub private: bool,
}

impl Cgroup2 {
    /// Finds the cgroup2 mount in `/proc/self/mountinfo`. When there is
    /// none — `ip netns exec` runs its command in a mount namespace of its
    /// own with a fresh `/sys`, where `/sys/fs/cgroup` is an empty sysfs
    /// directory — mounts one: this process moves into a mount namespace
    /// of its own (nothing it mounts propagates anywhere) and mounts the
    /// cgroup2 hierarchy on `/sys/fs/cgroup` there, where `nft`, its
    /// child, resolves `socket cgroupv2` paths. The cgroups are the
    /// machine's (same ids as seen from the host). Only in the initial
    /// cgroup namespace: in another, the mount's root would not be the
    /// hierarchy's and the table's levels would be wrong.
    pub fn find() -> Result<Cgroup2, String> {
        let text = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
        if let Some(cg) = find_in(&text) {
            return Ok(cg);
        }
        mount_private().map_err(|e| {
            format!(
                "no cgroup2 file system is mounted here (none in /proc/self/mountinfo; \
                 `ip netns exec` mounts a fresh /sys without it), and ldsaref cannot mount \
                 one of its own: {e}; `nsenter --net=/run/netns/NAME` enters a network \
                 namespace keeping /sys"
            )
        })
    }

    /// Unmounts the view [`Cgroup2::find`] mounted, if it did (before
    /// `exec`, so that the program sees the mounts it would have seen).
    pub fn leave(&self) {
        if self.private {
            if let Ok(c) = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(
                self.mount.as_os_str(),
            )) {
                // SAFETY: a NUL-terminated path; umount2 reads nothing else.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }

    /// The prefix of cgroup paths in the table: the mount point relative
    /// to `/sys/fs/cgroup`, where `nft` looks them up (`unified/` on a
    /// hybrid hierarchy, empty on a unified one).
    pub fn nft_prefix(&self) -> Result<String, String> {
        nft_prefix(&self.mount)
    }

    /// The directory of a cgroup given relative to the root.
    pub fn dir(&self, rel: &str) -> PathBuf {
        self.mount.join(rel)
    }

    /// Creates the cgroup (and its parents) if needed; its id (the
    /// directory's inode, which `nft` records when the rule loads).
    pub fn ensure(&self, rel: &str) -> Result<u64, String> {
        let dir = self.dir(rel);
        fs::create_dir_all(&dir)
            .map_err(|e| format!("{}: cannot create the cgroup: {e}", dir.display()))?;
        self.id(rel)
            .ok_or_else(|| format!("{}: the cgroup vanished", dir.display()))
    }

    /// The cgroup's id, if it exists.
    pub fn id(&self, rel: &str) -> Option<u64> {
        fs::metadata(self.dir(rel)).ok().map(|m| m.ino())
    }

    /// Removes the cgroup `rel` and its descendants that have no process;
    /// the ones left (still in use) are returned.
    pub fn remove_empty(&self, rel: &str) -> Vec<PathBuf> {
        let mut busy = Vec::new();
        remove_tree(&self.dir(rel), &mut busy);
        busy
    }

    /// The processes in the cgroup `rel` or below that share this
    /// process's network namespace.
    pub fn processes_in_this_netns(&self, rel: &str) -> Vec<u32> {
        let netns = |pid: &str| {
            fs::metadata(format!("/proc/{pid}/ns/net"))
                .ok()
                .map(|m| m.ino())
        };
        let ours = netns("self");
        let mut pids = Vec::new();
        collect_procs(&self.dir(rel), &mut pids);
        pids.retain(|p| ours.is_some() && netns(&p.to_string()) == ours);
        pids
    }

    /// The names of the cgroups right below `rel`.
    pub fn children(&self, rel: &str) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.dir(rel)) else {
            return Vec::new();
        };
        let mut v: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Moves this process into the cgroup `rel`.
    pub fn join(&self, rel: &str) -> Result<(), String> {
        let procs = self.dir(rel).join("cgroup.procs");
        fs::write(&procs, format!("{}\n", std::process::id())).map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::PermissionDenied {
                " (it takes root, or a cgroup delegated to this user)"
            } else {
                ""
            };
            format!(
                "{}: cannot move into the cgroup{hint}: {e}",
                procs.display()
            )
        })
    }
}

/// `unshare(CLONE_NEWNS)`, every mount a slave (nothing mounted here goes
/// back), then cgroup2 on `/sys/fs/cgroup`.
fn mount_private() -> Result<Cgroup2, String> {
    let ns =
        fs::read_link("/proc/self/ns/cgroup").map_err(|e| format!("/proc/self/ns/cgroup: {e}"))?;
    if ns.as_os_str() != INITIAL_CGROUP_NS {
        return Err(format!(
            "this process is in a cgroup namespace ({}), whose root is not the hierarchy's",
            ns.display()
        ));
    }
    let base = Path::new(NFT_CGROUP_BASE);
    let empty = fs::read_dir(base)
        .map_err(|e| format!("{NFT_CGROUP_BASE}: {e}"))?
        .next()
        .is_none();
    if !empty {
        return Err(format!("{NFT_CGROUP_BASE} is not empty"));
    }
    let errno = |what: &str| format!("{what}: {}", io::Error::last_os_error());
    // SAFETY: unshare takes flags only. A multithreaded process gets
    // EINVAL, not undefined behaviour: `apply` finds the view before it
    // starts any thread, and later calls read it from mountinfo.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(errno("unshare(CLONE_NEWNS)"));
    }
    // SAFETY: NUL-terminated strings, null where mount(2) allows it.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(errno("making / a slave mount"));
    }
    // SAFETY: as above.
    let r = unsafe {
        libc::mount(
            c"cgroup2".as_ptr(),
            c"/sys/fs/cgroup".as_ptr(),
            c"cgroup2".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(errno("mount -t cgroup2 cgroup2 /sys/fs/cgroup"));
    }
    Ok(Cgroup2 {
        mount: base.to_path_buf(),
        private: true,
    })
}

fn collect_procs(dir: &Path, pids: &mut Vec<u32>) {
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_procs(&e.path(), pids);
        }
    }
}

fn remove_tree(dir: &Path, busy: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path(), busy);
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(_) => busy.push(dir.to_path_buf()),
    }
}

/// The first cgroup2 mount of the whole hierarchy (root `/`) in a
/// mountinfo text.
fn find_in(mountinfo: &str) -> Option<Cgroup2> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mut fields = left.split(' ');
        let root = fields.nth(3)?;
        let mount = fields.next()?;
        (root == "/").then(|| Cgroup2 {
            mount: PathBuf::from(unescape(mount)),
            private: false,
        })
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn nft_prefix(mount: &Path) -> Result<String, String> {
    let rel = mount.strip_prefix(NFT_CGROUP_BASE).map_err(|_| {
        format!(
            "cgroup2 is mounted on {}, outside {NFT_CGROUP_BASE} where nft looks cgroups up",
            mount.display()
        )
    })?;
    let rel = rel.to_string_lossy();
    Ok(if rel.is_empty() {
        String::new()
    } else {
        format!("{rel}/")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 31 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 25 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
41 35 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 35 0:39 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
";

    #[test]
    fn finds_the_hybrid_mount() {
        let cg = find_in(HYBRID).unwrap();
        assert_eq!(cg.mount, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(cg.nft_prefix().unwrap(), "unified/");
        assert_eq!(
            cg.dir("ldsaref.slice/ldsaref-c1.slice"),
            PathBuf::from("/sys/fs/cgroup/unified/ldsaref.slice/ldsaref-c1.slice")
        );
    }

    #[test]
    fn finds_the_unified_mount() {
        let text = "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        let cg = find_in(text).unwrap();
        assert_eq!(cg.nft_prefix().unwrap(), "");
    }

    #[test]
    fn none_inside_ip_netns_exec_or_a_cgroup_namespace_root() {
        let text = "25 31 0:23 / /sys rw - sysfs sysfs rw\n";
        assert_eq!(find_in(text), None);
        let text = "41 35 0:38 /user.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(find_in(text), None);
    }

    #[test]
    fn elsewhere_is_refused() {
        let text = "41 35 0:38 / /mnt/cg\\040x rw - cgroup2 none rw\n";
        let cg = find_in(text).unwrap();
        assert_eq!(cg.mount, PathBuf::from("/mnt/cg x"));
        let e = cg.nft_prefix().unwrap_err();
        assert!(e.contains("outside /sys/fs/cgroup"), "{e}");
    }
}
