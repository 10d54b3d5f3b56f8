#!/usr/bin/env python3
"""Reference outputs for the FID/FVD feature networks, from the PyTorch code they reproduce.

Writes, into pipeline/tests/data/:
  inception_fid_state_dict.txt  every key and shape of the pytorch-fid Inception-v3 state_dict
  i3d_rgb_state_dict.txt        every key and shape of the pytorch-i3d InceptionI3d state_dict
  inception_fid_reference.json  2048-d pool features of two 64x64 images
  i3d_reference.json            400-d logits of one 16x224x224 clip
  not_i3d.pth                   a small real state_dict of another network (a Conv3d)

Neither network's real weights can be downloaded here, so both get deterministic weights that
the Rust tests (pipeline/tests/features.rs) rebuild bit for bit: every
value is a SplitMix64 hash of (FNV-1a of the key, element index), scaled by the key's role.

Needs torch, torchvision and pytorch-fid (pip install pytorch-fid) and pytorch_i3d.py from a
checkout of https://github.com/piergiaj/pytorch-i3d:

  python3 scripts/feature_reference.py --pytorch-i3d path/to/pytorch-i3d
"""
import argparse
import json
import math
import pathlib
import sys

import numpy as np
import torch

MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def fnv1a(name: str) -> int:
    h = 0xCBF29CE484222325
    for byte in name.encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def uniform(name: str, n: int) -> np.ndarray:
    """n values in [-1, 1), each a multiple of 2^-23, from SplitMix64(fnv1a(name) + i)."""
    with np.errstate(over="ignore"):
        z = np.uint64(fnv1a(name)) + np.arange(n, dtype=np.uint64)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 23) - 1.0


def deterministic(name: str, shape) -> torch.Tensor:
    n = int(np.prod(shape)) if len(shape) else 1
    u = uniform(name, n)
    if ".bn." in name or name.startswith("bn."):
        if name.endswith(".weight"):
            v = 1.0 + 0.1 * u
        elif name.endswith(".running_var"):
            v = 1.0 + 0.5 * u
        else:  # bias, running_mean
            v = 0.1 * u
    elif name.endswith(".weight"):
        fan_in = n // shape[0]
        v = math.sqrt(6.0 / fan_in) * u  # He-uniform: variance 2 / fan_in
    else:
        v = 0.1 * u
    return torch.from_numpy(v.astype(np.float32)).reshape(tuple(shape))


def fill(model: torch.nn.Module) -> None:
    state = model.state_dict()
    new = {
        k: (v if k.endswith("num_batches_tracked") else deterministic(k, list(v.shape)))
        for k, v in state.items()
    }
    model.load_state_dict(new, strict=True)


def listing(model: torch.nn.Module) -> str:
    return "".join(
        f"{k} {'x'.join(map(str, v.shape)) or 'scalar'}\n" for k, v in model.state_dict().items()
    )


def inception(out: pathlib.Path) -> None:
    from pytorch_fid import inception as fid

    # fid_inception_v3() downloads its weights; hand it deterministic ones instead.
    fid.load_state_dict_from_url = lambda *a, **k: {
        key: (v if key.endswith("num_batches_tracked") else deterministic(key, list(v.shape)))
        for key, v in fid._inception_v3(num_classes=1008, aux_logits=False, weights=None)
        .state_dict()
        .items()
    }
    net = fid.fid_inception_v3()
    (out / "inception_fid_state_dict.txt").write_text(listing(net))
    model = fid.InceptionV3([fid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    images = torch.from_numpy(((uniform("input", 2 * 3 * 64 * 64) + 1.0) / 2.0).astype(np.float32))
    with torch.no_grad():
        features = model(images.reshape(2, 3, 64, 64))[0].reshape(2, 2048)
    (out / "inception_fid_reference.json").write_text(
        json.dumps(
            {
                "input": "uniform(\"input\") mapped to [0, 1], shape [2, 3, 64, 64]",
                "features": features.tolist(),
            }
        )
    )


def i3d(out: pathlib.Path, repo: pathlib.Path) -> None:
    sys.path.insert(0, str(repo))
    from pytorch_i3d import InceptionI3d

    net = InceptionI3d(400, in_channels=3).eval()
    fill(net)
    (out / "i3d_rgb_state_dict.txt").write_text(listing(net))
    clip = torch.from_numpy(uniform("input", 3 * 16 * 224 * 224).astype(np.float32))
    with torch.no_grad():
        logits = net(clip.reshape(1, 3, 16, 224, 224))  # [1, 400, T'] with T' = 1
    torch.save(torch.nn.Conv3d(3, 8, 1).state_dict(), out / "not_i3d.pth")
    (out / "i3d_reference.json").write_text(
        json.dumps(
            {
                "input": "uniform(\"input\"), shape [1, 3, 16, 224, 224]",
                "logits": logits.mean(dim=2).tolist(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pytorch-i3d", type=pathlib.Path, required=True)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("pipeline/tests/data"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    inception(args.out)
    i3d(args.out, args.pytorch_i3d)


if __name__ == "__main__":
    main()
