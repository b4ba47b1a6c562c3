"""`fgdm eval real-edit` with a text edit's negative prompt given to the image re-render as well.

    python scripts/real_edit_negative_image.py --edit remove --out runs/exp-real-edit-remove-50-negboth [--n 50]

The measurement behind results.md's "Measured, left out: the negative prompt for the image
re-render too": a text edit already guides the seg factor away from the classes it removes or
replaces; here the masked image re-render (the pipeline call with ``factors=["image"]`` and
``keep``) gets the same negative prompt. Everything else is ``fgdm eval real-edit``'s default
(:func:`fgdm.eval.real_edit_bench.run_real_edit`), so its rows compare with that command's, image by
image. Prints the summary as JSON.
"""

import argparse
import json
from pathlib import Path

import fgdm.editing.real as real
import fgdm.eval.real_edit_bench as bench
from fgdm.models.judge import load_judge
from fgdm.pipelines.factor_graph import FactorGraphPipeline
from fgdm.world.captions import article

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edit", choices=["text", "remove"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=50)
    a = ap.parse_args()
    if a.n < 1:
        ap.error(f"--n must be >= 1, got {a.n}")
    negative = {"prompt": ""}
    call = FactorGraphPipeline.__call__

    def with_negative(self, *args, **kw):
        if kw.get("factors") == ["image"] and "keep" in kw and negative["prompt"]:
            kw["negative_prompt"] = negative["prompt"]
        return call(self, *args, **kw)

    edit_real_image = real.edit_real_image

    def edit_with_negative(pipe, judge, image, prompt, **kw):
        names = [*(kw.get("replace") or {}), *(kw.get("remove") or [])]
        negative["prompt"] = ", ".join(article(n) + n for n in names)
        try:
            return edit_real_image(pipe, judge, image, prompt, **kw)
        finally:
            negative["prompt"] = ""

    FactorGraphPipeline.__call__ = with_negative
    bench.edit_real_image = edit_with_negative
    res = bench.run_real_edit(FactorGraphPipeline.from_pretrained(), load_judge(), Path(a.out), n=a.n, edit=a.edit,
                              progress=False)  # fmt: skip
    print(json.dumps(res["summary"], indent=1))
