//! The run report in a real browser (Debian's headless Chromium): a tiny real run's report shows
//! every chart, its videos decode and have a duration, its images load, and the page logs no
//! console message; a screenshot is kept in target/report-screenshot.png. Then the report of
//! broken run folders: it renders what exists, says what is missing, and changes nothing but
//! report.html. `sid2 export` writes the PyTorch reference's layout.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ok, preset, s, shared, walk};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Headless Chromium with the flags this machine needs (no sandbox as root, no network calls).
fn chromium(profile: &Path) -> Command {
    let mut c = Command::new(CHROMIUM);
    c.args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]);
    c.arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// A tiny real run with validation, samples and an evaluation; returns its folder.
fn tiny_run(dir: &Path) -> PathBuf {
    let (data, run, config, videos) = (dir.join("data"), dir.join("run"), preset("tiny_video.toml"), shared().join("videos"));
    let small = ["--set", "data.size=16", "--set", "data.clips_per_video=1"];
    let mut args = vec!["prepare", "--config", s(&config), "--videos", s(&videos), "--out", s(&data)];
    args.extend(small);
    ok(&args);
    let mut args = vec!["train", "--run", s(&run), "--data", s(&data), "--val", s(&data), "--config", s(&config)];
    args.extend(small);
    args.extend(["--set", "train.total_samples=16", "--set", "train.checkpoint_every=8", "--set", "train.log_every=4", "--set", "train.val_every=8", "--set", "train.val_levels=3"]);
    ok(&args);
    let samples = dir.join("samples");
    ok(&["sample", "--run", s(&run), "--data", s(&data), "--count", "2", "--out", s(&samples), "--set", "sample.steps=2"]);
    ok(&["eval", "--pred", s(&samples.join("predictions.bin")), "--real", s(&samples.join("real.bin")), "--context", "5", "--run", s(&run)]);
    run
}

#[test]
fn the_report_of_a_real_run_renders_in_chromium() {
    assert!(Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing: scripts/install-deps.sh installs Debian's chromium");
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(tmp.path());
    let stdout = String::from_utf8(ok(&["report", "--run", s(&run)]).stdout).unwrap();
    let report = run.join("report.html");
    assert_eq!(stdout.trim(), s(&report));
    let html = std::fs::read_to_string(&report).unwrap();
    // Nothing is fetched: no external source, stylesheet or script (the SVGs' xmlns is a name).
    for fetch in ["src=\"http", "href=\"http", "<link", "<script", "url("] {
        assert!(!html.contains(fetch), "the page must not reach the network ({fetch})");
    }

    // A harness page loads the report in a frame and writes what it finds into its own DOM.
    let harness = tmp.path().join("harness.html");
    std::fs::write(&harness, HARNESS.replace("REPORT", &format!("file://{}", report.display()))).unwrap();
    let out = chromium(&tmp.path().join("profile"))
        .args(["--allow-file-access-from-files", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=20000", "--dump-dom"])
        .arg(format!("file://{}", harness.display()))
        .output()
        .unwrap();
    let (dom, log) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let result = dom.split("RESULT ").nth(1).and_then(|r| r.split("</pre>").next()).unwrap_or_else(|| panic!("no result in the DOM:\n{dom}\n{log}"));
    let result: serde_json::Value = serde_json::from_str(&result.replace("&quot;", "\"")).unwrap();
    // The curves and the evaluation's per-frame chart.
    assert_eq!(result["charts"].as_u64(), Some(pipeline::report::CHARTS as u64 + 1), "{result}");
    assert_eq!(result["missing_charts"].as_u64(), Some(0), "{result}");
    let durations = result["durations"].as_array().unwrap();
    assert_eq!(durations.len(), 2, "one comparison video per clip: {result}");
    assert!(durations.iter().all(|d| d.as_f64().unwrap() > 0.0), "every video decodes and has a duration: {result}");
    let images = result["images"].as_array().unwrap();
    assert!(!images.is_empty() && images.iter().all(|i| i.as_bool() == Some(true)), "{result}");
    // The report itself runs no script: any console message means something went wrong. (The
    // harness writes none either.)
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../report-screenshot.png");
    let out = chromium(&tmp.path().join("profile2")).args(["--window-size=1400,2400", &format!("--screenshot={}", shot.display())]).arg(format!("file://{}", report.display())).output().unwrap();
    assert!(out.status.success() && image::open(&shot).unwrap().width() == 1400, "{}", String::from_utf8_lossy(&out.stderr));
}

const HARNESS: &str = r#"<!DOCTYPE html><html><body>
<iframe id="report" src="REPORT" style="width:1400px;height:2400px"></iframe><pre id="out">pending</pre>
<script>
const frame = document.getElementById("report");
frame.addEventListener("load", async () => {
  const doc = frame.contentDocument;
  const duration = (v) => new Promise((done) => {
    if (v.readyState >= 1) return done(v.duration);
    v.addEventListener("loadedmetadata", () => done(v.duration));
    v.addEventListener("error", () => done(-1));
  });
  const durations = await Promise.all([...doc.querySelectorAll("video")].map(duration));
  const images = [...doc.querySelectorAll("img")].map((i) => i.complete && i.naturalWidth > 0);
  const charts = doc.querySelectorAll(".chart svg").length;
  const missing_charts = [...doc.querySelectorAll(".missing li")].filter((li) => li.textContent.startsWith("chart")).length;
  document.getElementById("out").textContent = "RESULT " + JSON.stringify({ durations, images, charts, missing_charts });
});
</script></body></html>"#;

#[test]
fn a_broken_run_folder_still_gets_a_report_and_nothing_else_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(tmp.path());
    // A killed run's half-written line, deleted sample files, and a folder with only a config.
    let metrics = run.join("metrics.jsonl");
    let mut text = std::fs::read_to_string(&metrics).unwrap();
    text.push_str("{\"kind\":\"train\",\"samp");
    std::fs::write(&metrics, text).unwrap();
    for e in std::fs::read_dir(tmp.path().join("samples")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "mp4" || x == "png") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let before = walk(&run);
    ok(&["report", "--run", s(&run)]);
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("the last line is cut short") && html.contains("sample files (compare-*.mp4, strip-*.png, samples.png) are missing"), "{html}");
    assert!(html.contains("<svg"), "the curves that exist are drawn");
    let mut after = walk(&run);
    after.retain(|(p, _)| !p.ends_with("report.html"));
    let mut before = before;
    before.retain(|(p, _)| !p.ends_with("report.html"));
    assert_eq!(after, before, "only report.html may change");

    let bare = tmp.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    std::fs::copy(run.join("config.toml"), bare.join("config.toml")).unwrap();
    ok(&["report", "--run", s(&bare)]);
    let html = std::fs::read_to_string(bare.join("report.html")).unwrap();
    assert!(html.contains("no metrics yet") && html.contains("checkpoints: none yet") && html.contains("samples: none written"), "{html}");
    assert_eq!(std::fs::read_dir(&bare).unwrap().count(), 2, "config.toml and report.html");
    let err = common::fails(&["report", "--run", s(&tmp.path().join("nowhere"))]);
    assert!(err.contains("nowhere: no run folder here"), "{err}");
}

#[test]
fn export_writes_the_torch_layout_with_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(tmp.path());
    let to = tmp.path().join("weights.safetensors");
    ok(&["export", "--run", s(&run), "--to", s(&to), "--check"]);
    let bytes = std::fs::read(&to).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    // Linear [out, in] (burn stores qkv as [32, 96]); norms as weight/bias; the config as JSON.
    assert_eq!(header["encoder.0.blocks.temporal.0.qkv.weight"]["shape"], serde_json::json!([96, 32]));
    assert!(header.get("encoder.0.blocks.res.0.norm1.weight").is_some() && header.get("encoder.0.blocks.res.0.norm1.gamma").is_none());
    let config: serde_json::Value = serde_json::from_str(header["__metadata__"]["config"].as_str().unwrap()).unwrap();
    assert_eq!(config["model"]["channels"], serde_json::json!([32, 64, 64]));
    assert!(tmp.path().join("weights.check.safetensors").is_file());
}

