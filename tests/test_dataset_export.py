import json

import numpy as np
import pytest
import torch
from PIL import Image

import fgdm.world.export as export_mod
from fgdm.world.conditions import decode_segmentation
from fgdm.world.dataset import SceneWorldDataset, collate
from fgdm.world.export import FOLDERS, export_dataset, read_samples


def test_dataset_items():
    ds = SceneWorldDataset(4, size=64, seed=3)
    item = ds[1]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    for c in ("seg", "depth", "normal", "sketch"):
        assert item[f"cond_{c}"].shape == (3, 64, 64)
    assert item["seg"].dtype == torch.int64 and item["seg"].shape == (64, 64)
    assert item["grounding_masks"].shape[0] == len(item["grounding"]) and item["grounding_masks"].dtype == torch.bool
    assert isinstance(item["caption"], str)
    with pytest.raises(IndexError):
        ds[4]
    with pytest.raises(ValueError, match="conditions"):
        SceneWorldDataset(4, conditions=("seg", "flow"))
    with pytest.raises(ValueError, match="size"):
        SceneWorldDataset(4, size=100)


def test_dataset_is_deterministic_across_instances_and_workers():
    a = SceneWorldDataset(6, size=64, seed=11)
    b = SceneWorldDataset(6, size=64, seed=11)
    assert torch.equal(a[5]["image"], b[5]["image"]) and a[5]["caption"] == b[5]["caption"]
    assert not torch.equal(a[4]["image"], a[5]["image"])
    assert not torch.equal(SceneWorldDataset(6, size=64, seed=12)[5]["image"], a[5]["image"])
    loader = torch.utils.data.DataLoader(a, batch_size=3, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert batches[0]["image"].shape == (3, 3, 64, 64)
    assert torch.equal(batches[1]["image"][2], a[5]["image"])
    assert batches[1]["caption"][2] == a[5]["caption"]


def test_export_layout_and_records(tmp_path):
    out = export_dataset(tmp_path / "w", n=5, size=64, seed=2, progress=False)
    meta = json.loads((out / "world.json").read_text())
    assert meta["n"] == 5 and meta["size"] == 64 and len(meta["categories"]) == len(meta["palette"])
    recs = read_samples(out)
    assert [r["index"] for r in recs] == list(range(5))
    assert (out / "sheet.png").exists()
    for r in recs:
        for folder in FOLDERS:
            assert (out / r["files"][folder]).exists()
        ids = np.asarray(Image.open(out / r["files"]["seg_ids"]))
        pal = np.asarray(Image.open(out / r["files"]["seg"]))
        assert np.array_equal(decode_segmentation(pal, min_area=0), ids)
        inst = np.asarray(Image.open(out / r["files"]["instance"]))
        for o in r["objects"]:
            if o["bbox"] is not None:
                x0, y0, x1, y1 = o["bbox"]
                ys, xs = np.nonzero(inst == o["instance_id"])
                assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        raw = np.asarray(Image.open(out / r["files"]["depth_raw"]))
        assert raw.dtype in (np.uint16, np.int32) and raw.min() > 0
    # parallel export writes the same bytes as a serial one
    out2 = export_dataset(tmp_path / "w2", n=5, size=64, seed=2, workers=2, progress=False, sheet_rows=0)
    assert [r["caption"] for r in read_samples(out2)] == [r["caption"] for r in recs]
    a = (out / recs[3]["files"]["images"]).read_bytes()
    assert a == (out2 / recs[3]["files"]["images"]).read_bytes()
    assert not (out2 / "sheet.png").exists()


def test_export_refuses_to_overwrite_and_replaces_with_overwrite(tmp_path):
    out = export_dataset(tmp_path / "w", n=2, size=64, progress=False)
    with pytest.raises(ValueError, match="already holds a run"):
        export_dataset(out, n=2, size=64, progress=False)
    export_dataset(out, n=3, size=64, seed=1, overwrite=True, progress=False)
    assert len(read_samples(out)) == 3
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds no fgdm run"):
        export_dataset(other, n=2, size=64, overwrite=True, progress=False)
    assert (other / "notes.txt").read_text() == "keep me"


def test_interrupted_export_leaves_nothing(tmp_path, monkeypatch):
    real = export_mod._write_one

    def flaky(args):
        if args[0] == 2:
            raise RuntimeError("disk on fire")
        return real(args)

    monkeypatch.setattr(export_mod, "_write_one", flaky)
    with pytest.raises(RuntimeError):
        export_dataset(tmp_path / "w", n=4, size=64, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, match", [(dict(n=0), "n must"), (dict(n=2, size=70), "size"), (dict(n=2, seed=-1), "seed")]
)
def test_export_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export_dataset(tmp_path / "w", progress=False, **kwargs)
    assert not (tmp_path / "w").exists()
