"""FG-DM: sample condition maps and the image jointly through a factor graph on a frozen base."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..models.factors import (
    VARIABLES,
    FactorSpec,
    GraphSpec,
    build_factor_module,
    check_eta,
    check_factor_module,
    class_fractions,
    default_graph_dir,
    factor_forward,
    load_factor_module,
    load_graph_spec,
    pack_parents,
    save_graph_spec,
)
from ..models.pipeline import BaseModel, default_model_dir, load_base_model
from ..sampling import FactorRun, KeepOutside, ddim_schedule, guided, sample_graph, to_epsilon
from ..world.conditions import (
    decode_segmentation,
    decode_segmentation_fit,
    encode_segmentation,
    resize_image,
    resize_labels,
)
from .text2image import image_seeds, latents_to_images

log = logging.getLogger(__name__)


@dataclass
class FactorGraphOutput:
    """What one call produced, per sample (``seeds[i]`` is sample i's seed).

    ``maps[name][i]`` is sample i's condition map as an (H, W, 3) uint8 image (segmentation:
    re-painted with the exact palette after decoding); ``labels[i]`` its decoded class-id map. A
    given map is returned as it was encoded (resized to the size its children read), not decoded
    back from its latent; a given seg map's ``labels`` are its class ids;
    ``palette_fit[i]`` the share of the sampled seg map's pixels that were within the decoder's
    tolerance of a palette colour before re-painting (:func:`~fgdm.world.conditions.palette_fit`;
    low: the classes were largely guessed). ``labels`` is None when the call has no seg map (sampled
    or given), ``palette_fit`` when it sampled none.
    """

    images: list[Image.Image]
    maps: dict[str, list[np.ndarray]]
    labels: list[np.ndarray] | None
    latents: dict[str, torch.Tensor]
    seeds: list[int]
    sampled: list[str]  # factors that were sampled
    given: list[str]  # conditions that were supplied
    timings: dict[str, float] = field(default_factory=dict)
    palette_fit: list[float] | None = None


def merge_outputs(parts: list[FactorGraphOutput]) -> FactorGraphOutput:
    """Outputs of several calls with the same factors (e.g. a large ``n`` drawn in batches) as one:
    samples in order, timings summed."""
    first = parts[0]
    if any(p.sampled != first.sampled or p.given != first.given for p in parts):
        raise ValueError("merge_outputs: every part must have sampled and been given the same factors")
    timings: dict[str, float] = {}
    for p in parts:
        for k, v in p.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    return FactorGraphOutput(
        images=[im for p in parts for im in p.images],
        maps={k: [m for p in parts for m in p.maps[k]] for k in first.maps},
        labels=None if first.labels is None else [lab for p in parts for lab in p.labels],
        latents={k: torch.cat([p.latents[k] for p in parts]) for k in first.latents},
        seeds=[sd for p in parts for sd in p.seeds], sampled=first.sampled, given=first.given, timings=timings,
        palette_fit=None if first.palette_fit is None else [f for p in parts for f in p.palette_fit],
    )  # fmt: skip


def condition_rgb(name: str, value: np.ndarray, size: int) -> np.ndarray:
    """A user-supplied condition as the (size, size, 3) uint8 image its factor's VAE encodes.

    Segmentation: an (H, W) class-id map or a palette image (decoded first); resized with nearest
    neighbour. Depth / sketch: (H, W) in [0, 1] (float) or 0-255 (uint8), or (H, W, 3) uint8.
    Normals: (H, W, 3) uint8.
    """
    if name == "seg":
        return encode_segmentation(condition_labels(value, size))
    a = np.asarray(value)
    if a.ndim == 2:
        if name == "normal":
            raise ValueError(f"given normal must be an (H, W, 3) uint8 image, got shape {a.shape}")
        a = np.clip(a * 255 if a.dtype.kind == "f" else a, 0, 255).astype(np.uint8)
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"given {name} must be (H, W) or (H, W, 3), got shape {a.shape}")
    if a.dtype != np.uint8:
        raise ValueError(f"given {name}: a 3-channel map must be uint8, got {a.dtype}")
    return resize_image(a, size)


def condition_labels(value: np.ndarray, size: int) -> np.ndarray:
    """A user-supplied seg map ((H, W) class ids or a palette image, decoded first) as (size, size)
    uint8 class ids, resized with nearest neighbour."""
    a = np.asarray(value)
    labels = decode_segmentation(a) if a.ndim == 3 else a
    if labels.ndim != 2:
        raise ValueError(f"given seg must be (H, W) class ids or (H, W, 3) palette colours, got shape {a.shape}")
    return resize_labels(labels.astype(np.uint8), size)


def latent_mask(mask: np.ndarray, lat: int, what: str = "mask") -> torch.Tensor:
    """A (H, W) bool pixel mask as a (1, 1, lat, lat) float mask on a latent grid: a cell is 1 when
    any of its pixels is True (a region grows to whole cells rather than losing thin parts)."""
    a = np.asarray(mask)
    if a.ndim != 2 or a.dtype != bool:
        raise ValueError(f"{what}: the mask must be a (H, W) bool array, got shape {a.shape} {a.dtype}")
    t = torch.from_numpy(a.astype(np.float32))[None, None]
    if min(a.shape) >= lat:
        return torch.nn.functional.adaptive_max_pool2d(t, lat)
    return torch.nn.functional.interpolate(t, size=(lat, lat), mode="nearest")


def base_reference(path: Path) -> str:
    """How a graph names its base: "default" for the shipped MiniSD, else the absolute path."""
    return "default" if Path(path).resolve() == default_model_dir().resolve() else str(Path(path).resolve())


class FactorGraphPipeline:
    """``FactorGraphPipeline.from_pretrained(dir)(prompt, factors=["seg", "image"])``.

    The graph directory holds ``graph.yaml`` (nodes, edges, sampling defaults, the base it was
    trained on) and one weights folder per factor; the base model is referenced, not copied.
    """

    def __init__(self, base: BaseModel, spec: GraphSpec, modules: dict[str, torch.nn.Module],
                 path: Path | None = None) -> None:  # fmt: skip
        missing = [n for n in spec.factors if n not in modules]
        if missing:
            raise ValueError(f"factors {missing} have no module")
        text_dim = base.text_encoder.config.hidden_size
        for n, s in spec.factors.items():
            check_factor_module(s, modules[n], base.unet, text_dim)
        self.base, self.spec, self.modules, self.path = base, spec, modules, path

    # ------------------------------------------------------------------ loading / saving

    @classmethod
    def new(cls, base: BaseModel, spec: GraphSpec | dict, arch: dict[str, dict] | None = None) -> FactorGraphPipeline:
        """A graph of freshly initialised factors on ``base`` (for training, or tests).

        ``arch[name]`` passes module options (e.g. adapter ``channels``) to that factor."""
        spec = spec if isinstance(spec, GraphSpec) else GraphSpec.from_dict(spec)
        modules = {n: build_factor_module(s, base.unet, (arch or {}).get(n)).to(base.device, base.unet.dtype)
                   for n, s in spec.factors.items()}  # fmt: skip
        return cls(base, spec, modules)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, *, model: str | Path | None = None,
                        device: str = "cpu", dtype: torch.dtype = torch.float32,
                        strict_base: bool = True) -> FactorGraphPipeline:  # fmt: skip
        """Load a graph directory (default: the shipped one) on its base model.

        ``model`` overrides the base; with ``strict_base`` a base whose fingerprint differs from
        the one the factors were trained on is an error (factors only work on their own base).
        """
        root = Path(path) if path is not None else default_graph_dir()
        if not root.exists():
            if path is None:
                raise ValueError("no FG-DM graph is shipped with this build yet; pass --graph DIR (a trained graph)")
            raise ValueError(f"graph {str(path)!r} does not exist")
        spec = load_graph_spec(root)
        base_path = model
        if base_path is None and spec.base != "default":
            base_path = Path(spec.base) if Path(spec.base).is_absolute() else root / spec.base
        base = load_base_model(base_path, device=device, dtype=dtype, arg="model" if model is not None else "graph base")
        if spec.base_fingerprint and base.fingerprint != spec.base_fingerprint:
            msg = (f"graph {str(root)!r} was trained on base {spec.base_fingerprint}, but the base loaded is "
                   f"{base.fingerprint} ({base.path})")  # fmt: skip
            if strict_base:
                raise ValueError(msg + "; its factors only work on their own base")
            log.warning(msg)
        modules = {}
        for name, s in spec.factors.items():
            m = load_factor_module(s, root / name)
            modules[name] = m.to(device=device, dtype=dtype).eval().requires_grad_(False)
        return cls(base, spec, modules, root)

    def save_pretrained(self, out: str | Path, *, overwrite: bool = False, fp16: bool = False) -> Path:
        """Write ``graph.yaml`` and every factor's weights (safetensors) to ``out``, atomically."""
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"out {str(out)!r} exists and is not a folder")
        if out.exists() and any(out.iterdir()):
            if not (out / "graph.yaml").exists():
                raise ValueError(f"out {str(out)!r} is not empty and holds no graph; refusing to write there")
            if not overwrite:
                raise ValueError(f"out {str(out)!r} already holds a graph; pass overwrite=True to replace it")
        stage = out.parent / f".{out.name}.partial"
        if stage.exists():
            shutil.rmtree(stage)
        spec = GraphSpec(self.spec.factors, base_reference(self.base.path), self.base.fingerprint, self.spec.info)
        save_graph_spec(spec, stage)
        for name, m in self.modules.items():
            dtype = m.dtype
            if fp16:
                m.to(torch.float16)
            m.save_pretrained(stage / name, safe_serialization=True, max_shard_size="15MB")
            m.to(dtype)
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
        return out

    def subset(self, names: list[str], *, drop_parents: bool = False) -> FactorGraphPipeline:
        """The graph restricted to ``names`` (e.g. to ship without a factor). Every kept factor's
        parents must be kept too, or, with ``drop_parents``, the factor loses the parents that are
        not kept and runs exactly as it ran with them null (:func:`~fgdm.models.factors.drop_parents`;
        e.g. an image factor trained on seg, depth, sketch and normals, shipped with seg and depth)."""
        from ..models.factors import drop_parents as drop

        unknown = [n for n in names if n not in self.spec.factors]
        if unknown or not names:
            raise ValueError(f"factors {unknown or names}: choose from {list(self.spec.factors)}")
        orphans = {n: [p for p in self.spec.factors[n].parents if p not in names] for n in names}
        orphans = {n: ps for n, ps in orphans.items() if ps}
        if orphans and not drop_parents:
            raise ValueError(f"factors {sorted(orphans)} need their parents {orphans} kept as well "
                             "(or drop those parents: drop_parents=True, assemble-graph --drop-parents)")  # fmt: skip
        keep = [n for n in self.spec.factors if n in names]
        factors, modules = {n: self.spec.factors[n] for n in keep}, {n: self.modules[n] for n in keep}
        for n, ps in orphans.items():
            factors[n], modules[n] = drop(factors[n], modules[n], ps)
        info = {**self.spec.info, "sources": {n: v for n, v in self.spec.info.get("sources", {}).items() if n in keep}}
        if orphans:
            info["dropped_parents"] = {**info.get("dropped_parents", {}), **orphans}
        spec = GraphSpec.from_dict({"factors": {n: f.to_dict() for n, f in factors.items()}, "base": self.spec.base,
                                    "base_fingerprint": self.spec.base_fingerprint, "info": info})  # fmt: skip
        return FactorGraphPipeline(self.base, spec, modules, self.path)

    def with_factors_from(self, other: FactorGraphPipeline, names: list[str] | None = None) -> FactorGraphPipeline:
        """This graph with ``other``'s modules (and their kind and sampling settings) for ``names``
        (default: every factor ``other`` has) — e.g. a seg factor trained without attention
        distillation, or an adapter image factor in place of the ControlNet. A swapped factor must
        have the same parents here and there, and both graphs the same base."""
        if other.base.fingerprint != self.base.fingerprint:
            raise ValueError(f"the graphs were trained on different bases ({self.base.fingerprint} vs "
                             f"{other.base.fingerprint}); factors only work on their own base")  # fmt: skip
        names = list(other.spec.factors) if names is None else list(names)
        factors, modules = dict(self.spec.factors), dict(self.modules)
        sources = dict(self.spec.info.get("sources", {}))
        for name in names:
            mine, theirs = self.spec.factors.get(name), other.spec.factors.get(name)
            if mine is None or theirs is None:
                raise ValueError(f"factor {name!r} must be in both graphs ({list(self.spec.factors)} and "
                                 f"{list(other.spec.factors)})")  # fmt: skip
            if tuple(mine.parents) != tuple(theirs.parents):
                raise ValueError(f"factor {name!r}: parents {list(theirs.parents)} there, {list(mine.parents)} here; "
                                 "only a factor with the same parents can be swapped in")  # fmt: skip
            factors[name] = theirs
            modules[name] = other.modules[name].to(self.base.device, next(self.modules[name].parameters()).dtype)
            sources.pop(name, None)  # the swapped factor's run is the other graph's (if it recorded one)
            if other.spec.info.get("sources", {}).get(name):
                sources[name] = other.spec.info["sources"][name]
        info = dict(self.spec.info)
        if sources or "sources" in info:
            info["sources"] = sources
        spec = GraphSpec(factors, self.spec.base, self.spec.base_fingerprint, info)
        return FactorGraphPipeline(self.base, spec, modules, self.path)

    def differing_factors(self, other: FactorGraphPipeline) -> list[str]:
        """The factors of ``other`` that are not this graph's own: trained by another run (by the
        graphs' ``info.sources``) or of another kind; all of them when sources are not recorded."""
        mine, theirs = self.spec.info.get("sources", {}), other.spec.info.get("sources", {})
        out = []
        for n, s in other.spec.factors.items():
            here = self.spec.factors.get(n)
            if here is None or here.kind != s.kind or n not in mine or n not in theirs or mine[n] != theirs[n]:
                out.append(n)
        return out

    # ------------------------------------------------------------------ helpers

    def native_size(self) -> int:
        return self.base.unet.config.sample_size * self.base.vae_scale_factor

    @torch.no_grad()
    def encode_maps(self, rgbs: list[np.ndarray]) -> torch.Tensor:
        """(H, W, 3) uint8 maps -> scaled VAE latents (the distribution's mode)."""
        vae = self.base.vae
        x = torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        z = vae.encode(x.to(self.base.device, vae.dtype)).latent_dist.mode()
        return z * vae.config.scaling_factor

    @torch.no_grad()
    def decode_maps(self, name: str, latents: torch.Tensor) -> tuple[list[np.ndarray], list[np.ndarray] | None,
                                                                     list[float] | None]:  # fmt: skip
        """VAE-decode condition latents to (H, W, 3) uint8 maps; for seg also the class-id maps and
        each map's palette fit (before re-painting)."""
        rgbs = [np.asarray(im) for im in latents_to_images(self.base.vae, latents)]
        if name != "seg":
            return rgbs, None, None
        labels, fits = zip(*[decode_segmentation_fit(r) for r in rgbs], strict=True)
        return [encode_segmentation(lab) for lab in labels], list(labels), list(fits)

    def _etas(self, eta, factors: list[str]) -> dict[str, float]:
        """Each sampled factor's DDIM eta: the graph's, overridden by ``eta`` (a number or a dict)."""
        out = {f: float(self.spec.factors[f].eta) for f in factors}
        if eta is None:
            return out
        per = eta if isinstance(eta, dict) else dict.fromkeys(factors, eta)
        stray = [k for k in per if k not in factors]
        if stray:
            raise ValueError(f"eta: {stray} are not among the sampled factors {factors}")
        return out | {k: check_eta(v, f"eta[{k!r}]") for k, v in per.items()}

    def _check(self, factors, given, sizes, steps, mode, n) -> None:
        nodes = self.spec.factors
        for what, names in (("factors", factors), ("given", list(given))):
            bad = [f for f in names if f not in nodes]
            if bad:
                raise ValueError(f"{what}: {bad} not in this graph; its factors are {list(nodes)}")
        both = sorted(set(factors) & set(given))
        if both:
            raise ValueError(f"factors {both} are both sampled and given; give a condition or sample it, not both")
        if not factors:
            raise ValueError("factors is empty: name at least one factor to sample")
        if mode not in ("joint", "ancestral"):
            raise ValueError(f"mode must be 'joint' or 'ancestral', got {mode!r}")
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"num_images_per_prompt must be a positive integer, got {n!r}")
        for what, d in (("sizes", sizes), ("steps", steps)):
            bad = [k for k in d if k not in nodes]
            if bad:
                raise ValueError(f"{what}: {bad} not in this graph; its factors are {list(nodes)}")
        f = self.base.size_factor
        for name, s in sizes.items():
            if not isinstance(s, int) or s < f or s % f:
                raise ValueError(f"size of factor {name!r} must be a positive multiple of {f}, got {s!r}")
        for name, s in steps.items():
            if not isinstance(s, int) or s < 1:
                raise ValueError(f"steps of factor {name!r} must be a positive integer, got {s!r}")

    def class_shares(self, latents: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Seg latents (or the current estimates of them) as a ``seg_input: classes`` factor reads
        them: VAE-decoded, decoded to class ids (:func:`decode_segmentation`) and pooled to each
        class's share of every cell of a ``size`` grid, (B, NUM_CLASSES, h, w)."""
        labels = np.stack(self.decode_maps("seg", latents)[1])
        return class_fractions(torch.from_numpy(labels), tuple(size)).to(latents.device)

    def _class_reader(self, known: tuple[torch.Tensor, torch.Tensor] | None = None):
        """:meth:`class_shares`, remembering the last latents it read: a sampled map's estimate is
        decoded at every step, a fixed one once. ``known = (z, labels)``: a given map's latent and its
        exact (B, H, W) class ids, read from the labels instead (no VAE round trip)."""
        last: dict = {}

        def read(z: torch.Tensor, size) -> torch.Tensor:
            key = (z._version, tuple(size))  # with ``is``: the very tensor, unchanged since
            if last.get("z") is not z or last.get("key") != key:
                exact = known is not None and z is known[0]
                value = class_fractions(known[1], tuple(size)).to(z.device) if exact else self.class_shares(z, size)
                last.update(z=z, key=key, value=value)
            return last["value"]

        return read

    def _encode_given(self, name: str, value, size: int, n: int = 1,
                      per: int = 1) -> tuple[torch.Tensor, torch.Tensor | None, list[np.ndarray]]:  # fmt: skip
        """A given condition (one map, or a list with one per prompt) as latents, one row per sample;
        for seg also its (B, size, size) class ids (each map decoded to classes once); and the
        (size, size, 3) uint8 map each row's latent encodes."""
        one = not isinstance(value, (list, tuple))
        values = [value] if one else list(value)
        rows = lambda x: x.expand(n, *x.shape[1:]) if one else x.repeat_interleave(per, dim=0)
        labels = [condition_labels(v, size) for v in values] if name == "seg" else None
        rgbs = [encode_segmentation(lab) for lab in labels] if labels is not None else [condition_rgb(name, v, size) for v in values]
        maps = [rgbs[0].copy() for _ in range(n)] if one else [a.copy() for a in rgbs for _ in range(per)]
        ids = None if labels is None else rows(torch.from_numpy(np.stack(labels)))
        return rows(self.encode_maps(rgbs)), ids, maps

    def _denoiser(self, spec: FactorSpec, module, cond, uncond, schedule, scale: float, cond_scale: float,
                  known: tuple[torch.Tensor, torch.Tensor] | None = None):  # fmt: skip
        base = self.base
        pred = base.scheduler.config.get("prediction_type", "epsilon")
        has_parents = bool(spec.parents)
        cond_scale = cond_scale if has_parents else 1.0
        widths = spec.parent_widths()
        read = self._class_reader(known) if spec.reads_classes else None

        def denoise(x: torch.Tensor, t: torch.Tensor, parents: dict) -> torch.Tensor:
            b = x.shape[0]
            if read is not None and parents.get("seg") is not None:
                parents = {**parents, "seg": read(parents["seg"], x.shape[-2:])}
            packed = pack_parents(spec.parents, parents, x, widths) if has_parents else None
            xs, ts, ctx, ps = [x], [t], [cond], [packed]
            if scale != 1.0 or cond_scale != 1.0:  # rows: (text, c), (no text, c) [, (no text, no c)]
                xs, ts, ctx, ps = [x, x], [t, t], [cond, uncond], [packed, packed]
                if cond_scale != 1.0:
                    xs, ts, ctx = [*xs, x], [*ts, t], [*ctx, uncond]
                    ps.append(pack_parents(spec.parents, {}, x, widths))
            out = factor_forward(spec, module, base.unet, torch.cat(xs), torch.cat(ts), torch.cat(ctx),
                                 torch.cat(ps) if has_parents else None)  # fmt: skip
            a_t = schedule.alphas_cumprod[torch.cat(ts).cpu()].to(x).view(-1, 1, 1, 1)
            eps = to_epsilon(out, torch.cat(xs), a_t, pred).split(b)
            if len(eps) == 1:
                return eps[0]
            return guided(eps[2] if len(eps) == 3 else None, eps[1], eps[0], scale, cond_scale)

        return denoise

    # ------------------------------------------------------------------ inversion

    def encode_value(self, name: str, value, size: int) -> torch.Tensor:
        """A condition map (see :func:`condition_rgb`) or an image (PIL or (H, W, 3) uint8) as a latent."""
        if name == "image":
            a = np.asarray(value.convert("RGB") if isinstance(value, Image.Image) else value)
            if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
                raise ValueError(f"image must be RGB (H, W, 3) uint8, got shape {a.shape} {a.dtype}")
            return self.encode_maps([resize_image(a, size)])
        return self.encode_maps([condition_rgb(name, value, size)])

    def invert(self, name: str, value, prompt: str, *, given: dict | None = None, size: int | None = None,
               steps: int | None = None, guidance: float = 1.0) -> torch.Tensor:  # fmt: skip
        """DDIM-invert a map or image through its factor: the x_T that regenerates it.

        ``given`` supplies the factor's parents (absent ones are null). Guidance 1 (no CFG)
        inverts most faithfully. Pass the result as ``init_latents={name: x_T}``.
        """
        return self.invert_path(name, value, prompt, given=given, size=size, steps=steps, guidance=guidance)[0]

    @torch.no_grad()
    def invert_path(self, name: str, value, prompt: str, *, given: dict | None = None, size: int | None = None,
                    steps: int | None = None, guidance: float = 1.0) -> list[torch.Tensor]:  # fmt: skip
        """:meth:`invert`'s whole trajectory: x_T, x_{t_1}, ..., x_{t_{N-1}} and the clean latent
        (N + 1 latents for N steps), the path ``keep={name: (mask, path)}`` holds a factor to
        outside a region."""
        from ..sampling import invert_ddim

        nodes = self.spec.factors
        if name not in nodes:
            raise ValueError(f"factor {name!r} is not in this graph; its factors are {list(nodes)}")
        spec = nodes[name]
        size = size or spec.size or self.native_size()
        self._check([name], {}, {name: size}, {name: steps or spec.steps}, "joint", 1)
        z = self.encode_value(name, value, size)
        cond, _ = self.base.encode_text([prompt])
        uncond = self.base.encode_text([""], allow_empty=True)[0]
        sched = ddim_schedule(self.base.scheduler.config, steps or spec.steps)
        encoded = {p: self._encode_given(p, v, size) for p, v in (given or {}).items() if p in spec.parents}
        parents = {p: z for p, (z, _, _) in encoded.items()}
        known = encoded["seg"][:2] if spec.reads_classes and "seg" in encoded else None
        den = self._denoiser(spec, self.modules[name], cond, uncond, sched, float(guidance), 1.0, known)
        path = [z]
        invert_ddim(lambda x, t: den(x, t, parents), z, sched, callback=lambda _, x: path.append(x))
        return path[::-1]

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], *, factors: list[str] | None = None, given: dict | None = None,
                 num_images_per_prompt: int = 1, seed: int | list[int] = 0, mode: str = "joint",
                 sizes: dict[str, int] | None = None, steps: dict[str, int] | None = None,
                 guidance: dict[str, float] | None = None, negative_prompt: str = "",
                 eta: float | dict[str, float] | None = None, init_latents: dict[str, torch.Tensor] | None = None,
                 keep: dict[str, tuple[np.ndarray, list[torch.Tensor]]] | None = None,
                 progress: bool = False) -> FactorGraphOutput:  # fmt: skip
        """Sample ``factors`` (default: the whole graph) for a prompt, or for a list of prompts in one
        batch (``num_images_per_prompt`` samples each, prompt-major).

        ``seed``: an int gives sample i the seed ``seed + i``; a list gives every sample its own,
        so a batch of prompts draws what each prompt would draw alone with its seed (up to float
        rounding; for ``eta > 0`` the batch's per-step noise comes from the first seed).
        ``eta``: DDIM's eta; ``None`` uses each factor's own (graph.yaml's ``eta``, default 0), a
        number sets every sampled factor's, a dict some factors' (the rest keep the graph's).
        ``given``: conditions supplied instead of sampled (e.g. an edited map): one map for every
        sample, or a list with one map per prompt. Parents that are neither sampled nor given are
        the null condition. ``sizes``/``steps``/``guidance`` override
        the graph's per-factor defaults. ``mode``: "joint" (every factor steps at every step,
        conditioned on its parents' current estimates) or "ancestral" (each factor finishes
        before its children start). ``init_latents[name]``: the starting noise x_T of a factor
        (e.g. from :meth:`invert`) instead of the seeded noise. ``keep[name] = (mask, path)``:
        regenerate the factor only where the (H, W) bool ``mask`` is True (any pixel of a latent
        cell frees the cell); elsewhere it follows ``path``, a trajectory from :meth:`invert_path`
        run with the same steps (:class:`~fgdm.sampling.KeepOutside`) — editing a region of a
        real image or map while the rest stays as inverted.
        """
        m, nodes = self.base, self.spec.factors
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("prompt: give at least one prompt")
        given = dict(given or {})
        for name, v in given.items():
            if isinstance(v, (list, tuple)) and len(v) != len(prompts):
                raise ValueError(f"given[{name!r}]: a list needs one map per prompt ({len(prompts)}), got {len(v)}")
        factors = list(nodes) if factors is None else list(factors)
        sizes, steps, guidance = dict(sizes or {}), dict(steps or {}), dict(guidance or {})
        # 1. check inputs and resolve per-factor settings
        self._check(factors, given, sizes, steps, mode, num_images_per_prompt)
        etas = self._etas(eta, factors)
        for what, d in (("init_latents", init_latents), ("keep", keep)):
            stray = [k for k in (d or {}) if k not in factors]
            if stray:
                raise ValueError(f"{what}: {stray} are not among the sampled factors {factors}")
        order = [n for n in nodes if n in factors or n in given]
        size = {n: sizes.get(n, nodes[n].size or self.native_size()) for n in order}
        self._check(factors, {}, size, {}, mode, 1)  # the graph's own sizes must fit this base too
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        # 2. encode the prompts (one row per sample) and the unconditional prompt
        per = num_images_per_prompt
        rows = [p for p in prompts for _ in range(per)]
        n = len(rows)
        seeds = image_seeds(seed, n)
        cond, _ = m.encode_text_rows(rows)  # each distinct prompt encoded once
        uncond = m.encode_text_rows([negative_prompt] * n, allow_empty=True)[0]
        # 3. encode the given conditions at the largest size any sampled child needs
        runs: list[FactorRun] = []
        known = None  # a given seg map's latent and exact class ids, for factors that read classes
        given_maps, given_labels = {}, None  # returned as given, not decoded back from their latents
        for name in order:
            if name in given:
                kids = [c for c in factors if name in nodes[c].parents]
                s = max([size[c] for c in kids] or [size[name]])
                z, labels, given_maps[name] = self._encode_given(name, given[name], s, n, per)
                runs.append(FactorRun(name, nodes[name].parents, None, fixed=z))
                if labels is not None:
                    given_labels = labels
                if name == "seg" and any(nodes[c].reads_classes for c in kids):
                    known = (z, labels)
        timings["encode_s"] = time.perf_counter() - t0
        # 4. initial noise per factor and sample: sample i of factor f uses seed seeds[i] * 16 + f
        for name in order:
            if name in given:
                continue
            s, spec = size[name], nodes[name]
            lat = s // m.vae_scale_factor
            if name in (init_latents or {}):
                x = init_latents[name].to(m.device, m.unet.dtype).expand(n, -1, -1, -1).clone()
                if x.shape[-2:] != (lat, lat):
                    raise ValueError(f"init_latents[{name!r}] is {tuple(x.shape[-2:])}, factor size {s} needs {(lat, lat)}")
            else:
                x = torch.stack([torch.randn(4, lat, lat, generator=torch.Generator().manual_seed(sd * 16 + VARIABLES.index(name)))
                                 for sd in seeds]).to(m.device, m.unet.dtype)  # fmt: skip
            sched = ddim_schedule(m.scheduler.config, steps.get(name, spec.steps))
            den = self._denoiser(spec, self.modules[name], cond, uncond, sched, float(guidance.get(name, spec.guidance)),
                                 float(spec.cond_guidance), known)  # fmt: skip
            held = None
            if name in (keep or {}):
                mask, path = keep[name]
                held = KeepOutside(latent_mask(mask, lat, f"keep[{name!r}]").to(x), [p.to(m.device) for p in path])
            runs.append(FactorRun(name, spec.parents, den, x, sched, keep=held, eta=etas[name]))
        runs.sort(key=lambda r: order.index(r.name))
        total = sum(len(r.schedule.timesteps) for r in runs if r.fixed is None)
        bar = tqdm(total=total, desc=f"FG-DM {mode}", disable=not progress)
        t1 = time.perf_counter()
        gen = torch.Generator().manual_seed(seeds[0] + 10_000)
        latents = sample_graph(runs, mode=mode, generator=gen, callback=lambda *_: bar.update())
        bar.close()
        timings["denoise_s"] = time.perf_counter() - t1
        timings.update({f"factor_{r.name}_s": r.seconds for r in runs if r.fixed is None})
        sampled = [r.name for r in runs if r.fixed is None]
        # 5. decode the image and every condition map
        t2 = time.perf_counter()
        images, maps, labels, fits = [], {}, None, None
        for name, z in latents.items():
            if name == "image":
                images = latents_to_images(m.vae, z)
            elif name in given_maps:
                maps[name] = given_maps[name]
                if name == "seg":
                    labels = [a.numpy().copy() for a in given_labels]  # one array per sample, as sampled maps
            else:
                maps[name], lab, fit = self.decode_maps(name, z)
                if name == "seg":
                    labels, fits = lab, fit
        timings["decode_s"] = time.perf_counter() - t2
        timings["total_s"] = time.perf_counter() - t0
        return FactorGraphOutput(images, maps, labels, latents, seeds, sampled, sorted(given), timings, fits)
