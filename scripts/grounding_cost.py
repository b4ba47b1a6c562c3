"""What TokenCompose's grounding losses weigh and cost on the shipped image factor (docs/results.md,
"TokenCompose's grounding losses on the image factor").

On one batch of 16 training scenes (world seed 0, 128 px, the image factor's own data), with the
shipped graph's image factor given their real seg and depth maps:
1. the gradient norm, on the adapter's weights, of the denoising loss (min-SNR MSE, as the trainer
   computes it) and of each grounding loss (L_token, L_pixel over the mid and decoder blocks'
   cross-attention), at one draw of timesteps and noise: the scale the weights ``extra.grounding``
   sets are chosen against;
2. the time of one training step (forward and backward under bf16 autocast, as the CPU recipes
   train) without and with the grounding losses at the given weights, alternating, median of 12;
3. for comparison, one MiniSD UNet call in inference (batch 2, as under guidance) with PyTorch's SDPA
   attention and with the capturing processor's explicit attention at the grounded layers.

    python scripts/grounding_cost.py [--token 0.05] [--pixel 0.01]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from fgdm.attention import AttentionStore, LayerSelector, attention_control
from fgdm.losses import grounding_losses
from fgdm.models.factors import factor_forward
from fgdm.pipelines.factor_graph import FactorGraphPipeline
from fgdm.training.components import base_noise_scheduler, min_snr_mse, training_target
from fgdm.world.dataset import SceneWorldDataset, collate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--token", type=float, default=0.05, help="the L_token weight timed")
    ap.add_argument("--pixel", type=float, default=0.01, help="the L_pixel weight timed")
    ap.add_argument("--reps", type=int, default=12)
    a = ap.parse_args()
    torch.manual_seed(0)
    pipe = FactorGraphPipeline.from_pretrained()
    base, spec, mod = pipe.base, pipe.spec.factors["image"], pipe.modules["image"].train()
    if list(spec.parents) != ["seg", "depth"]:
        raise SystemExit(f"this script expects the shipped seg and depth image factor, got parents {list(spec.parents)}")
    b = collate([SceneWorldDataset(16, size=128, seed=0, conditions=("seg", "depth"))[i] for i in range(16)])
    tok = base.token_class_ids(b["caption"])
    vae = base.vae
    with torch.no_grad():
        enc = lambda x: vae.encode(x).latent_dist.mean * vae.config.scaling_factor
        z, packed = enc(b["image"]), torch.cat([enc(b["cond_seg"]), torch.ones(16, 1, 32, 32),
                                                enc(b["cond_depth"]), torch.ones(16, 1, 32, 32)], 1)  # fmt: skip
        emb = base.encode_text(b["caption"])[0]
    noise = base_noise_scheduler(base.scheduler.config)
    params = [p.requires_grad_(True) for p in mod.parameters()]
    select = LayerSelector(blocks=("mid", "up"), kinds=("cross",))

    def losses(ground: bool, amp: bool):
        t = torch.randint(0, 1000, (16,))
        eps = torch.randn_like(z)
        zt = noise.add_noise(z, eps, t)
        with torch.autocast("cpu", torch.bfloat16, enabled=amp):
            store = AttentionStore(grad=True)
            with attention_control(base.unet, select, store) if ground else contextlib.nullcontext():
                pred = factor_forward(spec, mod, base.unet, zt, t, emb, packed)
            mse = min_snr_mse(pred, training_target(noise, z, eps, t), noise.alphas_cumprod[t], 5.0,
                              noise.config.prediction_type).mean()  # fmt: skip
            return (mse, *grounding_losses(store, tok, b["seg"])) if ground else (mse,)

    mse, l_tok, l_pix = losses(True, amp=False)
    norm = lambda loss: float(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, retain_graph=True)
                                         if g is not None]).norm())  # fmt: skip
    named = int((tok >= 0).sum())
    print(f"batch of 16: {named} caption tokens name a class; L_token {float(l_tok.detach()):.4f}, "
          f"L_pixel {float(l_pix.detach()):.4f}, denoising loss {float(mse.detach()):.4f}")
    print(f"gradient norm on the adapter: denoising {norm(mse):.4g}, L_token {norm(l_tok):.4g}, "
          f"L_pixel {norm(l_pix):.4g}")

    def step(ground: bool) -> float:
        t0 = time.perf_counter()
        out = losses(ground, amp=True)
        loss = out[0] + (a.token * out[1] + a.pixel * out[2] if ground else 0)
        loss.backward()
        mod.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    for _ in range(3):
        step(False), step(True)
    times = {False: [], True: []}
    for _ in range(a.reps):
        for g in (False, True):
            times[g].append(step(g))
    plain, ground = statistics.median(times[False]), statistics.median(times[True])
    print(f"training step of 16 (bf16 autocast, torch threads {torch.get_num_threads()}): plain {plain:.3f} s, "
          f"with grounding (token {a.token}, pixel {a.pixel}) {ground:.3f} s, ratio {ground / plain:.3f} "
          f"(median of {a.reps})")

    def call() -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            base.unet(z[:2], torch.tensor([500, 500]), encoder_hidden_states=emb[:2])
        return time.perf_counter() - t0

    def median_call() -> float:
        [call() for _ in range(3)]
        return statistics.median(call() for _ in range(30))

    sdpa = median_call()
    with attention_control(base.unet, select):
        explicit = median_call()
    print(f"inference, one UNet call of batch 2: SDPA {sdpa * 1e3:.1f} ms, explicit attention at the grounded "
          f"layers {explicit * 1e3:.1f} ms (median of 30)")


if __name__ == "__main__":
    main()
