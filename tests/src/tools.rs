//! Tools some tests need, installed by the tests themselves when missing:
//! `promtool` (from Debian's `prometheus` package, unpacked into the target
//! dir without touching the system).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A `promtool` to run: the one on PATH, else one unpacked from the
/// distribution's `prometheus` package into `target/tools/`.
pub fn promtool() -> Result<PathBuf> {
    if Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(PathBuf::from("promtool"));
    }
    let dir = crate::target_profile_dir()
        .and_then(|d| d.parent().map(|p| p.join("tools")))
        .unwrap_or_else(|| crate::workspace_root().join("target/tools"));
    let bin = dir.join("usr/bin/promtool");
    if bin.is_file() {
        return Ok(bin);
    }
    std::fs::create_dir_all(&dir)?;
    // `apt-get download` needs no root and installs nothing.
    let out = Command::new("apt-get")
        .args(["download", "prometheus"])
        .current_dir(&dir)
        .output()
        .context("run apt-get download prometheus (Debian/Ubuntu)")?;
    if !out.status.success() {
        bail!(
            "cannot download the prometheus package for promtool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let deb = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("the downloaded .deb")?;
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&dir)
        .status()
        .context("run dpkg-deb -x")?;
    if !status.success() || !bin.is_file() {
        bail!("unpacking {} gave no promtool", deb.display());
    }
    let _ = std::fs::remove_file(&deb);
    Ok(bin)
}
