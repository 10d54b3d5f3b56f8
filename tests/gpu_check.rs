//! scripts/gpu-check.sh, the one command a lent GPU runs, end to end on the CPU at toy sizes: every
//! stage runs under its timeout, reports a JSON line, and the summary and the archive are written,
//! so the script cannot rot between leases.

use std::path::Path;
use std::process::Command;

#[test]
fn the_gpu_check_runs_every_stage_on_the_cpu_at_toy_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("gpu-out");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = Command::new("bash").arg(root.join("scripts/gpu-check.sh")).arg("--cpu-dry-run").arg(&out).env("SID2", env!("CARGO_BIN_EXE_sid2")).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "{stdout}\n{stderr}");
    let results: Vec<serde_json::Value> = std::fs::read_to_string(out.join("results.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let stage = |name: &str| results.iter().find(|r| r["stage"] == name).unwrap_or_else(|| panic!("stage {name} missing: {results:?}"));
    for name in ["env", "prepare-data", "peak-bf16", "peak-f32", "probe-stock-matmul-skewed-bf16", "probe-stock-conv3x3-bf16", "probe-stock-attention-bf16", "train-stock-k600_64", "train-stock-k600_64-m-below-4n", "train-stock-imagenet256", "real-train", "real-sample", "tune-minimal-stock-k600_64", "tune-balanced-stock-k600_64"] {
        assert_eq!(stage(name)["rc"], 0, "{name}: {}", std::fs::read_to_string(out.join(format!("{name}.log"))).unwrap_or_default());
    }
    let probe: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("probe-stock-conv3x3-f32.out")).unwrap()).unwrap();
    assert_eq!(probe["ok"], true, "{probe}");
    // The CPU compiles and tunes nothing; on a GPU the same line counts what a cold start does.
    let counts: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("tune-minimal-stock-k600_64.out")).unwrap()).unwrap();
    assert_eq!((counts["kernels_compiled"].as_u64(), counts["shapes_tuned"].as_u64()), (Some(0), Some(0)), "{counts}");
    assert!(out.join("samples/predictions.bin").is_file());
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("| real-train | ok |") && summary.contains("samples/s"), "{summary}");
    // Everything a device call brings back travels in one archive (the device tool returns few files).
    let listing = Command::new("tar").arg("-tJf").arg(out.join("gpu-check.tar.xz")).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("real-train.out") && listing.contains("samples/predictions.bin"), "{listing}");
}
