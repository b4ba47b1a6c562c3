"""How much does a causal text encoder change the second object's token state? (docs/results.md)

For every two-object prompt ("a photo of a A and a B", or any other with two objects, e.g. the
relation prompts "a A to the left of a B"; objects from the MultiGen JSON or the vocabulary) this compares the text encoder's output state
(the UNet's cross-attention context) at each object's last token with the state the same object
gets alone ("a photo of a A", "a photo of a B"): its cosine similarity to its own solo state and
to the *other* object's. In a causal encoder, with the "a photo of a A and a B" template, the first
object's state is its solo state exactly (the solo prompt is a prefix); the second object's has
read the first. With the per-image verdicts
of a finished `fgdm eval recall` run on the same prompts (--results), it splits the similarities
by whether the judge found each object, to see whether the images that lose B are those whose B
state is least like B.

    python scripts/text_encoder_order.py --model runs/minisd-32787 --prompts prompts/pairs_500.json \
        --results runs/eval-pairs500-32787 > runs/text_encoder_order.json

With --intervene DIR (the "a photo of a A and a B" template only) it then tests the association
by intervention: every pair prompt is generated
again, with the seeds, steps, guidance and judge of `fgdm eval recall`, but with B's token states
replaced by the states B's tokens get in "a photo of a B" (everything else, the end-of-text and
padding states included, stays the pair's; with --intervene-mode b+tail those become the mean of
the two solo prompts' end-of-text and padding states). DIR is a resumable folder like eval recall's --out;
the JSON then holds both runs' rates and a paired sign test against --results.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
from pathlib import Path

import torch


def object_states(tokenizer, encoder, prompts: list[str], names: list[list[str]]) -> list[list[torch.Tensor]]:
    """For each prompt, the output state at the last token of each name in ``names`` (found in that
    order in the prompt's tokens, each after the one before)."""
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids  # fmt: skip
    with torch.no_grad():
        h = encoder(ids).last_hidden_state
    out = []
    for i, (text, row) in enumerate(zip(prompts, names, strict=True)):
        seq, at, states = ids[i].tolist(), 0, []
        for name in row:
            sub = tokenizer(name).input_ids[1:-1]
            hit = next((j for j in range(at, len(seq) - len(sub) + 1) if seq[j : j + len(sub)] == sub), None)
            if hit is None:
                raise ValueError(f"--prompts: {name!r} not found in the tokens of {text!r}")
            at = hit + len(sub)
            states.append(h[i, at - 1])
        out.append(states)
    return out


def _solo_prompt(text: str, name: str) -> str:
    """'a photo of a NAME', with the article the prompt gives NAME."""
    m = re.search(r"\b(an?) " + re.escape(name) + r"\b", text)
    return f"a photo of {m.group(1) if m else 'a'} {name}"


def _auc(images: list[tuple[str, float, bool]]) -> float:
    """How often an image that kept B has a larger margin (B state nearer B than A) than one that lost it."""
    kept = [m for _, m, f in images if f]
    lost = [m for _, m, f in images if not f]
    wins = sum((k > x) + 0.5 * (k == x) for k in kept for x in lost)
    return wins / max(1, len(kept) * len(lost))


def _permutation_p(images: list[tuple[str, float, bool]], rounds: int = 2000, seed: int = 0) -> float:
    """One-sided p of the AUC when the found/lost verdicts are shuffled within each B category
    (so a category that is simply hard to draw cannot produce the association)."""
    rng = random.Random(seed)
    by_cat: dict[str, list[int]] = {}
    for i, (c, _, _) in enumerate(images):
        by_cat.setdefault(c, []).append(i)
    observed, hits = _auc(images), 0
    for _ in range(rounds):
        verdicts = [f for _, _, f in images]
        for idx in by_cat.values():
            vals = [verdicts[i] for i in idx]
            rng.shuffle(vals)
            for i, v in zip(idx, vals, strict=True):
                verdicts[i] = v
        hits += _auc([(c, m, v) for (c, m, _), v in zip(images, verdicts, strict=True)]) >= observed
    return round((hits + 1) / (rounds + 1), 4)


def intervene(args, tok, rows: list[tuple[str, str, str]], found: dict[int, list[set]]) -> dict:
    """Generate every pair prompt with B's token states taken from "a photo of a B"; judge; compare."""
    from fgdm.eval.metrics import sign_test
    from fgdm.eval.prompts import PromptEntry
    from fgdm.eval.runner import run_prompts
    from fgdm.models.judge import load_judge
    from fgdm.pipelines.text2image import Text2ImagePipeline

    pipe = Text2ImagePipeline.from_pretrained(args.model)
    m = pipe.model
    encode = m.encode_text
    spans = {}  # pair prompt -> (solo prompt, B's token positions in the pair, B's in the solo prompt)
    for text, _, b in rows:
        if re.fullmatch(r"a photo of an? .+ and an? .+", text) is None:
            raise ValueError(f"--intervene: expects prompts 'a photo of a A and a B', got {text!r}")
        head = text[: text.index(" and ")] + " and"
        n_b = len(tok(f"a {b}").input_ids) - 2  # "a", then B's tokens
        start = len(tok(head).input_ids) - 1
        solo = f"a photo of {text.split(' and ', 1)[1]}"
        solo_start = len(tok("a photo of").input_ids) - 1
        spans[text] = (solo, range(start, start + n_b), range(solo_start, solo_start + n_b))
    max_len = tok.model_max_length

    def encode_with_solo_b(prompts, **kw):
        emb, tokens = encode(prompts, **kw)
        for i, p in enumerate(prompts):
            if p in spans:
                solo, at, src = spans[p]
                solo_b = encode([solo])[0][0]
                emb[i, list(at)] = solo_b[list(src)]
                if args.intervene_mode == "b+tail":  # end-of-text and padding: the mean of the two solo prompts'
                    solo_a = encode([p[: p.index(" and ")]])[0][0]
                    eos = len(tok(p).input_ids) - 1
                    n = max_len - eos
                    ea, eb = (len(tok(x).input_ids) - 1 for x in (p[: p.index(" and ")], solo))
                    emb[i, eos:] = (solo_a[ea : ea + n] + solo_b[eb : eb + n]) / 2
        return emb, tokens

    m.encode_text = encode_with_solo_b
    entries = [PromptEntry(t, (a, b)) for t, a, b in rows][: args.limit]
    missing = [i for i in range(len(entries)) if i not in found]
    if missing:
        raise ValueError(f"--results has no verdict for prompts {missing[:5]}{' ...' if len(missing) > 5 else ''}: "
                         "it must be a run on the same --prompts")
    res = run_prompts(entries, Path(args.intervene), pipe=pipe, judge=load_judge(args.judge), images_per_prompt=1,
                      steps=25, guidance_scale=7.5, seed=0, size=None)  # fmt: skip
    rate = lambda hits: round(sum(hits) / len(hits), 4)
    both_new, both_old, b_new, b_old = [], [], [], []
    for r in res:
        (a, b), old = r["objects"], found[r["prompt_index"]][r["k"]]
        bn, bo = a in r["present"] and b in r["present"], a in old and b in old
        both_new.append(bn)
        both_old.append(bo)
        b_new.append(b in r["present"])
        b_old.append(b in old)
    test = sign_test(both_old, both_new)  # images that gained / lost both objects
    gained, lost, p = test["better"], test["worse"], test["p"]
    a_new = [r["objects"][0] in r["present"] for r in res]
    a_old = [r["objects"][0] in found[r["prompt_index"]][r["k"]] for r in res]
    return {"images": len(res), "both_present": [rate(both_old), rate(both_new)],
            "first_present": [rate(a_old), rate(a_new)], "second_present": [rate(b_old), rate(b_new)],
            "both_gained": gained, "both_lost": lost, "sign_test_p": round(p, 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a diffusers SD directory (tokenizer/, text_encoder/)")
    ap.add_argument("--prompts", required=True, help="two-object prompts (a text file or MultiGen JSON)")
    ap.add_argument("--results", help="a finished `fgdm eval recall` run on the same prompts (its results/)")
    ap.add_argument("--intervene", help="generate again with B's solo token states, into this folder (resumable)")
    ap.add_argument("--limit", type=int, help="with --intervene: the first N prompts")
    ap.add_argument("--intervene-mode", choices=("b", "b+tail"), default="b",
                    help="b: B's tokens get their solo states; b+tail: also the end-of-text and padding states "
                         "become the mean of the two solo prompts' (aligned from their end-of-text token)")
    ap.add_argument("--judge", help="with --intervene: the judge (default: the shipped one, as eval recall)")
    args = ap.parse_args(argv)
    if args.intervene and not args.results:
        ap.error("--intervene needs --results (the unmodified run to compare with)")
    if not (Path(args.model, "tokenizer").is_dir() and Path(args.model, "text_encoder").is_dir()):
        ap.error(f"--model {args.model!r} is not a diffusers SD folder (no tokenizer/ and text_encoder/)")
    if args.limit is not None and args.limit < 1:
        ap.error(f"--limit must be >= 1, got {args.limit}")
    try:
        return run(args)
    except (ValueError, OSError) as e:  # bad prompts, results or model folder: a one-line message, exit 2
        ap.error(str(e))


def run(args) -> int:
    from transformers import CLIPTextModel, CLIPTokenizer

    from fgdm.eval.prompts import load_prompt_entries

    tok = CLIPTokenizer.from_pretrained(args.model, subfolder="tokenizer")
    enc = CLIPTextModel.from_pretrained(args.model, subfolder="text_encoder").eval()
    rows = []
    for i, e in enumerate(load_prompt_entries(args.prompts, "--prompts")):
        if len(e.objects) != 2:
            raise ValueError(f"--prompts: entry {i} ({e.text!r}) names {len(e.objects)} objects; two-object prompts only")
        rows.append((e.text, *e.objects))
    pair = object_states(tok, enc, [t for t, _, _ in rows], [[a, b] for _, a, b in rows])
    solos = [[_solo_prompt(t, a), _solo_prompt(t, b)] for t, a, b in rows]
    solo_a = object_states(tok, enc, [x for x, _ in solos], [[a] for _, a, _ in rows])
    solo_b = object_states(tok, enc, [y for _, y in solos], [[b] for _, _, b in rows])
    cos = torch.nn.functional.cosine_similarity
    per = []
    for i, (text, a, b) in enumerate(rows):
        (ha, hb), (sa,), (sb,) = pair[i], solo_a[i], solo_b[i]
        per.append({"prompt": text, "a": a, "b": b, "a_vs_solo_a": float(cos(ha, sa, dim=0)),
                    "b_vs_solo_b": float(cos(hb, sb, dim=0)), "b_vs_solo_a": float(cos(hb, sa, dim=0)),
                    "solo_a_vs_solo_b": float(cos(sa, sb, dim=0))})  # fmt: skip
    mean = lambda xs: round(statistics.fmean(xs), 4) if xs else None
    keys = ("a_vs_solo_a", "b_vs_solo_b", "b_vs_solo_a", "solo_a_vs_solo_b")
    summary = {"prompts": len(per), **{f"mean_{k}": mean([p[k] for p in per]) for k in keys},
               "b_closer_to_a_than_to_b": sum(p["b_vs_solo_a"] > p["b_vs_solo_b"] for p in per)}  # fmt: skip
    if args.results:
        found = {}
        for f in sorted(Path(args.results, "results").glob("*.json")):
            x = json.loads(f.read_text())
            found.setdefault(x["prompt_index"], []).append(set(x["present"]))
        if not found:
            raise ValueError(f"--results: no results/*.json in {args.results!r} (a finished `fgdm eval recall --out` folder)")
        split = {}
        for i, p in enumerate(per):
            for present in found.get(i, []):
                key = ("A" if p["a"] in present else "-") + ("B" if p["b"] in present else "-")
                split.setdefault(key, []).append(p)
        summary["by_verdict"] = {k: {"images": len(v), **{f"mean_{c}": mean([p[c] for p in v]) for c in keys[1:3]}}
                                 for k, v in sorted(split.items())}  # fmt: skip
        images = [(p["b"], p["b_vs_solo_b"] - p["b_vs_solo_a"], p["b"] in present)
                  for i, p in enumerate(per) for present in found.get(i, [])]  # fmt: skip
        summary["b_found_auc_of_margin"] = round(_auc(images), 4)
        summary["b_found_auc_p_within_category"] = _permutation_p(images)
    if args.intervene:
        summary["intervention"] = intervene(args, tok, rows, found)
    json.dump({"summary": summary, "per_prompt": per}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
