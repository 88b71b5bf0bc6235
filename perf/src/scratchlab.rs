//! A benchmark's own lab: its state in a private scratch directory, driven through the
//! `router` CLI as a user would drive it, and taken down with everything in it when dropped
//! (also when the benchmark fails half-way).

use anyhow::bail;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct ScratchLab {
    router: PathBuf,
    /// Where the lab keeps its state (`ROUTER_LAB_DIR`).
    base: PathBuf,
    /// The private directory the benchmark writes its files to; removed at the end.
    pub scratch: PathBuf,
    pub lab: lab::Lab,
}

impl ScratchLab {
    /// A lab named `name` (not up yet), with a new scratch directory named after `prefix`.
    pub fn new(router: &Path, name: &str, prefix: &str) -> anyhow::Result<ScratchLab> {
        let scratch = crate::scratch_dir(prefix)?;
        let base = scratch.join("labs");
        Ok(ScratchLab { router: router.to_path_buf(), lab: lab::Lab::new(name, &base)?, base, scratch })
    }

    /// `router ARGS` against this lab; its standard output.
    pub fn router(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.router)
            .env("ROUTER_LAB", &self.lab.name)
            .env("ROUTER_LAB_DIR", &self.base)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("router {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for ScratchLab {
    fn drop(&mut self) {
        let _ = self.router(&["lab", "down"]);
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}
