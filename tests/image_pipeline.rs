//! The image pipeline end to end: the real JPEG frames as a two-class image folder → prepare →
//! train tiny_image in mixed precision (bf16 compute, f32 weights) → a class-conditional PNG
//! grid with interval guidance, sampled in bf16 too.

mod common;

use common::{ok, preset, s, shared};

#[test]
fn two_class_images_to_a_png_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    for (class, range) in [("first_half", 1..=5), ("second_half", 6..=10)] {
        std::fs::create_dir_all(images.join(class)).unwrap();
        for i in range {
            let name = format!("img_{i:05}.jpg");
            std::fs::copy(shared().join("frames").join(&name), images.join(class).join(name)).unwrap();
        }
    }
    let (data, run, out, config) = (tmp.path().join("data"), tmp.path().join("run"), tmp.path().join("samples"), preset("tiny_image.toml"));
    let small = ["--set", "data.size=16", "--set", "train.total_samples=96", "--set", "train.checkpoint_every=48"];
    let mut args = vec!["prepare", "--config", s(&config), "--images", s(&images), "--out", s(&data)];
    args.extend(small);
    let stdout = String::from_utf8(ok(&args).stdout).unwrap();
    assert!(stdout.starts_with("10 records"), "{stdout}");
    let mut args = vec!["train", "--run", s(&run), "--data", s(&data), "--config", s(&config), "--set", "train.precision=bf16"];
    args.extend(small);
    ok(&args);
    let saved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(saved.contains("precision = \"bf16\""), "{saved}");
    let losses: Vec<f64> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect();
    assert!(!losses.is_empty() && losses.iter().all(|l| l.is_finite()), "{losses:?}");
    let stdout = String::from_utf8(ok(&["sample", "--run", s(&run), "--out", s(&out), "--count", "2", "--set", "sample.steps=8", "--upscale", "2"]).stdout).unwrap();
    // Two classes × two images, guidance only inside its interval: some unconditional passes skipped.
    assert!(stdout.starts_with("4 samples"), "{stdout}");
    let skipped: usize = stdout.split(", ").nth(1).and_then(|t| t.split(' ').next()).and_then(|n| n.parse().ok()).unwrap();
    assert!(skipped > 0 && skipped < 8, "{stdout}");
    let grid = image::open(out.join("samples.png")).unwrap();
    // One row per class, named from the run's classes.txt: a 104-pixel name column, then two
    // 2x-upscaled 16x16 images with 2-pixel gaps.
    assert_eq!((grid.width(), grid.height()), (104 + 2 * (32 + 2) + 2, 2 + 2 * (32 + 2)));
    assert_eq!(std::fs::read_to_string(run.join("classes.txt")).unwrap(), "first_half\nsecond_half\n");

    // Conditioning labels outside the run's classes are refused before anything is written.
    std::fs::create_dir_all(images.join("third")).unwrap();
    std::fs::copy(shared().join("frames/test.jpg"), images.join("third/test.jpg")).unwrap();
    let three = tmp.path().join("three");
    let mut args = vec!["prepare", "--config", s(&config), "--images", s(&images), "--out", s(&three)];
    args.extend(small);
    ok(&args);
    let nowhere = tmp.path().join("nowhere");
    let err = common::fails(&["sample", "--run", s(&run), "--data", s(&three), "--count", "11", "--out", s(&nowhere)]);
    assert!(err.contains("three: the data set has 3 classes, model.num_classes is 2"), "{err}");
    assert!(!nowhere.exists());
}
