//! Several samples per clip on real clips: the first is the single-sample prediction, `eval`
//! scores the best of them, their diversity and the moving pixels, and bad counts are refused.

mod common;

use common::{fails, ok, s, tiny_video_run};
use pipeline::eval::EvalReport;

#[test]
fn several_samples_per_clip_are_scored_as_best_of_n() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = tiny_video_run(tmp.path());
    let sample = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["sample", "--run", s(&run), "--data", s(&data), "--count", "2", "--out", s(out), "--set", "sample.steps=3"];
        args.extend_from_slice(extra);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let (one, three) = (tmp.path().join("one"), tmp.path().join("three"));
    let run_args = |v: Vec<String>| ok(&v.iter().map(String::as_str).collect::<Vec<_>>());
    run_args(sample(&one, &[]));
    run_args(sample(&three, &["--samples-per-clip", "3"]));
    let read = |p: &std::path::Path| video_io::clips::Clips::read(&video_io::shard::Shard::open(&p.join("predictions.bin")).unwrap());
    let (single, several) = (read(&one), read(&three));
    assert_eq!((single.len(), several.len()), (2, 6));
    // Clip i's first sample is record 3i, and it is the single-sample prediction.
    for i in 0..2 {
        assert_eq!(several.select(3 * i..3 * i + 1).pixels, single.select(i..i + 1).pixels, "clip {i}");
        assert_ne!(several.select(3 * i + 1..3 * i + 2).pixels, single.select(i..i + 1).pixels, "clip {i}: the samples differ");
    }
    let report_path = three.join("eval.json");
    let (pred, real) = (three.join("predictions.bin"), three.join("real.bin"));
    let out = ok(&["eval", "--pred", s(&pred), "--real", s(&real), "--context", "5", "--out", s(&report_path)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("best of 3 per clip") && text.contains("diversity") && text.contains("moving pixels"), "{text}");
    let report: EvalReport = serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!((report.clips, report.samples_per_clip), (2, 3));
    let best = report.best_of_n.as_ref().unwrap();
    assert!(best.mean_psnr_db >= report.mean_psnr_db && best.mean_ssim >= report.mean_ssim);
    assert!(report.diversity.as_ref().unwrap().pixel_std > 0.0);
    assert!(three.join("eval.png").is_file(), "the per-frame chart");
    // Counts that cannot be: refused, naming the flag, nothing written.
    let bad = tmp.path().join("bad");
    let err = fails(&sample(&bad, &["--samples-per-clip", "0"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("--samples-per-clip") && err.trim().lines().count() == 1, "{err}");
    assert!(!bad.exists());
    // Six predictions do not divide among the four clips of the prepared shard.
    let err = fails(&["eval", "--pred", s(&pred), "--real", s(&data.join("shard-00000.bin")), "--context", "5"]);
    assert!(err.contains("do not pair up"), "{err}");
}
