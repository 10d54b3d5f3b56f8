//! The judge on real CIFAR-10 images: it learns to tell classes apart in a short training, its
//! Fréchet distance separates real images from noise, and bad inputs are refused by name.

mod common;

use std::path::Path;

use burn::prelude::*;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};
use common::{cifar10, fails, ok, preset, s};
use ndarray::Array5;
use pipeline::eval::features::FidInception;
use video_io::clips::Clips;
use video_io::shard::Shard;

const CLASSES: [&str; 3] = ["airplane", "frog", "ship"];

/// Prepares `images` with the cifar10 preset's data settings, all records in one shard.
fn prepare(images: &Path, out: &Path) {
    ok(&["prepare", "--config", s(&preset("cifar10.toml")), "--images", s(images), "--out", s(out), "--set", "data.inputs_per_shard=4096"]);
}

fn number(text: &str, after: &str) -> f64 {
    let rest = &text[text.find(after).unwrap_or_else(|| panic!("no {after:?} in {text}")) + after.len()..];
    rest.trim_start().split(|c: char| !(c.is_ascii_digit() || c == '.')).next().unwrap().parse().unwrap()
}

/// The row of `judge score`'s table named `name`: images, class accuracy (%), judge-FD, precision, recall.
fn row(table: &str, name: &str) -> Vec<f64> {
    let line = table.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} row in {table}"));
    line[name.len()..].split_whitespace().map(|v| v.trim_end_matches('%').parse().unwrap()).collect()
}

#[test]
fn a_short_training_beats_chance_and_its_distance_tells_real_from_noise() {
    let tmp = tempfile::tempdir().unwrap();
    let (train_images, test_images) = cifar10(tmp.path(), &CLASSES, 120);
    let (train, test) = (tmp.path().join("train-data"), tmp.path().join("test-data"));
    prepare(&train_images, &train);
    prepare(&test_images, &test);
    let judge = tmp.path().join("judge.safetensors");
    let out = ok(&["judge", "train", "--data", s(&train), "--test", s(&test), "--out", s(&judge), "--epochs", "6", "--widths", "16,32", "--batch", "30"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    // 120 test images of 3 classes: chance is 33 %, and 50 % is about 3.7 standard deviations
    // of chance's binomial spread above it.
    let accuracy = number(&stdout, "test accuracy");
    assert!(accuracy > 50.0, "{stdout}");

    // Noise "samples": uniform random pixels labelled like the test images.
    let noise = tmp.path().join("noise.bin");
    let pixels = Array5::from_shape_fn((120, 1, 32, 32, 3), |(n, _, y, x, c)| ((n * 7919 + y * 104_729 + x * 1_299_709 + c * 15_485_863) % 251) as u8);
    Clips::new(pixels, (0..120).map(|i| (i / 40) as i32).collect()).write(&noise).unwrap();
    let first_shard = |dir: &Path| std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "bin")).unwrap();
    let score = |samples: &Path| String::from_utf8(ok(&["judge", "score", "--judge", s(&judge), "--samples", s(samples), "--real", s(&test), "--ceiling", s(&train)]).stdout).unwrap();
    let real_table = score(&first_shard(&train));
    let noise_table = score(&noise);
    let (real, noisy) = (row(&real_table, "samples"), row(&noise_table, "samples"));
    assert_eq!((real[0], noisy[0]), (360.0, 120.0), "every training image, and the noise");
    assert!(noisy[2] > 5.0 * real[2], "judge-FD of noise {} against real {}:\n{real_table}\n{noise_table}", noisy[2], real[2]);
    assert!(real[1] > 50.0 && noisy[3] < real[3], "real images are classified and precise:\n{real_table}\n{noise_table}");
    // The ceiling row: as many real training images as samples.
    assert_eq!(row(&noise_table, "real train (ceiling)")[0], 120.0);
    assert!(noise_table.contains("not FID"), "{noise_table}");

    // Bad input: each refused in one line naming the file and what differs, nothing written.
    let json = tmp.path().join("scores.json");
    let small = tmp.path().join("small.bin");
    Clips::new(Array5::zeros((4, 1, 16, 16, 3)), vec![0; 4]).write(&small).unwrap();
    let err = fails(&["judge", "score", "--judge", s(&judge), "--samples", s(&small), "--real", s(&test), "--json", s(&json)]);
    assert!(err.contains("small.bin") && err.contains("16x16") && err.contains("32x32"), "{err}");
    let many = tmp.path().join("many.bin");
    Clips::new(Array5::zeros((4, 1, 32, 32, 3)), vec![0, 1, 2, 7]).write(&many).unwrap();
    let err = fails(&["judge", "score", "--judge", s(&judge), "--samples", s(&many), "--real", s(&test), "--json", s(&json)]);
    assert!(err.contains("many.bin") && err.contains("label 7") && err.contains("3 classes"), "{err}");
    let unlabelled = tmp.path().join("unlabelled");
    std::fs::create_dir_all(&unlabelled).unwrap();
    for f in std::fs::read_dir(test_images.join("frog")).unwrap().take(8) {
        let f = f.unwrap();
        std::fs::copy(f.path(), unlabelled.join(f.file_name())).unwrap();
    }
    let unlabelled_data = tmp.path().join("unlabelled-data");
    prepare(&unlabelled, &unlabelled_data);
    let err = fails(&["judge", "score", "--judge", s(&judge), "--samples", s(&noise), "--real", s(&unlabelled_data), "--json", s(&json)]);
    assert!(err.contains("unlabelled-data") && err.contains("no labels"), "{err}");
    let not_a_judge = tmp.path().join("not-a-judge.safetensors");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/checkpoint/tiny_video.safetensors"), &not_a_judge).unwrap();
    let err = fails(&["judge", "score", "--judge", s(&not_a_judge), "--samples", s(&noise), "--real", s(&test), "--json", s(&json)]);
    assert!(err.contains("not-a-judge.safetensors") && err.contains("not a judge"), "{err}");
    assert!(!json.exists(), "nothing is written after a refusal");
    let err = fails(&["judge", "train", "--data", s(&unlabelled_data), "--out", s(&tmp.path().join("j2.safetensors"))]);
    assert!(err.contains("--data") && err.contains("no labels"), "{err}");
}

/// Adds the 1008-way classifier pytorch-fid's file holds beside the features (FID never uses it).
fn with_fid_head(path: &Path) {
    use safetensors::tensor::{Dtype, TensorView};
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let zeros = vec![0u8; 1008 * 2048 * 4];
    let mut tensors: Vec<(String, TensorView)> = file.tensors();
    tensors.push(("fc.weight".into(), TensorView::new(Dtype::F32, vec![1008, 2048], &zeros).unwrap()));
    tensors.push(("fc.bias".into(), TensorView::new(Dtype::F32, vec![1008], &zeros[..1008 * 4]).unwrap()));
    safetensors::serialize_to_file(tensors, None, path).unwrap();
}

#[test]
fn bench_learn_on_images_judges_every_checkpoint_and_sweep_scores_guidance() {
    let tmp = tempfile::tempdir().unwrap();
    let (train_images, test_images) = cifar10(tmp.path(), &CLASSES, 24);
    let out = tmp.path().join("learn");
    let tiny = ["--set", "model.num_classes=3", "--set", "train.total_samples=64", "--set", "train.checkpoint_every=32", "--set", "sample.steps=4"];
    let config = preset("tiny_image.toml");
    let mut args = vec!["bench", "learn", "--config", s(&config), "--train-images", s(&train_images), "--heldout-images", s(&test_images), "--out", s(&out), "--per-class", "4", "--judge-epochs", "1"];
    args.extend(tiny);
    ok(&args);
    let learn: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("learn.json")).unwrap()).unwrap();
    let checkpoints = learn["checkpoints"].as_array().unwrap();
    assert_eq!(checkpoints.iter().map(|c| c["samples"].as_u64().unwrap()).collect::<Vec<_>>(), [32, 64]);
    for c in checkpoints.iter().map(|c| &c["scores"]).chain([&learn["ceiling"]]) {
        assert_eq!(c["images"], 12);
        for key in ["class_accuracy", "precision", "recall"] {
            assert!((0.0..=1.0).contains(&c[key].as_f64().unwrap()), "{key}: {c}");
        }
        assert!(c["judge_fd"].as_f64().unwrap() >= 0.0);
    }
    assert!(learn["judge"]["test_accuracy"].as_f64().is_some());
    for file in ["curves.png", "samples.png", "real.png", "judge.safetensors", "run/classes.txt"] {
        assert!(out.join(file).exists(), "{file}");
    }
    // One row per class: 3 rows of 2x-upscaled 32x32 images.
    let grid = image::open(out.join("samples.png")).unwrap();
    assert_eq!(grid.height(), 2 + 3 * (64 + 2));
    let report = std::fs::read_to_string(out.join("run/report.html")).unwrap();
    assert!(report.contains("<h2>Judge</h2>") && report.contains("not FID"), "the report shows the judge's scores");

    // The sweep scores guidance with the judge; the interval saves unconditional passes.
    let run = out.join("run");
    let sweep = tmp.path().join("sweep");
    ok(&["sweep", "--run", s(&run), "--data", s(&out.join("data-heldout")), "--judge", s(&out.join("judge.safetensors")), "--guidance", "1,3", "--interval", "off,run", "--count", "4", "--steps", "4", "--out", s(&sweep)]);
    let result: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(sweep.join("sweep.json")).unwrap()).unwrap();
    let cells = result["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 4);
    assert!(cells.iter().all(|c| c["judged"]["images"] == 12), "{result}");
    let passes = |g: f64, off: bool| cells.iter().find(|c| c["guidance"] == g && c["interval"].is_null() == off).unwrap()["network_passes"].as_u64().unwrap();
    assert!(passes(3.0, false) < passes(3.0, true), "the interval skips unconditional passes");
    assert!(sweep.join("sweep-judge-fd.png").exists());
    let err = fails(&["sweep", "--run", s(&run), "--data", s(&out.join("data-heldout")), "--guidance", "1,3"]);
    assert!(err.contains("--judge") && err.contains("--inception"), "{err}");

    // Without a judge, Inception weights score every cell by FID against as many real images.
    // The weights are the network's own initialisation (what FID's values mean is tested in
    // tests/fidelity.rs); here it is the sweep that is under test.
    let inception = tmp.path().join("inception.safetensors");
    let mut store = SafetensorsStore::from_file(&inception).with_to_adapter(BurnToPyTorchAdapter);
    FidInception::new(&Device::flex()).save_into(&mut store).unwrap();
    with_fid_head(&inception);
    let (fid_sweep, heldout) = (tmp.path().join("sweep-fid"), out.join("data-heldout"));
    let fid_args = ["sweep", "--run", s(&run), "--data", s(&heldout), "--inception", s(&inception), "--guidance", "1,3", "--count", "2", "--steps", "2", "--out", s(&fid_sweep)];
    let printed = String::from_utf8_lossy(&ok(&fid_args).stdout).into_owned();
    let result: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fid_sweep.join("sweep.json")).unwrap()).unwrap();
    let fids: Vec<f64> = result["cells"].as_array().unwrap().iter().map(|c| c["fid"].as_f64().unwrap()).collect();
    assert!(fids.len() == 2 && fids.iter().all(|f| f.is_finite() && *f >= 0.0) && fids[0] != fids[1], "{result}");
    let lowest = if fids[0] < fids[1] { 0 } else { 1 };
    assert_eq!(result["best"], lowest, "the best cell has the lowest FID");
    assert!(printed.contains("FID") && printed.contains("<- best"), "{printed}");
    assert_eq!(Clips::read(&Shard::open(&fid_sweep.join("real.bin")).unwrap()).len(), 6, "2 real images per class");
    assert!(fid_sweep.join("sweep-fid.png").exists());
    // Run again: every cell is done, and the same scores come back.
    let again = String::from_utf8_lossy(&ok(&fid_args).stdout).into_owned();
    assert!(again.contains("2 of 2 cells already done") && again.contains(&format!("{:.2}", fids[0])), "{again}");
    let err = fails(&["sweep", "--run", s(&run), "--data", s(&out.join("data-heldout")), "--inception", s(&inception), "--judge", s(&out.join("judge.safetensors"))]);
    assert!(err.contains("--inception") && err.contains("--judge"), "{err}");
}
