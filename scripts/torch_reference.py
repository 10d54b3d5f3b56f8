#!/usr/bin/env python3
"""The project's PyTorch reference of its Residual U-ViT, for side-by-side numbers and weights.

Not part of the product and never run in CI: it needs torch (from PyPI, in a throwaway venv):

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy safetensors

The module tree mirrors model3d's (`encoder.0.blocks.res.0.conv1`, ...) with PyTorch's own layers:
Linear weights are [out, in] (burn keeps [in, out]) and norm scales are `weight`/`bias` (burn's
`gamma`/`beta`); `sid2 export --layout torch` writes that layout.

Commands:
  bench-train CONFIG [--set key=value ...]  training steps per second of the config's model (eager
                                             and, with --compile, torch.compile), same shapes as
                                             `sid2 bench train`
  bench-sample CONFIG [--set key=value ...] [--batch B]
                                             sampling time of one batch with the config's [sample]
                                             settings (ancestral steps, guidance inside its
                                             interval as one doubled batch, x̂ clipped), no
                                             autodiff, same shapes as `sid2 bench sample`
  bench-attention                            scaled_dot_product_attention forward + backward at
                                             the shapes of `sid2 bench attention`
  check EXPORTED.safetensors INPUTS.safetensors
                                             loads weights exported by `sid2 export --layout torch`
                                             and compares the prediction on the inputs sid2 saved
                                             beside them with sid2's own
"""
import argparse
import json
import math
import sys
import time
import tomllib

import torch
import torch.nn as nn
import torch.nn.functional as F

LOGSNR_SCALE = 0.125
MAX_FREQUENCY = 1000.0
MLP_RATIO = 4


def rope_tables(head_dim, grid, bands):
    """cos, sin [N, head_dim] for a (t, y, x) grid, rotate-half layout, `bands` pairs per axis."""
    pairs = head_dim // 2
    frames, height, width = grid
    cos = torch.zeros(frames * height * width, head_dim, dtype=torch.float64)
    sin = torch.zeros_like(cos)
    starts = [0, bands[0], bands[0] + bands[1]]
    for f in range(frames):
        for y in range(height):
            for x in range(width):
                token = (f * height + y) * width + x
                for axis, (start, n) in enumerate(zip(starts, bands)):
                    pos = (f, y, x)[axis]
                    for k in range(n):
                        angle = pos * 10000.0 ** (-k / n)
                        for col in (start + k, start + k + pairs):
                            cos[token, col] = math.cos(angle)
                            sin[token, col] = math.sin(angle)
    return cos.float(), sin.float()


def spatial_rope(head_dim, grid):
    pairs = head_dim // 2
    pt = pairs // 4
    py = (pairs - pt) // 2
    return rope_tables(head_dim, grid, (pt, py, pairs - pt - py))


def apply_rope(x, tables):
    cos, sin = (t.to(x.device, x.dtype) for t in tables)
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def zero_linear(c_in, c_out):
    layer = nn.Linear(c_in, c_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class ResBlock(nn.Module):
    def __init__(self, c, emb, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c, eps=1e-6)
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.film = nn.Linear(emb, 2 * c)
        self.norm2 = nn.GroupNorm(groups, c, eps=1e-6, affine=False)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x, emb):  # x [N, C, H, W], emb [N, E]
        c = x.shape[1]
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].split(c, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return x + self.conv2(F.silu(h))


class TemporalBlock(nn.Module):
    def __init__(self, c, emb, heads):
        super().__init__()
        self.heads = heads
        self.norm = nn.RMSNorm(c, eps=1e-6)
        self.film = nn.Linear(emb, 2 * c)
        self.qkv = nn.Linear(c, 3 * c)
        self.q_norm = nn.RMSNorm(c // heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(c // heads, eps=1e-6)
        self.out = zero_linear(c, c)

    def forward(self, x, emb, rope):  # x [B·T, C, H, W], emb [B, T, E]
        n, c, h, w = x.shape
        b, t, _ = emb.shape
        tokens = x.reshape(b, t, c, h * w).permute(0, 3, 1, 2)  # [B, S, T, C]
        scale, shift = self.film(emb)[:, None].split(c, dim=-1)
        u = (self.norm(tokens) * (1 + scale) + shift).reshape(b * h * w, t, c)
        q, k, v = (z.reshape(b * h * w, t, self.heads, c // self.heads).transpose(1, 2) for z in self.qkv(u).split(c, dim=-1))
        q, k = apply_rope(self.q_norm(q), rope), apply_rope(self.k_norm(k), rope)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b * h * w, t, c)
        update = self.out(attn).reshape(b, h * w, t, c).permute(0, 2, 3, 1).reshape(n, c, h, w)
        return x + update


class TransformerBlock(nn.Module):
    def __init__(self, c, emb, heads):
        super().__init__()
        self.heads = heads
        self.norm = nn.RMSNorm(c, eps=1e-6)
        self.film = nn.Linear(emb, 2 * c)
        self.qkv_mlp = nn.Linear(c, 3 * c + MLP_RATIO * c)
        self.q_norm = nn.RMSNorm(c // heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(c // heads, eps=1e-6)
        self.attn_out = zero_linear(c, c)
        self.mlp_out = zero_linear(MLP_RATIO * c, c)

    def forward(self, x, emb, rope):  # x [B, T, S, C], emb [B, T, E]
        b, t, s, c = x.shape
        scale, shift = self.film(emb)[:, :, None].split(c, dim=-1)
        u = (self.norm(x) * (1 + scale) + shift).reshape(b, t * s, c)
        proj = self.qkv_mlp(u)
        q, k, v = (proj[..., i * c:(i + 1) * c].reshape(b, t * s, self.heads, c // self.heads).transpose(1, 2) for i in range(3))
        q, k = apply_rope(self.q_norm(q), rope), apply_rope(self.k_norm(k), rope)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t * s, c)
        update = self.attn_out(attn) + self.mlp_out(F.silu(proj[..., 3 * c:]))
        return x + update.reshape(b, t, s, c)


class LevelBlocks(nn.Module):
    def __init__(self, m, level, count):
        super().__init__()
        c, e = m["channels"][level], m["emb_channels"]
        res = m["kinds"][level] == "res"
        temporal = res and level < len(m.get("temporal", [])) and m["temporal"][level]
        self.res = nn.ModuleList([ResBlock(c, e, m.get("norm_groups", 32)) for _ in range(count if res else 0)])
        self.temporal = nn.ModuleList([TemporalBlock(c, e, m["heads"]) for _ in range(count if temporal else 0)])
        self.transformer = nn.ModuleList([TransformerBlock(c, e, m["heads"]) for _ in range(0 if res else count)])
        self.heads = m["heads"]
        self.tables = {}

    def rope(self, kind, head_dim, frames, h, w):
        key = (kind, head_dim, frames, h, w)
        if key not in self.tables:
            self.tables[key] = rope_tables(head_dim, (frames, 1, 1), (head_dim // 2, 0, 0)) if kind == "t" else spatial_rope(head_dim, (frames, h, w))
        return self.tables[key]

    def forward(self, h, emb, frames):
        n, c, hh, ww = h.shape
        b = n // frames
        if len(self.res):
            frame_emb = emb.reshape(n, -1)
            for i, block in enumerate(self.res):
                h = block(h, frame_emb)
                if i < len(self.temporal):
                    h = self.temporal[i](h, emb, self.rope("t", c // self.heads, frames, 1, 1))
        if len(self.transformer):
            rope = self.rope("s", c // self.heads, frames, hh, ww)
            tokens = h.reshape(b, frames, c, hh * ww).transpose(2, 3)
            for block in self.transformer:
                tokens = block(tokens, emb, rope)
            h = tokens.transpose(2, 3).reshape(n, c, hh, ww)
        return h


class EncoderLevel(nn.Module):
    def __init__(self, m, i):
        super().__init__()
        self.blocks = LevelBlocks(m, i, m["blocks"][i])
        self.down = nn.Module()
        self.down.conv = nn.Conv2d(m["channels"][i], m["channels"][i + 1], 3, padding=1)


class DecoderLevel(nn.Module):
    def __init__(self, m, i):
        super().__init__()
        self.up = nn.Module()
        self.up.conv = nn.Conv2d(m["channels"][i + 1], m["channels"][i], 3, padding=1, bias=False)
        self.blocks = LevelBlocks(m, i, m["blocks"][i])


class ConditionEmbedding(nn.Module):
    def __init__(self, features, emb, classes):
        super().__init__()
        self.fourier_mlp_in = nn.Linear(features, emb)
        self.fourier_mlp_out = nn.Linear(emb, emb)
        # model3d names it `class`, a Python keyword: registered by name.
        self.add_module("class", nn.Embedding(classes + 1, emb) if classes else None)
        half = features // 2
        self.register_buffer("freqs", torch.tensor([math.exp(math.log(MAX_FREQUENCY) * k / (max(half, 2) - 1)) for k in range(half)], dtype=torch.float32), persistent=False)

    def forward(self, logsnr, labels):  # [B, T], [B] -> [B, T, E]
        angles = (logsnr.float() * LOGSNR_SCALE)[..., None] * self.freqs
        emb = self.fourier_mlp_out(F.silu(self.fourier_mlp_in(torch.cat([angles.sin(), angles.cos()], -1))))
        classes = getattr(self, "class")
        if classes is not None:
            emb = emb + classes(labels)[:, None]
        return F.silu(emb)


class UViT(nn.Module):
    """model3d's Residual U-ViT from a run config's [model] table."""

    def __init__(self, m):
        super().__init__()
        p, ch, last = m["patch_size"], m["channels"], len(m["channels"]) - 1
        cin = m.get("in_channels", 3)
        self.patch = nn.Conv2d(cin, ch[0], p, stride=p)
        self.cond = ConditionEmbedding(m.get("fourier_features", 256), m["emb_channels"], m.get("num_classes", 0))
        self.encoder = nn.ModuleList([EncoderLevel(m, i) for i in range(last)])
        self.mid = LevelBlocks(m, last, m["mid_blocks"])
        self.decoder = nn.ModuleList([DecoderLevel(m, i) for i in range(last)])
        self.unpatch = nn.ConvTranspose2d(ch[0], cin, p, stride=p)
        nn.init.zeros_(self.unpatch.weight)
        nn.init.zeros_(self.unpatch.bias)

    def forward(self, x, logsnr, labels):  # [B, T, C, H, W], [B, T], [B]
        b, t, c, h, w = x.shape
        emb = self.cond(logsnr, labels)
        hidden = self.patch(x.reshape(b * t, c, h, w))
        skips = []
        for level in self.encoder:
            hidden = level.blocks(hidden, emb, t)
            before = hidden
            hidden = level.down.conv(F.avg_pool2d(hidden, 2))
            skips.append((before, hidden))
        hidden = self.mid(hidden, emb, t)
        for level, (before, after) in zip(reversed(self.decoder), reversed(skips)):
            hidden = F.interpolate(level.up.conv(hidden - after), scale_factor=2, mode="nearest") + before
            hidden = level.blocks(hidden, emb, t)
        return self.unpatch(hidden).reshape(b, t, c, h, w)


def load_config(path, overrides):
    with open(path, "rb") as f:
        config = tomllib.load(f)
    for item in overrides:
        key, value = item.split("=", 1)
        node = config
        *parents, leaf = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        try:
            node[leaf] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            node[leaf] = value
    return config


def logsnr_cosine_shifted(t, side, d_ref):
    t_min, t_max = math.atan(math.exp(-7.5)), math.atan(math.exp(7.5))
    return -2 * torch.log(torch.tan(t_min + t * (t_max - t_min))) + 2 * math.log(d_ref / side)


def alpha_sigma(lam):
    """α = √sigmoid(λ), σ = √sigmoid(−λ) of a logSNR tensor, shaped to broadcast over [C, H, W]."""
    return torch.sigmoid(lam).sqrt()[..., None, None, None], torch.sigmoid(-lam).sqrt()[..., None, None, None]


def bench_train(args):
    """Training steps of the config's model on random clips: v-prediction, sigmoid-weighted loss
    with the Jacobian, AdamW, like one step of `sid2 train` (without EMA and clipping)."""
    config = load_config(args.config, args.set)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    m, d, tr = config["model"], config["data"], config["train"]
    model = UViT(m).to(device)
    if args.compile:
        model = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=tr["lr"], betas=(0.9, 0.99), weight_decay=0.0)
    b, t, s = tr["batch_size"], d["frames"], d["size"]
    k = config["diffusion"].get("context_frames", 0)
    bias = config["diffusion"]["weighting"].get("bias", 0.0)
    d_ref = config["diffusion"]["schedule"].get("d_ref", 64.0)
    x = torch.randn(b, t, 3, s, s, device=device).clamp(-1, 1)
    frames = torch.arange(t, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    def step():
        tt = torch.rand(b, 1, device=device).expand(b, t)
        lam = logsnr_cosine_shifted(tt, s, d_ref)
        lam = torch.where(frames < k, torch.full_like(lam, 15.0), lam)
        alpha, sigma = alpha_sigma(lam)
        eps = torch.randn_like(x)
        z = alpha * x + sigma * eps
        v = alpha * eps - sigma * x
        with autocast:
            out = model(z, lam, torch.zeros(b, dtype=torch.long, device=device))
        weight = (torch.sigmoid(bias - lam) * torch.sigmoid(lam))[..., None, None, None] * (frames >= k)[None, :, None, None, None]
        loss = (weight * (out.float() - v) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    step_s = (time.perf_counter() - start) / args.steps
    params = sum(p.numel() for p in model.parameters())
    peak = torch.cuda.max_memory_reserved() / 2**20 if device.type == "cuda" else None
    print(json.dumps({"torch": torch.__version__, "device": str(device), "bf16": args.bf16, "threads": torch.get_num_threads(), "compile": args.compile, "params": params, "batch": b, "warmup_s": warmup_s, "step_s": step_s, "samples_per_s": b / step_s, "peak_reserved_mib": peak}, indent=2))


def guidance_range(interval):
    """The guidance interval as [λ_min, λ_max): EDM's σ ∈ (lo, hi] is λ ∈ [−2 ln hi, −2 ln lo)."""
    if interval is None:
        return -math.inf, math.inf
    if interval["kind"] == "edm_sigma":
        return -2 * math.log(interval["hi"]), -2 * math.log(interval["lo"])
    return interval["min"], interval["max"]


def bench_sample(args):
    """One batch sampled like `sid2 bench sample`: a 2-step warm-up, then the config's steps of the
    ancestral sampler (v-prediction, x̂ clipped to [−1, 1]), guided steps as one pass over the
    [conditional; unconditional] batch, context frames held clean, under inference_mode."""
    config = load_config(args.config, args.set)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    m, d, smp = config["model"], config["data"], config["sample"]
    model = UViT(m).to(device).eval()
    if args.compile:
        model = torch.compile(model)
    b, t, s = args.batch, d["frames"], d["size"]
    k = config["diffusion"].get("context_frames", 0)
    d_ref = config["diffusion"]["schedule"].get("d_ref", 64.0)
    guidance = smp.get("guidance", 1.0)
    lo, hi = guidance_range(smp.get("interval"))
    conditional = m.get("num_classes", 0) > 0
    context = torch.randn(b, k, 3, s, s, device=device).clamp(-1, 1)
    labels = torch.arange(b, device=device) % max(m.get("num_classes", 1), 1)
    nulls = torch.full_like(labels, m.get("num_classes", 0))
    clean = logsnr_cosine_shifted(torch.tensor(0.0), s, d_ref).item()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    def run(steps):
        passes = 0
        z = torch.randn(b, t, 3, s, s, device=device)
        for i in range(steps, 0, -1):
            l_t = logsnr_cosine_shifted(torch.tensor(i / steps), s, d_ref).item()
            l_s = logsnr_cosine_shifted(torch.tensor((i - 1) / steps), s, d_ref).item()
            lam = torch.full((b, t), l_t, device=device)
            lam[:, :k] = clean
            alpha, sigma = alpha_sigma(lam)
            z_in = torch.cat([context, z[:, k:]], 1)
            with autocast:
                if conditional and guidance != 1.0 and lo <= l_t < hi:
                    both = model(torch.cat([z_in, z_in]), torch.cat([lam, lam]), torch.cat([labels, nulls])).float()
                    cond, uncond = both[:b], both[b:]
                    out = uncond + guidance * (cond - uncond)
                    passes += 2
                else:
                    out = model(z_in, lam, labels).float()
                    passes += 1
            x_hat = (alpha * z_in - sigma * out).clamp(-1, 1)
            # Spec §5.1: c = −expm1(λ_t − λ_s), mean = α_s (z_t (1 − c)/α_t + c x̂), var = σ_s² c.
            c = -math.expm1(l_t - l_s)
            (a_t, _), (a_s, s_s) = alpha_sigma(torch.tensor(l_t)), alpha_sigma(torch.tensor(l_s))
            z = a_s * (z_in * (1 - c) / a_t + c * x_hat)
            if i > 1:
                z = z + s_s * math.sqrt(c) * torch.randn_like(z)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return passes

    with torch.inference_mode():
        start = time.perf_counter()
        run(2)
        warmup_s = time.perf_counter() - start
        start = time.perf_counter()
        passes = run(smp["steps"])
        s_per_batch = time.perf_counter() - start
    print(json.dumps({"torch": torch.__version__, "device": str(device), "bf16": args.bf16, "threads": torch.get_num_threads(), "compile": args.compile, "batch": b, "steps": smp["steps"], "network_passes": passes, "warmup_s": warmup_s, "s_per_batch": s_per_batch, "s_per_sample": s_per_batch / b}, indent=2))


def bench_attention(args):
    torch.set_num_threads(args.threads)
    rows = []
    for n in args.tokens:
        q, k, v = (torch.randn(args.batch, args.heads, n, args.head_dim, requires_grad=True) for _ in range(3))

        def run():
            F.scaled_dot_product_attention(q, k, v).sum().backward()

        run()
        start = time.perf_counter()
        for _ in range(args.reps):
            run()
        rows.append({"path": "torch sdpa", "shape": [args.batch, args.heads, n, args.head_dim], "forward_backward_s": (time.perf_counter() - start) / args.reps})
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}, indent=2))


def check(args):
    """Loads `sid2 export --layout torch` weights into this model and compares its prediction on
    the inputs sid2 saved beside them (z, logsnr, labels, prediction) with sid2's prediction."""
    from safetensors import safe_open

    with safe_open(args.exported, "pt") as f:
        config = json.loads(f.metadata()["config"])
        weights = {k: f.get_tensor(k) for k in f.keys()}
    model = UViT(config["model"]).eval()
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        sys.exit(f"layout mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with safe_open(args.inputs, "pt") as f:
        z, logsnr, labels, expected = (f.get_tensor(k) for k in ("z", "logsnr", "labels", "prediction"))
    with torch.no_grad():
        ours = model(z, logsnr, labels.long())
    err = ((ours - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()
    print(json.dumps({"max_relative_difference": err, "within_1e-4": err < 1e-4}))
    sys.exit(0 if err < 1e-4 else 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    model = argparse.ArgumentParser(add_help=False)  # what both model benches take
    model.add_argument("config")
    model.add_argument("--set", action="append", default=[])
    model.add_argument("--threads", type=int, default=2)
    model.add_argument("--compile", action="store_true")
    model.add_argument("--device", default="cpu", help="cpu or cuda")
    model.add_argument("--bf16", action="store_true", help="bf16 autocast around the network, as train.precision = bf16")
    train = sub.add_parser("bench-train", parents=[model])
    train.add_argument("--warmup", type=int, default=2)
    train.add_argument("--steps", type=int, default=10)
    smp = sub.add_parser("bench-sample", parents=[model])
    smp.add_argument("--batch", type=int, default=4)
    attn = sub.add_parser("bench-attention")
    attn.add_argument("--batch", type=int, default=4)
    attn.add_argument("--heads", type=int, default=4)
    attn.add_argument("--head-dim", type=int, default=16)
    attn.add_argument("--tokens", type=int, nargs="+", default=[256, 1024, 4096])
    attn.add_argument("--reps", type=int, default=3)
    attn.add_argument("--threads", type=int, default=2)
    chk = sub.add_parser("check")
    chk.add_argument("exported")
    chk.add_argument("inputs")
    args = parser.parse_args()
    {"bench-train": bench_train, "bench-sample": bench_sample, "bench-attention": bench_attention, "check": check}[args.command](args)


if __name__ == "__main__":
    main()
