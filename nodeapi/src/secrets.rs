//! Secrets laid out as Kubernetes mounts a secret volume: a directory per secret under one
//! root, a file per key holding the value. Calico's `BGPPeer` keeps its TCP-MD5 password in a
//! secret (`password.secretKeyRef`); a node with etcd has no Kubernetes API to ask, so it reads
//! `<secrets_dir>/<name>/<key>`, which is where a secret mounted at `<secrets_dir>/<name>` puts
//! it, and where an operator without Kubernetes writes it.

use std::io;
use std::path::{Path, PathBuf};

/// The longest TCP-MD5 key Linux takes (`TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_PASSWORD: usize = 80;

/// Kubernetes' rule for a secret's name (a DNS subdomain): it never names a path outside the
/// root.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 253
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Kubernetes' rule for a key of a secret: letters, digits, `-`, `_` and `.`, not `.` or `..`.
pub fn valid_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
}

/// Where key `key` of secret `name` lives under `dir`.
pub fn path(dir: &Path, name: &str, key: &str) -> Result<PathBuf, String> {
    if !valid_name(name) {
        return Err(format!("{name:?} is not a secret name (lower-case letters, digits, '-' and '.')"));
    }
    if !valid_key(key) {
        return Err(format!("{key:?} is not a secret key (letters, digits, '-', '_' and '.')"));
    }
    Ok(dir.join(name).join(key))
}

/// The TCP-MD5 password in key `key` of secret `name`. One trailing newline is not part of it
/// (`echo pw > file` writes one; a password cannot end in one anyway, BIRD's config cannot
/// hold it). Symlinks are followed: Kubernetes' own secret volumes are made of them.
pub fn read_password(dir: &Path, name: &str, key: &str) -> Result<String, String> {
    let p = path(dir, name, key)?;
    let bytes = std::fs::read(&p).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!("{} does not exist", p.display()),
        _ => format!("{}: {e}", p.display()),
    })?;
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let pw = String::from_utf8(bytes.to_vec()).map_err(|_| format!("{} is not UTF-8 text", p.display()))?;
    if pw.is_empty() {
        return Err(format!("{} is empty", p.display()));
    }
    if pw.len() > MAX_PASSWORD {
        return Err(format!("{} holds {} bytes; a TCP-MD5 password is at most {MAX_PASSWORD}", p.display(), pw.len()));
    }
    Ok(pw)
}

/// Writes `value` as key `key` of secret `name` under `dir`, everything private (0700
/// directories, a 0600 file).
pub fn write(dir: &Path, name: &str, key: &str, value: &str) -> io::Result<()> {
    let p = path(dir, name, key).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    crate::private::dir(&dir.join(name))?;
    crate::private::write(&p, value.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("router-secrets-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn names_and_keys_never_leave_the_directory() {
        for bad in ["", "..", "a/b", "/etc", "A", "-a", "a-"] {
            assert!(path(Path::new("/s"), bad, "k").is_err(), "name {bad:?}");
        }
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(path(Path::new("/s"), "bgp", bad).is_err(), "key {bad:?}");
        }
        assert_eq!(
            path(Path::new("/s"), "bgp-secrets", "rack1.tor_pw").expect("ok"),
            Path::new("/s/bgp-secrets/rack1.tor_pw")
        );
    }

    #[test]
    fn a_password_is_read_as_written_without_one_trailing_newline() {
        let d = scratch("read");
        write(&d, "bgp", "tor", "s3cret\n").expect("write");
        assert_eq!(read_password(&d, "bgp", "tor"), Ok("s3cret".into()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("bgp/tor")).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        write(&d, "bgp", "tor", "two\n\n").expect("write");
        assert_eq!(read_password(&d, "bgp", "tor"), Ok("two\n".into()), "only one newline goes");
        let e = read_password(&d, "bgp", "other").expect_err("missing");
        assert!(e.contains("does not exist"), "{e}");
        write(&d, "bgp", "long", &"x".repeat(81)).expect("write");
        assert!(read_password(&d, "bgp", "long").expect_err("too long").contains("at most 80"));
        write(&d, "bgp", "empty", "\n").expect("write");
        assert!(read_password(&d, "bgp", "empty").expect_err("empty").contains("empty"));
        std::fs::remove_dir_all(&d).expect("clean up");
    }
}
