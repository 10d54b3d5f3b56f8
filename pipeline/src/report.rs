//! `sid2 report`: one self-contained HTML page per run (`RUN/report.html`, no network): the
//! curves of `metrics.jsonl` as SVG charts, the newest samples (comparison MP4s in `<video>`
//! elements and PNG strips, embedded as data URIs), the newest evaluation, the resolved config
//! with parameter and FLOP counts, the hardware and commit of the training calls, and the
//! checkpoints kept. It reads the run folder and writes only `report.html`, atomically; whatever
//! is missing (no metrics yet, a half-written line, deleted sample files) is said on the page.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use base64::Engine;
use model3d::network::cost;

use crate::config::RunConfig;
use crate::eval::EvalReport;
use crate::globals::Globals;
use crate::plot::{Chart, Series, svg};
use crate::run::RunDir;
use crate::run::events::Event;
use crate::run::metrics::{self, TrainRecord, ValRecord};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run folder.
    #[arg(long)]
    pub run: PathBuf,
}

pub fn run(args: Args, _globals: &Globals) -> Result<()> {
    let run = RunDir::new(&args.run);
    run.load_config()?;
    println!("{}", write(&run)?.display());
    Ok(())
}

/// Refreshes the report after a stage wrote something; a failure is logged, not raised, since
/// the stage's own output is complete.
pub fn refresh(run: &RunDir) {
    if let Err(e) = write(run) {
        tracing::warn!(run = %run.path().display(), error = %format!("{e:#}"), "report not refreshed");
    }
}

/// Writes `RUN/report.html` and returns its path.
pub fn write(run: &RunDir) -> Result<PathBuf> {
    if !run.path().is_dir() {
        bail!("{}: no run folder here", run.path().display());
    }
    let mut page = Page { body: String::new(), missing: Vec::new() };
    let config = match run.load_config() {
        Ok(c) => Some(c),
        Err(e) => {
            page.missing.push(format!("the run config: {e:#}"));
            None
        }
    };
    let (train, val) = read_metrics(run, &mut page);
    let events = run.events();
    overview(&mut page, run, config.as_ref(), &train, &events);
    charts(&mut page, &train, &val);
    samples(&mut page, &events);
    evaluation(&mut page, &events);
    sweep(&mut page, &events);
    judged(&mut page, &events);
    if let Some(config) = &config {
        let _ = write!(page.body, "<h2>Config</h2><pre>{}</pre>", escape(&config.to_toml()));
    }
    let path = run.report_path();
    video_io::atomic::write_bytes(&path, &[page.finish(run.path()).as_bytes()])?;
    Ok(path)
}

/// The page being written, and what it could not show.
struct Page {
    body: String,
    missing: Vec<String>,
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;max-width:1500px;color:#222}h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ccc}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}\
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:12px}.chart svg{width:100%;height:auto}\
.media{display:flex;flex-wrap:wrap;gap:14px}.media figure{margin:0}video,img.strip{max-width:100%;image-rendering:pixelated}\
.missing{background:#fff4e5;border:1px solid #f0b060;padding:8px 12px}pre{background:#f7f7f7;padding:10px;overflow:auto}";

impl Page {
    fn finish(self, run: &Path) -> String {
        let title = escape(&run.display().to_string());
        let missing = match self.missing.is_empty() {
            true => String::new(),
            false => format!("<div class=\"missing\"><b>Not shown:</b><ul>{}</ul></div>", self.missing.iter().map(|m| format!("<li>{}</li>", escape(m))).collect::<String>()),
        };
        format!("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>sid2 run {title}</title><style>{STYLE}</style></head>\n<body><h1>sid2 run <code>{title}</code></h1>{missing}{}</body></html>\n", self.body)
    }
}

fn read_metrics(run: &RunDir, page: &mut Page) -> (Vec<TrainRecord>, Vec<ValRecord>) {
    let path = run.metrics_path();
    if !path.exists() {
        page.missing.push(format!("{}: no metrics yet (training has not logged)", path.display()));
        return (Vec::new(), Vec::new());
    }
    match metrics::read(&path) {
        Ok(records) => {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if !text.is_empty() && !text.ends_with('\n') {
                page.missing.push(format!("{}: the last line is cut short (a killed run) and was left out", path.display()));
            }
            let train = records.iter().filter_map(|r| if let metrics::Record::Train(t) = r { Some(t.clone()) } else { None }).collect();
            let val = records.into_iter().filter_map(|r| if let metrics::Record::Val(v) = r { Some(v) } else { None }).collect();
            (train, val)
        }
        Err(e) => {
            page.missing.push(format!("{e:#}"));
            (Vec::new(), Vec::new())
        }
    }
}

fn overview(page: &mut Page, run: &RunDir, config: Option<&RunConfig>, train: &[TrainRecord], events: &[Event]) {
    let mut rows: Vec<(String, String)> = Vec::new();
    if let Some(c) = config {
        let k = cost(&c.model, [c.data.frames, c.data.size, c.data.size]);
        rows.push(("what it mirrors".into(), c.description.clone()));
        rows.push(("parameters".into(), format!("{} ({:.2} M)", k.params, k.params as f64 / 1e6)));
        rows.push(("FLOP per sample".into(), format!("{:.2} G forward, {:.2} G training", k.forward_flops / 1e9, k.train_flops() / 1e9)));
        let seen = train.last().map_or(0, |r| r.samples);
        rows.push(("samples seen".into(), format!("{seen} of {} (batch {})", c.train.total_samples, c.train.batch_size)));
    }
    if let Some(last) = train.last() {
        rows.push(("last logged loss".into(), format!("{:.4}", last.loss)));
        rows.push(("throughput".into(), format!("{:.2} samples/s, data wait {:.1} %, peak RSS {:.0} MiB", last.samples_per_s, 100.0 * last.data_wait, last.peak_rss_mib)));
    }
    for e in events {
        if let Event::Train { samples, backend, hardware, commit, .. } = e {
            rows.push((format!("training call at sample {samples}"), format!("{backend} on {hardware}; sid2 {commit}")));
        }
    }
    match run.checkpoints() {
        Ok(list) if !list.is_empty() => {
            let names: Vec<String> = list.iter().map(|c| format!("{} ({:.1} MiB)", c.path().file_name().unwrap_or_default().to_string_lossy(), dir_mib(c.path()))).collect();
            rows.push(("checkpoints kept".into(), names.join(", ")));
        }
        _ => page.missing.push("checkpoints: none yet".into()),
    }
    page.body += "<h2>Run</h2><table>";
    for (k, v) in rows {
        let _ = write!(page.body, "<tr><th>{}</th><td>{}</td></tr>", escape(&k), escape(&v));
    }
    page.body += "</table>";
}

fn dir_mib(dir: &Path) -> f64 {
    std::fs::read_dir(dir).map_or(0.0, |entries| entries.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len() as f64).sum::<f64>() / (1 << 20) as f64)
}

/// The curves of the page, always the same seven (a chart without data says so); an evaluation
/// adds one more, its PSNR per predicted frame.
pub const CHARTS: usize = 7;

fn charts(page: &mut Page, train: &[TrainRecord], val: &[ValRecord]) {
    let series = |name: &str, f: fn(&TrainRecord) -> f64| Series { name: name.into(), points: train.iter().map(|r| (r.samples as f64, f(r))).collect() };
    let val_series = |name: &str, f: fn(&ValRecord) -> f64| Series { name: name.into(), points: val.iter().map(|r| (r.samples as f64, f(r))).collect() };
    let chart = |title: &str, y: &str, log_y: bool, series: Vec<Series>| Chart { title: title.into(), x_label: "samples seen".into(), y_label: y.into(), log_y, series };
    let mut levels = Chart { title: "held-out loss per noise level".into(), x_label: "logSNR λ".into(), y_label: "weighted loss".into(), log_y: true, series: Vec::new() };
    let mut picks: Vec<&ValRecord> = [0, val.len() / 2, val.len().saturating_sub(1)].iter().filter_map(|&i| val.get(i)).collect();
    picks.dedup_by_key(|r| r.samples);
    for r in picks {
        levels.series.push(Series { name: format!("at {} samples", r.samples), points: r.levels.iter().map(|l| (l.logsnr, l.loss)).collect() });
    }
    let all = [
        chart("loss", "weighted loss", true, vec![series("train", |r| r.loss), val_series("held-out", |r| r.loss)]),
        chart("mean squared errors", "MSE", true, vec![series("v (train)", |r| r.v_mse), series("ε (train)", |r| r.eps_mse), series("x (train)", |r| r.x_mse), val_series("v (held-out)", |r| r.v_mse)]),
        levels,
        chart("learning rate", "lr", false, vec![series("lr", |r| r.lr)]),
        chart("gradient norm (before clipping)", "L2 norm", true, vec![series("norm", |r| r.grad_norm)]),
        chart("throughput", "samples/s", false, vec![series("samples/s", |r| r.samples_per_s)]),
        chart("data wait", "fraction of step time", false, vec![series("waiting for data", |r| r.data_wait)]),
    ];
    page.body += "<h2>Curves</h2><div class=\"charts\">";
    for c in &all {
        match svg(c, (640, 320)) {
            Ok(svg) => {
                let _ = write!(page.body, "<div class=\"chart\">{svg}</div>");
            }
            Err(e) => page.missing.push(format!("chart {}: {e:#}", c.title)),
        }
    }
    page.body += "</div>";
}

fn samples(page: &mut Page, events: &[Event]) {
    let Some(Event::Samples { path, clips, weights, steps, .. }) = events.iter().rev().find(|e| matches!(e, Event::Samples { .. })) else {
        page.missing.push("samples: none written for this run yet (sid2 sample --run ...)".into());
        return;
    };
    let _ = write!(page.body, "<h2>Newest samples</h2><p>{clips} clips in <code>{}</code> from <code>{}</code>, {steps} sampler steps. Comparisons show context (held) | real | predicted; context frames are framed in green.</p><div class=\"media\">", escape(&path.display().to_string()), escape(&weights.display().to_string()));
    let mut found = 0;
    for i in 0..*clips {
        for (file, kind) in [(format!("compare-{i:03}.mp4"), "video/mp4"), (format!("strip-{i:03}.png"), "image/png")] {
            let Ok(bytes) = std::fs::read(path.join(&file)) else { continue };
            found += 1;
            let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
            let element = match kind {
                "video/mp4" => format!("<video controls loop muted playsinline preload=\"auto\" src=\"data:{kind};base64,{data}\"></video>"),
                _ => format!("<img class=\"strip\" alt=\"{file}\" src=\"data:{kind};base64,{data}\">"),
            };
            let _ = write!(page.body, "<figure>{element}<figcaption>{file}</figcaption></figure>");
        }
    }
    if let Ok(bytes) = std::fs::read(path.join("samples.png")) {
        found += 1;
        let _ = write!(page.body, "<figure><img class=\"strip\" alt=\"samples.png\" src=\"data:image/png;base64,{}\"><figcaption>samples.png</figcaption></figure>", base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    page.body += "</div>";
    if found == 0 {
        page.missing.push(format!("{}: the sample files (compare-*.mp4, strip-*.png, samples.png) are missing", path.display()));
    }
}

fn evaluation(page: &mut Page, events: &[Event]) {
    let Some(Event::Eval { path, .. }) = events.iter().rev().find(|e| matches!(e, Event::Eval { .. })) else {
        page.missing.push("evaluation: none recorded for this run (sid2 eval --run ...)".into());
        return;
    };
    let report: EvalReport = match std::fs::read_to_string(path).map_err(anyhow::Error::from).and_then(|t| Ok(serde_json::from_str(&t)?)) {
        Ok(r) => r,
        Err(e) => {
            page.missing.push(format!("{}: {e}", path.display()));
            return;
        }
    };
    let _ = write!(page.body, "<h2>Evaluation</h2><p>{} clips, {} context frames (<code>{}</code>)</p><table><tr><th>frame</th><th>PSNR (dB)</th><th>SSIM</th><th>last context frame repeated: PSNR</th><th>SSIM</th></tr>", report.clips, report.context_frames, escape(&path.display().to_string()));
    for q in &report.per_frame {
        let _ = write!(page.body, "<tr><td>{}</td><td>{:.2}</td><td>{:.4}</td><td>{:.2}</td><td>{:.4}</td></tr>", q.frame, q.psnr_db, q.ssim, q.last_frame_psnr_db, q.last_frame_ssim);
    }
    let _ = write!(
        page.body,
        "<tr><th>mean</th><th>{:.2} ± {:.2}</th><th>{:.4} ± {:.4}</th><th>{:.2}</th><th>{:.4}</th></tr></table>",
        report.mean_psnr_db, report.psnr_ci95_db, report.mean_ssim, report.ssim_ci95, report.last_frame_psnr_db, report.last_frame_ssim
    );
    let mut notes = String::new();
    for line in report.summary().lines().filter(|l| l.starts_with("best of") || l.starts_with("diversity") || l.starts_with("moving pixels")) {
        let _ = write!(notes, "<li>{}</li>", escape(line));
    }
    if !notes.is_empty() {
        let _ = write!(page.body, "<ul>{notes}</ul>");
    }
    match svg(&crate::eval::per_frame_chart(&report), (640, 320)) {
        Ok(svg) => {
            let _ = write!(page.body, "<div class=\"chart\">{svg}</div>");
        }
        Err(e) => page.missing.push(format!("per-frame chart: {e:#}")),
    }
    for f in &report.frechet {
        let _ = write!(page.body, "<p>{:?}: <b>{:.2}</b> ({} generated vs {} real feature vectors)</p>", f.metric, f.value, f.generated_samples, f.real_samples);
    }
}

/// The newest sweep's cells, the best marked.
fn sweep(page: &mut Page, events: &[Event]) {
    let Some(Event::Sweep { path, .. }) = events.iter().rev().find(|e| matches!(e, Event::Sweep { .. })) else { return };
    let sweep: crate::sweep::Sweep = match std::fs::read_to_string(path).map_err(anyhow::Error::from).and_then(|t| Ok(serde_json::from_str(&t)?)) {
        Ok(s) => s,
        Err(e) => {
            page.missing.push(format!("{}: {e}", path.display()));
            return;
        }
    };
    let _ = write!(page.body, "<h2>Sweep</h2><p>{} held-out clips, {} steps, seed {} (<code>{}</code>)</p><pre>{}</pre>", sweep.clips, sweep.steps, sweep.seed, escape(&path.display().to_string()), escape(&crate::sweep::table(&sweep)));
}

/// The judge's scores of each checkpoint's samples (`bench learn` on an image preset), read from
/// its learn.json, with the real training images' ceiling and a chart.
fn judged(page: &mut Page, events: &[Event]) {
    let Some(Event::Judge { path, .. }) = events.iter().rev().find(|e| matches!(e, Event::Judge { .. })) else { return };
    let learn: serde_json::Value = match std::fs::read_to_string(path).map_err(anyhow::Error::from).and_then(|t| Ok(serde_json::from_str(&t)?)) {
        Ok(v) => v,
        Err(e) => {
            page.missing.push(format!("{}: {e}", path.display()));
            return;
        }
    };
    let number = |v: &serde_json::Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
    let accuracy = learn["judge"]["test_accuracy"].as_f64().map_or("unmeasured".to_owned(), |a| format!("{:.1} %", 100.0 * a));
    let _ = write!(
        page.body,
        "<h2>Judge</h2><p>{} images per class from each checkpoint, scored by the judge <code>{}</code> (test accuracy {accuracy}; chance {:.1} %) against the test images (<code>{}</code>). judge-FD is the Fréchet distance in the judge's features, not FID.</p>\
         <table><tr><th>samples seen</th><th>class accuracy</th><th>judge-FD</th><th>precision</th><th>recall</th></tr>",
        learn["per_class"],
        escape(learn["judge"]["path"].as_str().unwrap_or("?")),
        100.0 * number(&learn, "chance"),
        escape(&path.display().to_string())
    );
    let row = |name: String, s: &serde_json::Value| format!("<tr><td>{name}</td><td>{:.1} %</td><td>{:.2}</td><td>{:.3}</td><td>{:.3}</td></tr>", 100.0 * number(s, "class_accuracy"), number(s, "judge_fd"), number(s, "precision"), number(s, "recall"));
    let checkpoints = learn["checkpoints"].as_array().cloned().unwrap_or_default();
    for c in &checkpoints {
        page.body += &row(c["samples"].to_string(), &c["scores"]);
    }
    page.body += &row("real training images".into(), &learn["ceiling"]);
    page.body += "</table>";
    let series = |key: &'static str| Series { name: key.replace('_', " "), points: checkpoints.iter().map(|c| (number(c, "samples"), number(&c["scores"], key))).collect() };
    let chart = Chart { title: "judge scores of each checkpoint's samples".into(), x_label: "samples seen".into(), y_label: "fraction".into(), log_y: false, series: vec![series("class_accuracy"), series("precision"), series("recall")] };
    match svg(&chart, (640, 320)) {
        Ok(svg) => {
            let _ = write!(page.body, "<div class=\"chart\">{svg}</div>");
        }
        Err(e) => page.missing.push(format!("judge chart: {e:#}")),
    }
    // The last checkpoint's class grid and the real one, written beside learn.json.
    page.body += "<div class=\"media\">";
    for file in ["samples.png", "real.png"] {
        if let Ok(bytes) = std::fs::read(path.with_file_name(file)) {
            let _ = write!(page.body, "<figure><img class=\"strip\" alt=\"{file}\" src=\"data:image/png;base64,{}\"><figcaption>{file}</figcaption></figure>", base64::engine::general_purpose::STANDARD.encode(bytes));
        }
    }
    page.body += "</div>";
}

/// Text made safe inside HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
