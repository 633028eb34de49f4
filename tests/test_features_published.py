"""Published I3D features: the seven real RTFM files through the adapter, checks, comparison, methods on them."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from models import TrainInputs, get_method
from models.arnet import build_arnet
from models.ssrl import SSRLNetwork
from pipelines.features import store
from pipelines.features.published import (
    PublishedFeaturesError,
    compare,
    convert,
    find_clip_file,
    find_patch_file,
    main,
)
from pipelines.features.store import FeatureReader, FeatureSource
from pipelines.training import load_checkpoint

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
FEATURES = SHARED / "data" / "features" / "shanghaitech_i3d_r50_10crop_sample"
# Frames per video are not published with the features; any count in (16(T-1), 16T] fits T = ceil(n/16).
TAIL_GAP = 7


def _published() -> list[Path]:
    files = sorted(FEATURES.glob("*_i3d.npy"))
    if len(files) != 7:
        pytest.skip(f"the seven real RTFM feature files are not under {FEATURES}")
    return files


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("published")
    out = {}
    for path in _published():
        video = path.name.removesuffix("_i3d.npy")
        n_snippets = np.load(path, mmap_mode="r").shape[0]
        out[video] = folder / f"{video}.h5"
        convert(path, out[video], 16 * n_snippets - TAIL_GAP)
    return out


def test_seven_published_files_load_unchanged(converted):
    assert sorted(converted) == [f"01_00{i}" for i in range(1, 8)]
    for video, path in converted.items():
        published = np.load(FEATURES / f"{video}_i3d.npy", allow_pickle=False)
        with FeatureReader(path) as reader:
            assert np.array_equal(reader.features(), published) and reader.features().dtype == np.float32
            assert (reader.n_views, reader.feature_dim, reader.tail) == (10, 2048, "loop_pad")
            assert reader.n_frames == 16 * published.shape[0] - TAIL_GAP
            assert reader.attrs["origin"] == "published" and reader.attrs["feature_set"] == "rtfm"
            assert len(next(iter(reader.attrs["published_files"].values()))) == 64
        described = FeatureSource.from_attrs(reader.attrs).describe("rtfm")
        assert "published" in described and "NOT COMPARABLE" not in described


def test_snippet_count_must_fit_the_frame_count(tmp_path):
    path = _published()[1]  # 01_002: 31 snippets
    for n_frames in (16 * 31 + 1, 16 * 30):
        with pytest.raises(PublishedFeaturesError, match="31 snippets"):
            convert(path, tmp_path / "f.h5", n_frames)
    assert not (tmp_path / "f.h5").exists()
    convert(path, tmp_path / "f.h5", 16 * 30 + 1)


def test_arnet_layout_one_view_and_dropped_tail(tmp_path):
    folder = tmp_path / "combine"
    (folder / "01_0014").mkdir(parents=True)
    features = np.random.default_rng(0).random((3, 2048), dtype=np.float32)
    np.save(folder / "01_0014" / "feature.npy", features)
    found = find_clip_file(folder, "01_0014")
    convert(found, tmp_path / "f.h5", 3 * 16 + 15, preset="arnet")
    with FeatureReader(tmp_path / "f.h5") as reader:
        assert reader.features().shape == (3, 1, 2048) and reader.tail == "drop"
        assert np.array_equal(reader.features(view=0), features) and reader.attrs["missing_streams"] == []
    with pytest.raises(PublishedFeaturesError):
        convert(found, tmp_path / "g.h5", 4 * 16, preset="arnet")
    with pytest.raises(PublishedFeaturesError, match="no published features"):
        find_clip_file(folder, "01_0015")


def test_views_and_dimension_must_be_the_presets(tmp_path):
    """SSRL's crop-first (10, 32, 2048) files, Finspire13's crop-first (10, T, 1024) ones and features of
    another backbone were read as snippets of some views; AR-Net's RGB half alone would stand as both streams."""
    rng = np.random.default_rng(2)
    cases = {
        "crop_first": ((10, 9, 2048), "rtfm", 9 * 16, r"shape \(10, 9, 2048\), but rtfm features are \(T, 10, 2048\) "
                                                       r"\(10 views\); it looks crop-first"),
        "other_backbone": ((3, 10, 1024), "rtfm", 40, r"shape \(3, 10, 1024\), but rtfm features are \(T, 10, 2048\)"),
        "ten_views": ((3, 10, 2048), "arnet", 48, r"shape \(3, 10, 2048\), but arnet features are \(T, 1, 2048\) \(1 view\)"),
        "rgb_only": ((3, 1024), "arnet", 48, r"shape \(3, 1, 1024\), but arnet features are \(T, 1, 2048\) \(1 view\); "
                                              r"it looks like the RGB stream alone"),
    }
    for name, (shape, preset, n_frames, message) in cases.items():
        np.save(tmp_path / f"{name}.npy", rng.random(shape, dtype=np.float32))
        with pytest.raises(PublishedFeaturesError, match=rf"{name}\.npy: {message}"):
            convert(tmp_path / f"{name}.npy", tmp_path / f"{name}.h5", n_frames, preset=preset)
        assert not (tmp_path / f"{name}.h5").exists()


def test_patch_files_are_found_per_scale_folder_and_checked(tmp_path):
    rng = np.random.default_rng(1)
    clip = rng.random((4, 10, 2048), dtype=np.float32)
    np.save(tmp_path / "v_i3d.npy", clip)
    patch_files = {}
    for rows, cols in ((2, 3), (3, 5), (4, 7)):
        folder = tmp_path / f"SH_PATCH{rows}{cols}_i3d"
        folder.mkdir()
        patch_files[(rows, cols)] = folder / f"v_patch{rows}{cols}_i3d.npy"
        np.save(patch_files[(rows, cols)], rng.random((4, rows * cols, 2048), dtype=np.float32))
    assert all(find_patch_file(tmp_path, "v", grid) == path for grid, path in patch_files.items())
    attrs = convert(tmp_path / "v_i3d.npy", tmp_path / "v.h5", 60, patch_files=patch_files)
    assert attrs["feature_set"] == "rtfm_ssrl_patches" and attrs["patches_reconstructed"] is False
    with FeatureReader(tmp_path / "v.h5") as reader:
        assert reader.grids == ((2, 3), (3, 5), (4, 7))
        assert np.array_equal(reader.patches((3, 5)), np.load(patch_files[(3, 5)]))
    np.save(patch_files[(4, 7)], rng.random((3, 28, 2048), dtype=np.float32))
    with pytest.raises(PublishedFeaturesError, match="4x7"):
        convert(tmp_path / "v_i3d.npy", tmp_path / "w.h5", 60, patch_files=patch_files)
    # Patches of another backbone (another dimension) failed only inside SSRL's training, naming no file.
    np.save(patch_files[(4, 7)], rng.random((4, 28, 1024), dtype=np.float32))
    with pytest.raises(PublishedFeaturesError, match=r"v_patch47_i3d.npy: expected \(4, 28, 2048\) patch features .*found \(4, 28, 1024\)"):
        convert(tmp_path / "v_i3d.npy", tmp_path / "w.h5", 60, patch_files=patch_files)
    clip[2, 5, 1] = np.nan
    np.save(tmp_path / "v_i3d.npy", clip)
    with pytest.raises(PublishedFeaturesError, match=r"v_i3d.npy: non-finite feature values, the first in snippet 2"):
        convert(tmp_path / "v_i3d.npy", tmp_path / "w.h5", 60)
    assert not (tmp_path / "w.h5").exists()


def _altered_copy(source: Path, out: Path, keep_snippets: int | None = None) -> None:
    """Our 'extraction' of a video: the published features with view 3 negated (and maybe fewer snippets)."""
    with FeatureReader(source) as reader:
        features = reader.features()[:keep_snippets].copy()
        attrs = dict(reader.attrs)
    features[:, 3] *= -1
    with h5py.File(out, "w") as handle:
        store.create_dataset(handle, store.FEATURES, *features.shape)[...] = features
        store.write_attrs(handle, attrs)


def test_compare_reports_cosine_per_snippet_and_view(converted, tmp_path, capsys):
    ours = tmp_path / "ours"
    ours.mkdir()
    _altered_copy(converted["01_001"], ours / "01_001.h5")
    _altered_copy(converted["01_002"], ours / "01_002.h5", keep_snippets=30)
    summary = compare(ours, FEATURES)
    assert summary["n_videos"] == 2 and summary["n_snippets"] == 48 + 30
    views = np.array(summary["mean_per_view"])
    assert views[3] == pytest.approx(-1.0) and np.allclose(np.delete(views, 3), 1.0)
    assert summary["min"] == pytest.approx(-1.0) and summary["mean"] == pytest.approx(0.8)
    assert summary["snippet_count_mismatch"] == {"01_002": [30, 31]}
    assert main(["compare", str(ours), str(FEATURES), "--json", str(tmp_path / "s.json")]) == 0
    printed = capsys.readouterr().out
    assert "2 videos, 78 snippets: mean 0.8000" in printed and "01_002: 30 snippets extracted, 31 published" in printed
    assert json.loads((tmp_path / "s.json").read_text())["n_snippets"] == 78
    same = compare(converted["01_003"], FEATURES / "01_003_i3d.npy")
    assert same["mean"] == pytest.approx(1.0) and same["min"] == pytest.approx(1.0)


def test_convert_command(tmp_path, capsys):
    path = _published()[5]  # 01_006: 32 snippets
    assert main(["convert", str(path), str(tmp_path / "f.h5"), "--n-frames", "510"]) == 0
    assert main(["convert", str(path), str(tmp_path / "g.h5"), "--n-frames", "600"]) == 1
    assert "32 snippets, but the rtfm rule gives 38" in capsys.readouterr().err
    assert not (tmp_path / "g.h5").exists()


def _labels(converted) -> dict[str, int]:
    # All seven sample videos are normal; three are labelled abnormal here only to exercise both classes.
    return {video: int(video in ("01_001", "01_004", "01_007")) for video in converted}


def test_arnet_trains_a_step_and_scores_through_the_method(converted, tmp_path):
    files = list(converted.values())
    method = get_method("arnet", {"iterations": 1, "videos_per_class": 2}, seed=3)
    checkpoint = tmp_path / "arnet.pt"
    method.train_stage("train", TrainInputs(files, _labels(converted)), None, checkpoint)
    payload = load_checkpoint(checkpoint, "arnet")
    torch.manual_seed(3)
    initial = build_arnet("single", 2048).state_dict()
    assert all(not torch.equal(initial[k], payload["model"][k]) for k in initial)
    assert payload["identity"] == {"feature_dim": 2048, "variant": "single", "view": "center"}
    assert payload["extra"]["training_features"]["feature_set"] == "rtfm"
    scores = method.score_video(checkpoint, converted["01_005"])
    assert scores.scores.shape == (43 * 16 - TAIL_GAP,) and scores.scored.all()
    assert np.all((scores.scores > 0) & (scores.scores < 1))
    # Each snippet's score covers its 16 frames.
    assert np.all(scores.scores[:16] == scores.scores[0])


def test_ssrl_stage_one_trains_a_step_and_scores_through_the_method(converted, tmp_path):
    files = list(converted.values())
    method = get_method("ssrl", {"iterations": 1, "batch_per_class": 2}, seed=4)
    checkpoint = tmp_path / "stage1.pt"
    method.train_stage("stage1", TrainInputs(files, _labels(converted)), None, checkpoint)
    payload = load_checkpoint(checkpoint, "ssrl")
    torch.manual_seed(4)
    initial = SSRLNetwork(1).state_dict()
    changed = {k for k in initial if not torch.equal(initial[k], payload["model"][k])}
    assert "temporal_relation.fuse.0.weight" in changed and "classifier.layers.0.weight" in changed
    scores = method.score_video(checkpoint, converted["01_002"])
    assert scores.scores.shape == (31 * 16 - TAIL_GAP,) and scores.scored.all()
    with pytest.raises(ValueError, match="no patch features for grids"):
        method.train_stage("stage2", TrainInputs(files, _labels(converted)), checkpoint, tmp_path / "stage2.pt")
