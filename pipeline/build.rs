//! Records the commit the binary is built from (`SID2_COMMIT`, shown in run reports).
fn main() {
    let describe = std::process::Command::new("git").args(["describe", "--always", "--dirty"]).output();
    if let Ok(out) = describe
        && out.status.success()
    {
        println!("cargo:rustc-env=SID2_COMMIT={}", String::from_utf8_lossy(&out.stdout).trim());
    }
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/index");
}
