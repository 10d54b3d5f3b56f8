//! Generated command lines against the tiny presets: config keys set to edge values, real short
//! trainings and samplings of generated networks, and argument lists of every subcommand. Any
//! outcome but a panic, a crash or a hang is allowed (most are refusals); each case is bounded in
//! time and so is the whole test. The generator is seeded (SID2_FUZZ_SEED to vary it), so a case
//! that fails is printed and reproduces.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ok, preset, s, shared, sid2};

/// SplitMix64: a small, seeded source of choices.
struct Choices(u64);

impl Choices {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[(self.next() % items.len() as u64) as usize]
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Every key of the presets (and a few the configs may hold), for `--set`.
const KEYS: &[&str] = &[
    "data.frames", "data.size", "data.sampling", "data.sampling.stride", "data.sampling.kind", "data.clips_per_video", "data.inputs_per_shard",
    "model.in_channels", "model.patch_size", "model.channels", "model.kinds", "model.temporal", "model.blocks", "model.mid_blocks",
    "model.emb_channels", "model.fourier_features", "model.heads", "model.norm_groups", "model.num_classes", "model.dropout",
    "model.attention", "model.conv", "model.linear",
    "diffusion.schedule", "diffusion.schedule.kind", "diffusion.schedule.d_ref", "diffusion.prediction", "diffusion.weighting",
    "diffusion.weighting.kind", "diffusion.weighting.bias", "diffusion.time_sampling", "diffusion.context_frames", "diffusion.per_frame_noise",
    "train.batch_size", "train.total_samples", "train.lr", "train.warmup_samples", "train.adam_beta1", "train.adam_beta2",
    "train.weight_decay", "train.grad_clip", "train.ema_decays", "train.ema_warmup", "train.label_dropout", "train.flip",
    "train.log_every", "train.checkpoint_every", "train.val_every", "train.val_clips", "train.val_levels", "train.keep_checkpoints",
    "train.seed", "train.max_nonfinite", "train.precision",
    "sample.kind", "sample.steps", "sample.guidance", "sample.interval", "sample.clip_x",
    "description", "train", "model", "nonsense.key", "model.channels.0", "",
];

/// Values at and past the edges, in TOML (or bare words, taken as strings).
const VALUES: &[&str] = &[
    "0", "1", "2", "3", "4", "7", "-1", "-0.0", "1e-30", "1e30", "1000000000000", "18446744073709551615", "-9223372036854775808",
    "0.5", "1.0", "nan", "inf", "-inf", "true", "false", "\"\"", "x", "\"v\"", "[]", "[0]", "[1]", "[0, 0, 0]", "[32, 64, 0]",
    "[1, 1, 1]", "[true, false, true]", "[\"res\"]", "[\"transformer\", \"transformer\", \"transformer\"]", "{}", "{ kind = \"x\" }",
    "{ kind = \"logsnr\", min = 1, max = -1 }", "{ kind = \"edm_sigma\", lo = 0.3, hi = 2.9 }", "bf16", "f32", "matmul", "chunked",
    "decomposed", "\"res\"", "[1e12]", "[-1]", "=", "a=b",
];

/// Settings a generated network is built and trained with: small, mostly valid.
const MODEL_SETTINGS: &[&str] = &[
    "model.channels=[8, 16, 16]", "model.channels=[16, 16, 32]", "model.channels=[8, 8]", "model.channels=[8, 16, 16, 16]",
    "model.kinds=[\"res\", \"res\", \"transformer\"]", "model.kinds=[\"res\", \"transformer\", \"transformer\"]", "model.kinds=[\"transformer\", \"transformer\", \"transformer\"]",
    "model.temporal=[true, false, false]", "model.temporal=[]", "model.temporal=[false, true, false]",
    "model.blocks=[1, 1]", "model.blocks=[0, 1]", "model.blocks=[2, 0]", "model.blocks=[1]", "model.mid_blocks=0", "model.mid_blocks=2",
    "model.heads=1", "model.heads=2", "model.heads=3", "model.norm_groups=1", "model.norm_groups=4", "model.norm_groups=3",
    "model.patch_size=1", "model.patch_size=4", "model.emb_channels=8", "model.fourier_features=2", "model.fourier_features=4",
    "model.dropout=[0.0, 0.5, 0.9]", "model.attention=\"decomposed\"", "model.conv=\"matmul\"", "model.linear=\"chunked\"", "model.num_classes=3",
    "diffusion.prediction=\"eps\"", "diffusion.prediction=\"x\"", "diffusion.context_frames=0", "diffusion.context_frames=15",
    "diffusion.per_frame_noise=true", "diffusion.time_sampling=\"uniform\"", "diffusion.weighting={ kind = \"v_mse\" }",
    "diffusion.weighting={ kind = \"eps_mse\" }", "diffusion.schedule={ kind = \"cosine\" }", "train.precision=\"bf16\"",
    "train.grad_clip=0", "train.ema_decays=[]", "train.ema_decays=[0.5, 0.9]", "train.flip=false", "train.label_dropout=0.5",
    "train.val_clips=1", "train.val_levels=1", "train.warmup_samples=0", "train.lr=1e30", "train.max_nonfinite=1", "train.ema_warmup=false",
];

/// Sampler settings for the generated networks.
const SAMPLE_SETTINGS: &[&str] = &["sample.kind=\"ddim\"", "sample.guidance=2.0", "sample.guidance=0", "sample.interval={ kind = \"logsnr\", min = -2, max = 2 }", "sample.clip_x=false", "sample.steps=1"];

/// Subcommands whose work stays short whatever the flags (the timing benchmarks and the demo are
/// left out; `tests/reliability.rs` checks their flags' bounds).
const SUBCOMMANDS: &[&str] = &["prepare", "train", "sample", "encode", "eval", "report", "export", "ema", "sweep", "info", "bench decode", "nonsense"];

/// Flags whose number is a count of work: kept at 2 or below so that every case is short.
const COUNTS: &[&str] = &["--count", "--batch", "--workers", "--upscale", "--rounds", "--reps", "--steps", "--samples-per-clip", "--frames"];

const FLAGS: &[&str] = &[
    "--config", "--out", "--videos", "--images", "--kinetics-csv", "--kinetics-root", "--classes", "--workers", "--run", "--data", "--val",
    "--init", "--set", "--dry-run", "--video", "--count", "--seed", "--ema", "--batch", "--fps", "--upscale", "--input", "--real",
    "--context", "--pred", "--i3d", "--inception", "--to", "--layout", "--check", "--overwrite", "--tokens", "--heads", "--head-dim",
    "--reps", "--n", "--dtype", "--case", "--shrink", "--size", "--rounds", "--device", "--quiet", "--sigma-rel", "--samples",
    "--weights", "--samples-per-clip", "--frames", "--guidance", "--interval", "--steps", "--",
];

/// Why a finished process counts as a crash, if it does.
fn crashed(status: std::process::ExitStatus, stderr: &str) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    if let Some(signal) = status.signal() {
        return Some(format!("killed by signal {signal}"));
    }
    if status.code() == Some(101) || stderr.contains("panicked at") {
        return Some("panicked".into());
    }
    None
}

/// Runs `sid2 args…` within `limit`; the crash or hang it shows, if any.
fn run(args: &[String], limit: Duration) -> Option<String> {
    let mut child = sid2().args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("sid2 runs");
    let stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Some(format!("still running after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = reader.join().unwrap_or_default();
    crashed(status, &text).map(|why| format!("{why}:\n{}", text.lines().take(8).collect::<Vec<_>>().join("\n")))
}

/// The things a generated argument may point at.
struct Fixtures {
    data: PathBuf,
    paths: Vec<String>,
}

fn fixtures(dir: &Path) -> Fixtures {
    let config = preset("tiny_video.toml");
    let data = dir.join("data");
    ok(&["prepare", "--config", s(&config), "--videos", s(&shared().join("videos")), "--out", s(&data), "--set", "data.size=8", "--set", "data.clips_per_video=1", "--set", "model.patch_size=1"]);
    let run = dir.join("run");
    let short = ["--set", "data.size=8", "--set", "data.clips_per_video=1", "--set", "model.patch_size=1", "--set", "train.total_samples=4", "--set", "train.log_every=4", "--set", "train.checkpoint_every=4"];
    let mut train = vec!["train", "--run", s(&run), "--data", s(&data), "--config", s(&config)];
    train.extend(short);
    ok(&train);
    let junk = dir.join("junk.bin");
    std::fs::write(&junk, b"\x00\xffnot anything\n").unwrap();
    let empty = dir.join("empty");
    std::fs::write(&empty, b"").unwrap();
    let shard = data.join("shard-00000.bin");
    let paths = [
        s(&config).to_owned(), s(&preset("tiny_image.toml")).to_owned(), s(&data).to_owned(), s(&run).to_owned(), s(&shard).to_owned(),
        s(&junk).to_owned(), s(&empty).to_owned(), s(dir).to_owned(), "/nonexistent/x".to_owned(), String::new(),
        s(&shared().join("videos/test.avi")).to_owned(), s(&run.join("checkpoints")).to_owned(), s(&data.join("manifest.json")).to_owned(),
    ];
    Fixtures { data, paths: paths.into() }
}

#[test]
fn generated_command_lines_never_panic() {
    let seed = std::env::var("SID2_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(20261202);
    let mut c = Choices(seed);
    let tmp = tempfile::tempdir().unwrap();
    let f = fixtures(tmp.path());
    let (tiny_video, tiny_image) = (preset("tiny_video.toml"), preset("tiny_image.toml"));
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut failures = Vec::new();
    let (mut ran, mut trained) = (0, 0);
    let check = |args: Vec<String>, limit: Duration, failures: &mut Vec<String>| {
        if let Some(why) = run(&args, limit) {
            failures.push(format!("sid2 {}\n  {why}", args.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(" ")));
        }
    };

    // Config values: every key at edge values, through the config checks.
    for _ in 0..220 {
        let preset = if c.below(2) == 0 { &tiny_video } else { &tiny_image };
        let mut args = vec!["info".to_owned(), "--config".to_owned(), s(preset).to_owned()];
        for _ in 0..=c.below(3) {
            args.extend(["--set".to_owned(), format!("{}={}", c.pick(KEYS), c.pick(VALUES))]);
        }
        check(args, Duration::from_secs(30), &mut failures);
        ran += 1;
    }

    // Generated networks trained for one step and sampled: the checks must catch what the
    // network cannot build or run.
    for i in 0..40 {
        if Instant::now() > deadline {
            break;
        }
        let run = tmp.path().join(format!("gen-{i}"));
        let batch = 1 + c.below(3);
        let mut args: Vec<String> = ["train", "--run", s(&run), "--data", s(&f.data), "--config", s(&tiny_video)].map(str::to_owned).into();
        let base = [
            "data.size=8".to_owned(), "data.clips_per_video=1".to_owned(), "model.patch_size=1".to_owned(), format!("train.batch_size={batch}"),
            format!("train.total_samples={batch}"), format!("train.log_every={batch}"), format!("train.checkpoint_every={batch}"),
        ];
        let picked: Vec<String> = (0..=c.below(4)).map(|_| c.pick(MODEL_SETTINGS).to_owned()).collect();
        for set in base.iter().chain(&picked) {
            args.extend(["--set".to_owned(), set.clone()]);
        }
        check(args, Duration::from_secs(60), &mut failures);
        ran += 1;
        if run.join("checkpoints").exists() {
            trained += 1;
            let out = tmp.path().join(format!("gen-{i}-samples"));
            let mut sample: Vec<String> = ["sample", "--run", s(&run), "--data", s(&f.data), "--count", "1", "--out", s(&out), "--set", "sample.steps=2"].map(str::to_owned).into();
            if c.below(2) == 0 {
                sample.extend(["--set".to_owned(), c.pick(SAMPLE_SETTINGS).to_owned()]);
            }
            check(sample, Duration::from_secs(60), &mut failures);
            ran += 1;
        }
    }

    // Argument lists of every subcommand, values from the fixtures and the edges.
    for _ in 0..120 {
        if Instant::now() > deadline {
            break;
        }
        let mut args: Vec<String> = c.pick(SUBCOMMANDS).split(' ').map(str::to_owned).collect();
        for _ in 0..c.below(6) {
            let flag = c.pick(FLAGS).to_owned();
            let value = match c.below(3) {
                0 => f.paths[c.below(f.paths.len() as u64) as usize].clone(),
                1 => c.pick(VALUES).to_owned(),
                _ => c.pick(&["cpu", "cuda", "raw", "0.95", "torch", "attention", "f32", "bf16", "matmul", "sample.steps=1", "train.lr=2"]).to_owned(),
            };
            args.push(flag);
            if c.below(5) != 0 {
                args.push(value);
            }
        }
        // Bounded work: counts of at most 2, one sampling step, a training run of 4 samples.
        for i in 1..args.len() {
            if COUNTS.contains(&args[i - 1].as_str()) && args[i].parse::<f64>().is_ok_and(|n| n > 2.0) {
                args[i] = "2".to_owned();
            }
        }
        if args[0] == "sample" {
            args.extend(["--set", "sample.steps=1"].map(str::to_owned));
        }
        if args[0] == "train" {
            args.extend(["--set", "train.total_samples=4", "--set", "data.size=8"].map(str::to_owned));
        }
        check(args, Duration::from_secs(60), &mut failures);
        ran += 1;
    }
    assert!(failures.is_empty(), "{} of {ran} generated command lines crashed or hung (seed {seed}):\n{}", failures.len(), failures.join("\n"));
    assert!(ran >= 300, "only {ran} cases ran before the time bound");
    eprintln!("{ran} command lines, {trained} generated networks trained and sampled");
    assert!(trained >= 10, "only {trained} of the generated networks trained: the cases no longer reach the network");
}

#[test]
fn a_panic_would_be_caught() {
    // The detector itself: a process that panics is reported, one that refuses is not.
    let out = Command::new(env!("CARGO_BIN_EXE_sid2")).args(["info", "--config", "/nonexistent"]).output().unwrap();
    assert!(crashed(out.status, &String::from_utf8_lossy(&out.stderr)).is_none());
    let panicking = Command::new("sh").args(["-c", "echo \"thread 'main' panicked at src/x.rs:1:1\" >&2; exit 101"]).output().unwrap();
    assert_eq!(crashed(panicking.status, &String::from_utf8_lossy(&panicking.stderr)).as_deref(), Some("panicked"));
    let killed = Command::new("sh").args(["-c", "kill -SEGV $$"]).output().unwrap();
    assert!(crashed(killed.status, "").is_some_and(|w| w.contains("signal 11")));
}
