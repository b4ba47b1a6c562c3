"""Build a random-weight pipeline with MiniSD's planned architecture (configs/*.yaml).

Speed depends on the architecture, not on the weights, so this lets `fgdm bench generate`
measure MiniSD's latency before it is trained:

    python scripts/build_random_minisd.py /tmp/minisd-random
    fgdm bench generate --model /tmp/minisd-random --size 128 --steps 25
"""

import sys
from pathlib import Path

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from transformers import CLIPTextModel, CLIPTokenizer

from fgdm.models.tokenizer import save_bpe, train_bpe
from fgdm.training.components import _captions, build_clip, build_unet, build_vae, sd_noise_scheduler
from fgdm.training.config import load_train_config

if __name__ == "__main__":
    out = Path(sys.argv[1])
    root = Path(__file__).resolve().parents[1] / "configs"
    torch.manual_seed(0)
    tok_cfg = load_train_config(root / "tokenizer.yaml")
    tok_dir = save_bpe(*train_bpe(_captions(tok_cfg, 0, 2000), tok_cfg.model["vocab_size"]), out / "_tok")
    tok = CLIPTokenizer.from_pretrained(tok_dir)
    clip = build_clip(load_train_config(root / "clip.yaml").model, len(tok), 128, tok)
    te = CLIPTextModel(clip.config.text_config)
    vae = build_vae(load_train_config(root / "vae.yaml").model)
    unet = build_unet(load_train_config(root / "unet.yaml").model, 32, te.config.hidden_size)
    sched = DDIMScheduler.from_config(sd_noise_scheduler().config, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    for f in tok_dir.iterdir():
        f.unlink()
    tok_dir.rmdir()
    print(f"random MiniSD-architecture pipeline at {out}")
