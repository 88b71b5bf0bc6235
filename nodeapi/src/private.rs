//! Files and directories that only their owner may read: the lab's directory (node configs
//! hold TCP-MD5 passwords), admin sockets, captures. A path that already exists is never
//! followed through a symlink, and a file meant to be new is never an existing one, so a
//! node running as root cannot be talked into writing over someone else's file.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and missing parents) with mode 0700, or checks that an existing one is a
/// directory of ours that no one else can enter. It never changes an existing directory's
/// mode: pointed at `/tmp` by mistake, it refuses instead of closing it.
pub fn dir(dir: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is a symlink; refusing to keep private files behind it", dir.display()),
        )),
        Ok(m) if !m.is_dir() => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a directory", dir.display()),
        )),
        Ok(m) if m.uid() != nix::unistd::geteuid().as_raw() => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} belongs to uid {}, not to us; remove it or choose another directory", dir.display(), m.uid()),
        )),
        Ok(m) if m.mode() & 0o077 != 0 => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} has mode {:04o}, open to others; it must be private (chmod 700 {0}, or remove it)",
                dir.display(),
                m.mode() & 0o7777
            ),
        )),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new().recursive(true).mode(0o700).create(dir),
        Err(e) => Err(e),
    }
}

/// Creates `dir` with mode 0700 if it is missing; an existing directory is left as it is
/// (for a socket whose own mode and peer check protect it).
pub fn dir_if_missing(dir: &Path) -> io::Result<()> {
    match DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `data` to `path` with mode 0600 (also when the file existed with another mode),
/// never through a symlink.
pub fn write(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(data)
}

/// Creates `path` as a new file with mode 0600: fails if anything (a file, a symlink, even a
/// dangling one) is already there.
pub fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("router-private-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).expect("stat").mode() & 0o777
    }

    #[test]
    fn dir_is_created_0700_and_an_open_one_is_refused_not_changed() {
        let d = scratch("dir");
        dir(&d.join("a/b")).expect("create");
        assert_eq!(mode(&d.join("a/b")), 0o700);
        dir(&d.join("a/b")).expect("a private one is fine");
        std::fs::set_permissions(d.join("a/b"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let e = dir(&d.join("a/b")).expect_err("an open directory must be refused");
        assert!(e.to_string().contains("0755"), "{e}");
        assert_eq!(mode(&d.join("a/b")), 0o755, "must not change an existing directory");
        std::fs::remove_dir_all(&d).expect("clean up");
    }

    #[test]
    fn dir_refuses_a_symlink() {
        let d = scratch("dirlink");
        dir(&d).expect("create");
        std::os::unix::fs::symlink("/etc", d.join("l")).expect("symlink");
        let e = dir(&d.join("l")).expect_err("a symlink must be refused");
        assert!(e.to_string().contains("symlink"), "{e}");
        std::fs::remove_dir_all(&d).expect("clean up");
    }

    #[test]
    fn write_makes_an_existing_file_0600_and_does_not_follow_symlinks() {
        let d = scratch("write");
        dir(&d).expect("create");
        let f = d.join("node.toml");
        std::fs::write(&f, "old").expect("seed");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write(&f, b"password = \"s3cret\"").expect("write");
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read_to_string(&f).expect("read"), "password = \"s3cret\"");
        let target = d.join("target");
        std::fs::write(&target, "keep").expect("target");
        std::os::unix::fs::symlink(&target, d.join("link")).expect("symlink");
        assert!(write(&d.join("link"), b"x").is_err(), "wrote through a symlink");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep");
        std::fs::remove_dir_all(&d).expect("clean up");
    }

    #[test]
    fn create_new_refuses_existing_files_and_dangling_symlinks() {
        let d = scratch("new");
        dir(&d).expect("create");
        let f = d.join("a.pcap");
        drop(create_new(&f).expect("new file"));
        assert_eq!(mode(&f), 0o600);
        assert_eq!(create_new(&f).expect_err("exists").kind(), io::ErrorKind::AlreadyExists);
        std::os::unix::fs::symlink(d.join("nowhere"), d.join("dangling")).expect("symlink");
        assert!(create_new(&d.join("dangling")).is_err(), "followed a dangling symlink");
        assert!(!d.join("nowhere").exists());
        std::fs::remove_dir_all(&d).expect("clean up");
    }
}
