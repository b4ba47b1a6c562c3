"""Image-space best-of-N: the choice rule, early stop, the judge's recalls, the CLI and its sheet."""

import json

import numpy as np
import pytest

from fgdm.cli import main
from fgdm.compliance.best_of import best_of_images
from fgdm.compliance.recall import object_recall, present_categories
from fgdm.models.judge import load_judge
from fgdm.pipelines.text2image import Text2ImagePipeline
from fgdm.world.categories import category
from fgdm.world.sheet import candidate_sheet


@pytest.fixture(scope="module")
def pipe(tiny_sd_dir):
    return Text2ImagePipeline.from_pretrained(tiny_sd_dir)


class ScriptedJudge:
    """Finds, in the k-th image it is shown, the objects listed k-th (whatever the image holds)."""

    def __init__(self, found: list[list[str]]):
        self.found, self.calls = list(found), []

    def segment_images(self, images):
        self.calls.append(len(images))
        out = []
        for _ in images:
            seg = np.full((32, 32), category("grass").id, np.uint8)
            for k, name in enumerate(self.found.pop(0)):
                seg[k * 8 : k * 8 + 8, :8] = category(name).id  # 6% of the image each: present
            out.append(seg)
        return out


def test_best_of_keeps_the_highest_recall_then_the_earliest(pipe):
    judge = ScriptedJudge([["dog"], ["dog", "cat"], [], ["cat", "dog"]])
    res = best_of_images(pipe, judge, "a dog and a cat", n=4, seed=7, steps=2)
    assert [c.recall for c in res.candidates] == [0.5, 1.0, 0.0, 1.0]
    assert res.chosen == 1 and res.image is res.images[1]  # a tie at 1.0: the earlier image
    assert [c.seed for c in res.candidates] == [7, 8, 9, 10] and judge.calls == [4]
    assert res.candidates[0].missing == ["cat"] and res.candidates[2].present == []
    alone = pipe("a dog and a cat", seed=8, num_inference_steps=2).images[0]  # seed + i redraws image i
    assert np.abs(np.asarray(alone, np.int16) - np.asarray(res.images[1], np.int16)).max() <= 2
    assert res.timings["total_s"] == pytest.approx(res.timings["images_s"] + res.timings["judge_s"])
    assert res.objects == ["dog", "cat"] and not res.stopped_early


def test_best_of_early_stop_and_bad_inputs(pipe):
    judge = ScriptedJudge([["dog"], ["dog", "cat"], ["cat"], ["cat"]])
    res = best_of_images(pipe, judge, "a dog and a cat", n=6, steps=2, early_stop=1.0, batch_size=2)
    assert res.stopped_early and len(res.candidates) == 2 and judge.calls == [2] and res.chosen == 1
    for kwargs, needle in (({"n": 0}, "n \\(--best-of\\)"), ({"early_stop": 1.5}, "early_stop"),
                           ({"batch_size": 0}, "batch_size")):  # fmt: skip
        with pytest.raises(ValueError, match=needle):
            best_of_images(pipe, judge, "a dog", steps=2, **kwargs)
    with pytest.raises(ValueError, match=r"names no known objects .*dragon"):
        best_of_images(pipe, judge, "a dragon in the sky", n=2)


def test_best_of_with_a_real_judge_scores_each_image_as_the_judge_sees_it(pipe, tiny_judge_dir):
    judge = load_judge(tiny_judge_dir)
    res = best_of_images(pipe, judge, "a dog, a cat and a bus", n=3, steps=2)
    for c, img in zip(res.candidates, res.images, strict=True):
        assert c.recall == object_recall(["dog", "cat", "bus"], present_categories(judge.segment_images([img])[0]))
    assert res.candidates[res.chosen].recall == max(c.recall for c in res.candidates)


def test_cli_best_of_writes_the_chosen_image_the_sheet_and_record(tiny_sd_dir, tiny_judge_dir, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--model", str(tiny_sd_dir), "--steps", "2", "--quiet"]
    assert main(["generate", "a dog and a cat", "--best-of", "3", "--judge", str(tiny_judge_dir), "--seed", "5",
                 "--keep-candidates", "-o", str(out), *common]) == 0  # fmt: skip
    rec = json.loads((out / "record.json").read_text())
    assert rec["kind"] == "generate-best-of" and [c["seed"] for c in rec["candidates"]] == [5, 6, 7]
    assert rec["chosen_recall"] == max(c["recall"] for c in rec["candidates"])
    assert rec["files"] == ["image-000.png", "candidates.png"] and rec["judge"]["fingerprint"]
    assert "best of 3 images" in capsys.readouterr().out
    seed = rec["candidates"][rec["chosen"]]["seed"]
    assert main(["generate", "a dog and a cat", "--seed", str(seed), "-o", str(tmp_path / "one"), *common]) == 0
    from PIL import Image

    a, b = (np.asarray(Image.open(d / "image-000.png"), np.int16) for d in (out, tmp_path / "one"))
    assert np.abs(a - b).max() <= 2  # the chosen image is its seed's image
    bad = [(["--sbpc", "2"], "two searches"), (["--factors", "seg,image"], "--factors is not available"),
           (["--n", "2"], "--n must be 1"), (["--complete"], "--complete relabels a seg map"),
           (["--eta", "0.5"], "--eta is not available")]  # fmt: skip
    for extra, needle in bad:
        assert main(["generate", "a dog", "--best-of", "2", *extra, "-o", str(tmp_path / "x"), *common]) == 2
        assert needle in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["generate", "a dog", "--judge", str(tiny_judge_dir), "-o", str(tmp_path / "x"), *common]) == 2
    assert "pass --best-of" in capsys.readouterr().err
    assert main(["generate", "a dragon", "--best-of", "2", "--judge", str(tiny_judge_dir), "-o", str(tmp_path / "x"),
                 *common]) == 2  # fmt: skip
    assert "names no known objects" in capsys.readouterr().err


def test_candidate_sheet_lays_candidates_out_in_rows():
    from fgdm.compliance.best_of import ImageCandidate

    tiles = [np.full((16, 16, 3), 40 * i, np.uint8) for i in range(7)]
    cands = [ImageCandidate(i, i, i / 7, [], [] if i == 6 else ["dog"]) for i in range(7)]
    sheet = candidate_sheet(tiles, cands, 6, per_row=5, cell=32)
    assert sheet.width == 5 * 32 and sheet.height > 2 * 32  # 5 + 2 (padded with blank tiles)
    arr = np.asarray(sheet)
    assert (arr[5, 32 * 2 + 5] == 80).all() and (arr[arr.shape[0] // 2 + 20, 4 * 32 + 5] == 255).all()
    with pytest.raises(ValueError, match="one tile per candidate"):
        candidate_sheet(tiles[:3], cands, 0)
