//! The Residual U-ViT: identity at initialisation, shapes, and counts.

mod common;

use burn::module::Module;
use burn::prelude::*;
use common::{device, max_abs_diff, randn, small_config};
use model3d::network::cost;
use model3d::{BlockKind, ConvImpl, LinearImpl, Skips, UViT, UViTConfig};

#[test]
fn zero_initialised_network_is_the_skip_path() {
    // docs/method.md §3.2: with zero-initialised residual branches, up(h − after) + before =
    // before at every level, so the body maps the patch embedding to itself and the output is
    // zero. Temporal attention's zero-initialised output keeps that so.
    let config = UViTConfig { temporal: vec![true, false, false], ..small_config(10) };
    let net = UViT::new(&config, &device());
    let x = randn([2, 3, 3, 16, 16], 1);
    let logsnr = Tensor::<2>::from_floats([[15.0, -2.0, 0.5], [3.0, 3.0, -9.0]], &device());
    let labels = Tensor::<1, Int>::from_ints([3, 10], &device());
    let emb = net.cond.forward(logsnr.clone(), labels.clone());
    let h = net.patch.forward(x.clone().reshape([6, 3, 16, 16]));
    let body = net.body(h.clone(), &emb, 3);
    assert!(max_abs_diff(body, h.clone()) < 1e-5);
    let out = net.forward(x, logsnr, labels);
    assert_eq!(out.abs().max().into_scalar::<f32>(), 0.0);
    // And the identity is not vacuous: the patch embedding is not zero.
    assert!(h.abs().max().into_scalar::<f32>() > 1e-2);
}

#[test]
fn zero_initialised_block_skips_are_the_identity_too() {
    // SiD's U-ViT (`model.skips = "blocks"`): every merge starts by passing its skip through, so
    // the last decoder block of level 0 receives the first encoder block's output, the patch
    // embedding itself. Two blocks per level and a temporal block exercise the skip order.
    let config = UViTConfig { skips: Skips::Blocks, blocks: vec![2, 2], temporal: vec![true, false, false], ..small_config(10) };
    let net = UViT::new(&config, &device());
    let x = randn([2, 3, 3, 16, 16], 11);
    let logsnr = Tensor::<2>::from_floats([[15.0, -2.0, 0.5], [3.0, 3.0, -9.0]], &device());
    let labels = Tensor::<1, Int>::from_ints([3, 10], &device());
    let emb = net.cond.forward(logsnr.clone(), labels.clone());
    let h = net.patch.forward(x.clone().reshape([6, 3, 16, 16]));
    assert!(max_abs_diff(net.body(h.clone(), &emb, 3), h.clone()) < 1e-5);
    assert!(h.clone().abs().max().into_scalar::<f32>() > 1e-2);
    // Live merges: once they read h too, the body is no longer the identity.
    let jittered = net.map(&mut common::Jitter);
    assert!(max_abs_diff(jittered.body(h.clone(), &emb, 3), h) > 1e-4);
}

#[test]
fn output_shapes_for_an_image_and_a_video() {
    let config = small_config(0);
    let net = UViT::new(&config, &device());
    for shape in [[3, 1, 3, 16, 16], [2, 5, 3, 8, 8], [1, 4, 3, 16, 24]] {
        let [b, t, ..] = shape;
        let out = net.forward(randn(shape, 2), Tensor::zeros([b, t], &device()), Tensor::zeros([b], &device()));
        assert_eq!(out.dims(), shape);
    }
}

#[test]
fn trained_branches_mix_frames_only_at_transformer_levels() {
    // Perturb the weights so branches are live; then a change in frame 0 reaches frame 2 (joint
    // space-time attention), while a ResBlock-only network keeps frames independent.
    let perturb = |net: UViT| net.map(&mut common::Jitter);
    let x = randn([1, 3, 3, 8, 8], 3);
    let mut x2 = x.clone().to_data().try_to_vec::<f32>().unwrap();
    x2[0] += 1.0; // first pixel of frame 0
    let x2 = Tensor::<5>::from_data(TensorData::new(x2, [1, 3, 3, 8, 8]), &device());
    let logsnr = Tensor::<2>::zeros([1, 3], &device());
    let labels = Tensor::<1, Int>::zeros([1], &device());
    let frame2_change = |config: &UViTConfig| {
        let net = perturb(UViT::new(config, &device()));
        let a = net.forward(x.clone(), logsnr.clone(), labels.clone()).narrow(1, 2, 1);
        let b = net.forward(x2.clone(), logsnr.clone(), labels.clone()).narrow(1, 2, 1);
        max_abs_diff(a, b)
    };
    assert!(frame2_change(&small_config(0)) > 1e-6);
    let mut res_only = small_config(0);
    res_only.kinds = vec![BlockKind::Res; 3];
    assert_eq!(frame2_change(&res_only), 0.0);
    // Temporal attention at the first ResBlock level mixes them again.
    res_only.temporal = vec![true, false, false];
    assert!(frame2_change(&res_only) > 1e-6);
}

#[test]
fn matmul_convolutions_and_chunked_linears_give_the_same_network() {
    let x = randn([2, 3, 3, 16, 16], 8);
    let (logsnr, labels) = (Tensor::<2>::zeros([2, 3], &device()), Tensor::<1, Int>::zeros([2], &device()));
    // One set of weights for all: the device RNG is shared with tests running alongside, so
    // re-seeding it would not give the twins the same initialisation.
    let config = |conv, linear| UViTConfig { conv, linear, temporal: vec![true, false, false], ..small_config(0) };
    let net = UViT::new(&config(ConvImpl::Burn, LinearImpl::Burn), &device()).map(&mut common::Jitter);
    let burn = net.forward(x.clone(), logsnr.clone(), labels.clone());
    let scale = burn.clone().abs().max().into_scalar::<f32>();
    assert!(scale > 1e-2);
    for (conv, linear) in [(ConvImpl::Matmul, LinearImpl::Burn), (ConvImpl::Burn, LinearImpl::Chunked)] {
        let twin = UViT::new(&config(conv, linear), &device()).load_record(net.clone().into_record());
        let diff = max_abs_diff(twin.forward(x.clone(), logsnr.clone(), labels.clone()), burn.clone());
        assert!(diff < 1e-5 * scale.max(1.0), "{conv:?}, {linear:?}: difference {diff} at scale {scale}");
    }
}

#[test]
fn temporal_attention_is_rejected_where_joint_attention_already_runs() {
    let config = UViTConfig { temporal: vec![false, true, false], ..small_config(0) };
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("temporal[1]") && err.contains("ResBlock levels"), "{err}");
    let config = UViTConfig { temporal: vec![true], ..small_config(0) };
    assert!(config.validate().unwrap_err().to_string().contains("temporal: has 1 entries"));
}

#[test]
fn analytic_parameter_count_matches_the_module() {
    for (classes, temporal) in [(0, vec![]), (10, vec![]), (0, vec![true, false, false])] {
        let config = UViTConfig { temporal, ..small_config(classes) };
        let net = UViT::new(&config, &device());
        assert_eq!(cost(&config, [4, 16, 16]).params, net.num_params() as u64);
    }
    // Per-block skips add one [2C → C] merge per decoder block.
    let levels = UViTConfig { blocks: vec![2, 1], ..small_config(10) };
    let blocks = UViTConfig { skips: Skips::Blocks, ..levels.clone() };
    let (c0, c1) = (32u64, 64u64);
    assert_eq!(cost(&blocks, [1, 16, 16]).params, cost(&levels, [1, 16, 16]).params + 2 * (2 * c0 * c0 + c0) + (2 * c1 * c1 + c1));
    assert_eq!(cost(&blocks, [1, 16, 16]).params, UViT::new(&blocks, &device()).num_params() as u64);
    // 16x16 pixels at patch 2: 64 tokens at level 0, 16 at level 1; two FLOPs per multiply-add.
    let extra = 2.0 * (2.0 * 2.0 * (c0 * c0) as f64 * 64.0 + 2.0 * (c1 * c1) as f64 * 16.0);
    let diff = cost(&blocks, [1, 16, 16]).forward_flops - cost(&levels, [1, 16, 16]).forward_flops;
    assert!((diff - extra).abs() < 1e-6 * extra, "{diff} vs {extra}");
}

#[test]
fn counts_match_a_hand_count() {
    // One level of one ResBlock (C = 32, E = 16, p = 1, 8×8 input, 4 Fourier features, no classes)
    // and a middle of zero blocks at width 32:
    //   patch 3·32 + 32 = 128, unpatch 32·3 + 3 = 99, embedding 4·16 + 16 + 16·16 + 16 = 352,
    //   ResBlock ×2 (encoder + decoder): 2·32 + (9·32·32 + 32) + (16·64 + 64) + (9·32·32 + 32)
    //   = 19648 each, down 9·32·32 + 32 = 9248, up 9·32·32 = 9216.
    let config = UViTConfig {
        in_channels: 3,
        patch_size: 1,
        channels: vec![32, 32],
        kinds: vec![BlockKind::Res, BlockKind::Res],
        blocks: vec![1],
        mid_blocks: 0,
        emb_channels: 16,
        fourier_features: 4,
        heads: 1,
        dropout: vec![],
        temporal: vec![],
        attention: Default::default(),
        conv: Default::default(),
        linear: Default::default(),
        skips: Skips::Levels,
        norm_groups: 8,
        num_classes: 0,
    };
    let c = cost(&config, [1, 8, 8]);
    assert_eq!(c.params, 128 + 99 + 352 + 2 * 19648 + 9248 + 9216);
    // MACs: patch 64·3·32 = 6144, unpatch 6144, embedding 4·16 + 16·16 = 320,
    // ResBlocks 2 × (2·9·32·32·64 + 16·64) = 2 × 1180672, down + up at 4×4: 2·9·32·32·16.
    let macs = 6144 + 6144 + 320 + 2 * 1_180_672 + 2 * 9 * 32 * 32 * 16;
    assert_eq!(c.forward_flops, 2.0 * macs as f64);
    assert_eq!(UViT::new(&config, &device()).num_params() as u64, c.params);
    // Temporal attention at level 0, on 2 frames: per block (encoder and decoder) the norm 32,
    // FiLM 16·64 + 64, qkv 32·96 + 96, QK-norms 2·32, output 32·32 + 32 = 5408 parameters; MACs
    // qkv + output 4·32·32·128 tokens, FiLM 2·16·64, attention 2·2²·64 positions·32 = 542720.
    let temporal = UViTConfig { temporal: vec![true, false], ..config.clone() };
    let (with, without) = (cost(&temporal, [2, 8, 8]), cost(&config, [2, 8, 8]));
    assert_eq!(with.params - without.params, 2 * 5408);
    assert_eq!(with.forward_flops - without.forward_flops, 2.0 * 2.0 * 542_720.0);
    assert_eq!(with.attention_flops, 2.0 * 2.0 * (2.0 * 4.0 * 64.0 * 32.0));
    assert_eq!(UViT::new(&temporal, &device()).num_params() as u64, with.params);
}

#[test]
fn flops_match_the_reference_pytorch_twin() {
    // BENCHMARKS.md, the PyTorch twin on the H100: PyTorch's flop counter gives 877 GFLOP
    // (imagenet256) and 2632 GFLOP (k600_64) of training per sample for these shapes, i.e. a
    // third of that per forward pass.
    let body = |patch, blocks: usize, mid| UViTConfig {
        in_channels: 3,
        patch_size: patch,
        channels: vec![128, 256, 512, 1024],
        kinds: vec![BlockKind::Res, BlockKind::Res, BlockKind::Transformer, BlockKind::Transformer],
        blocks: vec![blocks; 3],
        mid_blocks: mid,
        emb_channels: 1024,
        fourier_features: 256,
        heads: 8,
        dropout: vec![],
        temporal: vec![],
        attention: Default::default(),
        conv: Default::default(),
        linear: Default::default(),
        skips: Skips::Levels,
        norm_groups: 32,
        num_classes: 1000,
    };
    let image = cost(&body(2, 3, 16), [1, 256, 256]);
    let video = cost(&body(1, 2, 8), [16, 64, 64]);
    // PyTorch's counter charges the attention backward 5 matmuls against the forward's 2
    // (2.5x, it counts the recomputed scores); everything else backward is 2x the forward.
    let pytorch_train = |c: model3d::Cost| c.train_flops() + 0.5 * c.attention_flops;
    let rel = |ours: f64, reference: f64| (ours / reference - 1.0).abs();
    assert!(rel(pytorch_train(image), 877e9) < 0.005, "{}", pytorch_train(image) / 1e9);
    assert!(rel(pytorch_train(video), 2632e9) < 0.005, "{}", pytorch_train(video) / 1e9);
    // 289 M parameters for the image twin, 158 M for the video twin (BENCHMARKS.md, the PyTorch twin).
    assert!(rel(image.params as f64, 289e6) < 0.005, "{}", image.params);
    assert!(rel(video.params as f64, 158e6) < 0.005, "{}", video.params);
}
