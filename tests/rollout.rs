//! Long rollouts on real clips: windows predicted one after another, the first equal to an
//! ordinary prediction, scored against the real video as far as it goes.

mod common;

use common::{fails, frames_per_ffprobe, ok, s, shared, tiny_video_run};
use pipeline::eval::EvalReport;
use video_io::clips::Clips;
use video_io::shard::Shard;

#[test]
fn a_rollout_starts_as_an_ordinary_prediction_and_is_scored_where_the_video_goes() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = tiny_video_run(tmp.path());
    let videos = shared().join("videos");
    let (one, roll) = (tmp.path().join("one"), tmp.path().join("roll"));
    let sample = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["sample", "--run", s(&run), "--data", s(&data), "--count", "2", "--out", s(out), "--set", "sample.steps=3"];
        args.extend_from_slice(extra);
        ok(&args)
    };
    sample(&one, &[]);
    let out = sample(&roll, &["--frames", "30"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("rollouts of 30 frames in 3 windows"), "{}", String::from_utf8_lossy(&out.stdout));
    let read = |p: std::path::PathBuf| Clips::read(&Shard::open(&p).unwrap());
    let (single, long) = (read(one.join("predictions.bin")), read(roll.join("predictions.bin")));
    assert_eq!(long.layout().frames, 30);
    assert_eq!(long.pixels.slice(ndarray::s![.., ..16, .., .., ..]), single.pixels.view(), "the first window is the ordinary prediction");
    assert_eq!(frames_per_ffprobe(&roll.join("clip-000.mp4")), 30);
    // The prepared clips end at 16 frames: only those are scored, and eval says so.
    let (pred, real) = (roll.join("predictions.bin"), roll.join("real.bin"));
    let out = ok(&["eval", "--pred", s(&pred), "--real", s(&real), "--context", "5", "--out", s(&roll.join("eval.json"))]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("scoring frames 6-16"), "{}", String::from_utf8_lossy(&out.stdout));

    // From a video long enough, the real frames cover the whole rollout.
    let from_video = tmp.path().join("video");
    ok(&["sample", "--run", s(&run), "--video", s(&videos.join("demo.mp4")), "--count", "1", "--frames", "30", "--out", s(&from_video), "--set", "sample.steps=2"]);
    let scores = from_video.join("eval.json");
    ok(&["eval", "--pred", s(&from_video.join("predictions.bin")), "--real", s(&from_video.join("real.bin")), "--context", "5", "--out", s(&scores)]);
    let report: EvalReport = serde_json::from_str(&std::fs::read_to_string(&scores).unwrap()).unwrap();
    assert_eq!(report.per_frame.iter().map(|q| q.frame).collect::<Vec<_>>(), (5..30).collect::<Vec<_>>());

    // A rollout no longer than the context is refused before anything is written.
    let bad = tmp.path().join("bad");
    let err = fails(&["sample", "--run", s(&run), "--data", s(&data), "--frames", "5", "--out", s(&bad)]);
    assert!(err.contains("--frames 5") && err.contains("context frames"), "{err}");
    assert!(!bad.exists());
}
