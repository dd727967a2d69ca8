"""Image data (tuneforge.data.images): loaders, bad files, preprocessing, transforms, CutMix/MixUp."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tuneforge.data import images as im
from tuneforge.data.images import (
    BUILTIN_IMAGE_SETS,
    Preprocessing,
    builtin_image_labels,
    check_images,
    eval_transform,
    limit_per_class,
    mix_batch,
    open_image,
    read_image_records,
    train_transform,
)
from tuneforge.errors import DataError
from tuneforge.kernels.soft_ce import soft_cross_entropy

pytestmark = pytest.mark.unit

FASHION = Path(os.environ.get("TUNEFORGE_FASHION_MNIST_DIR") or "/usr/share/datasets/fashion-mnist")


def _png(path: Path, color=(10, 20, 30), size=(6, 5), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color if mode == "RGB" else color[0]).save(path)
    return path


def _one_line_error(exc_info, *names):
    msg = str(exc_info.value)
    assert "\n" not in msg
    for n in names:
        assert str(n) in msg, (n, msg)
    return msg


# ----------------------------------------------------------------------------------------------- loaders


def test_image_folder(tmp_path):
    root = tmp_path / "pics"
    _png(root / "cat" / "b.PNG")
    _png(root / "cat" / "a.jpg", mode="L")
    _png(root / "dog" / "x.png")
    (root / "dog" / "notes.txt").write_text("not an image")
    _png(root / "loose.png")  # files in the root itself are ignored
    df = read_image_records(str(root), "data.train")
    assert list(df.columns) == ["image", "label"]
    assert list(df.index) == [0, 1, 2]
    assert df["label"].tolist() == ["cat", "cat", "dog"]
    assert [Path(r).name for r in df["image"]] == ["a.jpg", "b.PNG", "x.png"]
    assert all(Path(r).is_absolute() for r in df["image"])
    img = open_image(df["image"][0])
    assert img.mode == "RGB" and img.size == (6, 5)
    check_images(df["image"].tolist())

    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    with pytest.raises(DataError) as e:
        read_image_records(str(empty), "data.train")
    _one_line_error(e, empty)
    with pytest.raises(DataError) as e:
        read_image_records(str(tmp_path / "nope"), "data.train")
    _one_line_error(e, "data.train", "file or directory not found", "nope")


def test_csv_and_jsonl_tables_relative_paths(tmp_path):
    _png(tmp_path / "imgs" / "1.png")
    _png(tmp_path / "imgs" / "2.png", color=(200, 0, 0))
    (tmp_path / "t.csv").write_text("path,y\nimgs/1.png,0\nimgs/2.png,1\n")
    df = read_image_records(str(tmp_path / "t.csv"), "data.train", image_column="path", label_column="y")
    assert df["label"].tolist() == ["0", "1"]
    assert df["image"].tolist() == [str((tmp_path / "imgs" / f"{i}.png").resolve()) for i in (1, 2)]
    rows = [{"image": "imgs/1.png", "label": "a"}, {"image": str(tmp_path / "imgs" / "2.png"), "label": "b"}]
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError) as e:  # relative to the table's own directory: sub/imgs/1.png does not exist
        read_image_records(str(sub / "t.jsonl"), "data.train")
    _one_line_error(e, "row 1", "1.png", "t.jsonl")
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    df = read_image_records(str(tmp_path / "t.jsonl"), "data.train")
    assert df["label"].tolist() == ["a", "b"]
    assert open_image(df["image"][1]).getpixel((0, 0)) == (200, 0, 0)


def test_csv_missing_file_names_row(tmp_path):
    _png(tmp_path / "1.png")
    (tmp_path / "t.csv").write_text("image,label\n1.png,a\nmissing.png,b\n")
    with pytest.raises(DataError) as e:
        read_image_records(str(tmp_path / "t.csv"), "data.train")
    _one_line_error(e, "t.csv", "row 2", "missing.png")
    with pytest.raises(DataError) as e:
        read_image_records(str(tmp_path / "t.csv"), "data.train", image_column="img")
    _one_line_error(e, "'img'", "data.image_column")


def test_datasets_dir(tmp_path):
    datasets = pytest.importorskip("datasets")
    pics = [Image.new("RGB", (4, 3), (i * 50, 0, 0)) for i in range(3)]
    feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["neg", "pos"])})
    ds = datasets.Dataset.from_dict({"img": pics, "label": [1, 0, 1]}, features=feats)
    ds.save_to_disk(str(tmp_path / "one"))
    df = read_image_records(str(tmp_path / "one"), "data.train", image_column="img")
    assert df["label"].tolist() == ["pos", "neg", "pos"]
    assert df["image"][2] == f"dataset:{(tmp_path / 'one').resolve()}:2"
    assert open_image(df["image"][2]).getpixel((0, 0)) == (100, 0, 0)

    # a DatasetDict: its train split; bytes images and string labels
    import io

    def png_bytes(v):
        buf = io.BytesIO()
        Image.new("L", (3, 3), v).save(buf, format="PNG")
        return buf.getvalue()

    d = datasets.Dataset.from_dict({"image": [png_bytes(7), png_bytes(9)], "cls": ["x", "y"]})
    datasets.DatasetDict({"train": d, "test": d.select([1])}).save_to_disk(str(tmp_path / "dd"))
    df = read_image_records(str(tmp_path / "dd"), "data.train", label_column="cls")
    assert df["label"].tolist() == ["x", "y"]
    assert df["image"][1] == f"dataset:{(tmp_path / 'dd' / 'train').resolve()}:1"
    assert open_image(df["image"][1]).getpixel((1, 1)) == (9, 9, 9)
    df = read_image_records(str(tmp_path / "dd" / "test"), "data.test", label_column="cls")
    assert df["label"].tolist() == ["y"]


def test_builtin_digits():
    df = read_image_records("builtin:digits", "data.train")
    assert len(df) == 1797 and list(df.index[:3]) == [0, 1, 2]
    assert sorted(df["label"].unique()) == [str(i) for i in range(10)]
    assert builtin_image_labels("builtin:digits") == [str(i) for i in range(10)]
    img = open_image(df["image"][0])
    assert img.size == (8, 8) and img.mode == "RGB"
    from sklearn.datasets import load_digits

    raw = load_digits().images[0]
    assert np.array_equal(np.asarray(img)[:, :, 0], np.rint(raw * 255 / 16).astype(np.uint8))  # 0..16 -> 0..255
    with pytest.raises(DataError) as e:
        read_image_records("builtin:digitz", "data.train")
    _one_line_error(e, "builtin:digits", "builtin:fashion-mnist")
    assert "builtin:digits" in [f"builtin:{n}" for n in BUILTIN_IMAGE_SETS]
    assert builtin_image_labels("data/train.csv") is None


# CI installs the package and sets TUNEFORGE_REQUIRE_FASHION_MNIST=1: there the test must run, not skip
@pytest.mark.skipif(
    not FASHION.is_dir() and os.environ.get("TUNEFORGE_REQUIRE_FASHION_MNIST") != "1",
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_builtin_fashion_mnist():
    names = builtin_image_labels("builtin:fashion-mnist")
    assert names[0] == "T-shirt/top" and names[9] == "Ankle boot" and len(names) == 10
    df = read_image_records("builtin:fashion-mnist:test", "data.test")
    assert len(df) == 10000 and set(df["label"]) == set(names)
    assert df["image"][5] == "builtin:fashion-mnist:test:5"
    img = open_image(df["image"][5])
    assert img.size == (28, 28) and img.mode == "RGB"
    assert len(read_image_records("builtin:fashion-mnist", "data.train")) == 60000


def test_fashion_mnist_missing_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(DataError) as e:
        read_image_records("builtin:fashion-mnist", "data.train")
    _one_line_error(e, "dataset-fashion-mnist", "TUNEFORGE_FASHION_MNIST_DIR")


# ----------------------------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("kind", ["random", "truncated", "text"])
def test_bad_image_files(tmp_path, kind):
    if kind == "random":
        path = tmp_path / "x.png"
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
        data = (tmp_path / "ok.png").read_bytes()
        path = tmp_path / "cut.png"
        path.write_bytes(data[: len(data) // 2])
    else:
        path = tmp_path / "notes.jpg"
        path.write_text("just some text\nsecond line\n")
    for fn in (open_image, lambda ref: check_images([ref])):
        with pytest.raises(DataError) as e:
            fn(str(path))
        _one_line_error(e, path, "cannot read image")


def test_check_images_limit_and_skips(tmp_path):
    good = _png(tmp_path / "a.png")
    bad = tmp_path / "b.png"
    bad.write_bytes(b"nope")
    check_images(["builtin:digits:0", str(good), str(bad)], limit=1)
    with pytest.raises(DataError):
        check_images([str(good), str(bad)])


def test_limit_per_class():
    df = pd.DataFrame({"image": [f"r{i}" for i in range(20)], "label": ["a"] * 12 + ["b"] * 5 + ["c"] * 3})
    out = limit_per_class(df, 4, seed=1)
    assert out["label"].value_counts().to_dict() == {"a": 4, "b": 4, "c": 3}
    assert list(out.index) == sorted(out.index)
    assert out.equals(limit_per_class(df, 4, seed=1))
    assert set(out["image"][out["label"] == "c"]) == {"r17", "r18", "r19"}
    assert len(limit_per_class(df, 100, seed=0)) == 20


# ----------------------------------------------------------------------------------------------- preprocessing


def test_preprocessing_from_dir(tmp_path):
    vit = tmp_path / "vit"
    vit.mkdir()
    (vit / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "do_normalize": True,
                "do_resize": True,
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5],
                "resample": 2,
                "rescale_factor": 0.00392156862745098,
                "size": {"height": 224, "width": 224},
            }
        )
    )
    p = Preprocessing.from_dir(vit)
    assert (p.height, p.width, p.resize_shortest) == (224, 224, None)
    assert p.mean == (0.5, 0.5, 0.5) and p.std == (0.5, 0.5, 0.5) and p.resample == "bilinear"

    mnv2 = tmp_path / "mnv2"
    mnv2.mkdir()
    (mnv2 / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "crop_size": {"height": 224, "width": 224},
                "do_center_crop": True,
                "do_normalize": True,
                "do_resize": True,
                "image_mean": 0.5,
                "image_std": [0.5],
                "resample": 3,
                "size": {"shortest_edge": 256},
            }
        )
    )
    p = Preprocessing.from_dir(mnv2)
    assert (p.height, p.width, p.resize_shortest) == (224, 224, 256)
    assert p.mean == (0.5, 0.5, 0.5) and p.std == (0.5, 0.5, 0.5) and p.resample == "bicubic"

    nonorm = tmp_path / "nonorm"
    nonorm.mkdir()
    (nonorm / "preprocessor_config.json").write_text(json.dumps({"size": 32, "do_normalize": False}))
    p = Preprocessing.from_dir(nonorm)
    assert (p.height, p.width, p.mean, p.std) == (32, 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

    d = Preprocessing.from_dir(tmp_path / "no-such-model")
    assert (d.height, d.width, d.resize_shortest) == (224, 224, 256)
    assert d.mean == (0.485, 0.456, 0.406) and d.std == (0.229, 0.224, 0.225)

    small = d.with_size(64)
    assert (small.height, small.width, small.resize_shortest) == (64, 64, 73)
    assert Preprocessing.from_dir(vit).with_size(32).resize_shortest is None

    for prep in (d, Preprocessing.from_dir(vit), small):
        prep.save_pretrained(tmp_path / "saved")
        assert Preprocessing.from_dir(tmp_path / "saved") == prep
        assert Preprocessing.from_dict(json.loads(json.dumps(prep.to_dict()))) == prep


def test_eval_transform_exact():
    prep = Preprocessing(height=6, width=4, resize_shortest=None, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    x = eval_transform(prep)(Image.new("RGB", (13, 7), (255, 51, 0)))
    assert x.shape == (3, 6, 4) and x.dtype == torch.float32
    expected = torch.tensor([(1.0 - 0.5) / 0.2, (0.2 - 0.4) / 0.25, (0.0 - 0.3) / 0.5])
    assert torch.allclose(x, expected.view(3, 1, 1).expand(3, 6, 4), atol=1e-6)
    crop = Preprocessing(height=8, width=8, resize_shortest=10, mean=(0, 0, 0), std=(1, 1, 1))
    # the shorter side becomes 10, then the central 8x8 is kept: a 20x10 image with a bright centre
    a = np.zeros((10, 20, 3), dtype=np.uint8)
    a[:, 6:14] = 255
    x = eval_transform(crop)(Image.fromarray(a))
    assert x.shape == (3, 8, 8) and torch.all(x == 1.0)


def test_train_transform_shape_and_reproducible():
    prep = Preprocessing(height=16, width=12, resize_shortest=18, mean=(0.5,) * 3, std=(0.5,) * 3)
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    t = train_transform(prep, randaugment=(2, 9))
    torch.manual_seed(3)
    a = [t(img) for _ in range(3)]
    torch.manual_seed(3)
    b = [t(img) for _ in range(3)]
    assert all(x.shape == (3, 16, 12) for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[1])
    plain = train_transform(prep, random_resized_crop=None, flip=False)
    assert torch.equal(plain(img), eval_transform(prep)(img))
    gray = train_transform(prep)(Image.new("L", (5, 9), 3))
    assert gray.shape == (3, 16, 12)


def test_randaugment_every_op():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (12, 10, 3), dtype=np.uint8))
    assert len(im.RANDAUGMENT_OPS) == 14
    for name, op in im.RANDAUGMENT_OPS.items():
        for m in (0, 9, 15, 30):
            for sign in (1, -1):
                out = op(img, sign * m / 30)
                assert out.size == img.size and out.mode == "RGB", name
    torch.manual_seed(0)
    assert im.rand_augment(img, 3, 30).size == img.size


# ----------------------------------------------------------------------------------------------- CutMix / MixUp


def _pair(h=10, w=12):
    x = torch.stack([torch.zeros(3, h, w), torch.ones(3, h, w)])
    return x, torch.tensor([0, 1])


def test_cutmix_exact():
    seen_partial = False
    for seed in range(8):
        x, y = _pair()
        x0 = x.clone()
        torch.manual_seed(seed)
        mixed, t = mix_batch(x, y, 3, cutmix=(1.0, 1.0), mixup=None)
        assert torch.equal(x, x0)  # not in place
        assert torch.allclose(t.sum(1), torch.ones(2), atol=1e-6)
        for i, partner in ((0, 1), (1, 0)):
            from_partner = mixed[i, 0] == float(partner)
            frac = from_partner.float().mean().item()
            assert abs(t[i, partner].item() - frac) < 1e-6
            assert abs(t[i, i].item() - (1 - frac)) < 1e-6
            assert t[i, 2].item() == 0.0
            assert torch.equal(mixed[i, 0], mixed[i, 1]) and torch.equal(mixed[i, 0], mixed[i, 2])
            rows, cols = torch.nonzero(from_partner, as_tuple=True)
            if len(rows):  # the pasted region is a rectangle
                box = from_partner[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
                assert bool(box.all()) and int(from_partner.sum()) == box.numel()
                seen_partial = seen_partial or 0 < frac < 1
    assert seen_partial


def test_mixup_exact():
    a, b = torch.rand(3, 5, 5), torch.rand(3, 5, 5)
    x, y = torch.stack([a, b]), torch.tensor([2, 0])
    torch.manual_seed(5)
    mixed, t = mix_batch(x, y, 4, cutmix=None, mixup=(0.4, 1.0))
    lam = t[0, 2].item()
    assert 0 < lam < 1
    assert torch.allclose(mixed[0], lam * a + (1 - lam) * b, atol=1e-6)
    assert torch.allclose(mixed[1], lam * b + (1 - lam) * a, atol=1e-6)
    assert torch.allclose(t[0], torch.tensor([1 - lam, 0, lam, 0]), atol=1e-6)
    assert torch.allclose(t[1], torch.tensor([lam, 0, 1 - lam, 0]), atol=1e-6)
    _, smooth = mix_batch(x, y, 4, cutmix=None, mixup=None, label_smoothing=0.2)
    assert torch.allclose(smooth[0], torch.tensor([0.05, 0.05, 0.85, 0.05]))


def test_mix_prob_zero_and_both_kinds():
    x, y = _pair()
    for seed in range(5):
        torch.manual_seed(seed)
        mixed, t = mix_batch(x, y, 2, cutmix=(1.0, 0.0), mixup=(1.0, 0.0))
        assert torch.equal(mixed, x) and torch.equal(t, torch.eye(2))
    kinds = set()
    for seed in range(20):
        torch.manual_seed(seed)
        mixed, t = mix_batch(x, y, 2, cutmix=(1.0, 1.0), mixup=(1.0, 1.0))
        values = set(mixed[0].unique().tolist())
        kinds.add("cutmix" if values <= {0.0, 1.0} else "mixup")
    assert kinds == {"cutmix", "mixup"}


def test_soft_cross_entropy():
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 2, 1, 1])
    hard = soft_cross_entropy(logits, labels)
    soft = soft_cross_entropy(logits, torch.nn.functional.one_hot(labels, 3).float())
    assert torch.allclose(hard, soft, atol=1e-6)
    assert hard.dim() == 0


@pytest.mark.parametrize("t, alpha", [(1.0, 0.5), (4.0, 0.9), (2.5, 1.0), (3.0, 0.0)])
def test_image_distillation_loss_is_hintons_on_mixed_targets(t, alpha):
    """The image task's distillation loss (the soft term from kernels/distill.py) gives the numbers of the formula
    it replaced, written out here: alpha T^2 KL(teacher || student) + (1 - alpha) soft-target CE, with gradients."""
    from tuneforge.tasks.image_distill import hinton_loss

    g = torch.Generator().manual_seed(int(10 * t))
    student = (3 * torch.randn(8, 5, generator=g)).requires_grad_()
    teacher = 3 * torch.randn(8, 5, generator=g)
    labels = torch.randint(0, 5, (8,), generator=g)
    pixels = torch.randn(8, 3, 6, 6, generator=g)
    _, targets = mix_batch(pixels, labels, 5, cutmix=None, mixup=(1.0, 1.0), label_smoothing=0.1)
    hard = soft_cross_entropy(student, targets)
    kl = torch.nn.functional.kl_div(
        torch.log_softmax(student / t, -1), torch.log_softmax(teacher / t, -1), reduction="batchmean", log_target=True
    )
    want = alpha * t * t * kl + (1.0 - alpha) * hard
    got = hinton_loss(student, teacher, labels, hard, t, alpha)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    (g_want,) = torch.autograd.grad(want, student, retain_graph=True)
    (g_got,) = torch.autograd.grad(got, student)
    torch.testing.assert_close(g_got, g_want, rtol=1e-5, atol=1e-7)
