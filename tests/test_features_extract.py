"""I3D feature extraction: snippet counts per preset on awkward lengths, streaming, provenance, weights checks."""
from __future__ import annotations

import math
import pickle
import re

import cv2
import numpy as np
import pytest
import torch

from pipelines.features.caffe2 import caffe2_r50_key
from pipelines.features.extract import extract, main, scale_preset
from pipelines.features.feature_sets import FEATURE_SETS, parse_feature_set
from pipelines.features.preprocess import preprocess_clip
from pipelines.features.presets import ARNET, RTFM, snippet_frame_indices
from pipelines.features.published import PublishedFeaturesError
from pipelines.features.store import FeatureReader, FeatureSource
from pipelines.features.weights import (
    REGISTRY,
    ChecksumMismatchError,
    UnpinnedWeightsError,
    file_digest,
    load_backbone,
)
from pipelines.frame_store import FrameReader, FrameWriter

SMALL = 0.07  # every preset size x0.07 (ten-crop 16 px): the geometry logic runs, the compute is tiny
LENGTHS = (15, 16, 17, 33)


def _frames(path, n, height=24, width=32, seed=0):
    frames = np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)
    with FrameWriter(path, height, width, 3, "lz4") as writer:
        writer.append(frames)
        writer.set_attrs({"source": f"noise_{n}.mp4", "source_sha256": "ab" * 32, "fps": 25.0})
    return path


@pytest.mark.parametrize("feature_set,count,lengths", [("rtfm", lambda n: math.ceil(n / 16), LENGTHS),
                                                       ("arnet", lambda n: n // 16, LENGTHS),
                                                       ("i3d_standard", lambda n: math.ceil(n / 16), (17,))])
def test_snippet_count_follows_the_preset_rule(tmp_path, feature_set, count, lengths):
    views = parse_feature_set(feature_set)[0].n_crops
    for n in lengths:
        out = tmp_path / f"{feature_set}_{n}.h5"
        extract(_frames(tmp_path / f"frames_{n}.h5", n), out, feature_set, allow_random_weights=True,
                spatial_scale=SMALL, batch_size=2)
        with FeatureReader(out) as reader:
            assert reader.features().shape[:2] == (count(n), views), (feature_set, n)
            assert reader.features().dtype == np.float32 and np.isfinite(reader.features()).all()
            assert reader.n_frames == n and reader.attrs["n_snippets"] == count(n)
    # 15 frames under AR-Net's rule: no complete window, so no snippet at all; 33 frames: two windows.
    assert count(15) in (0, 1) and count(33) in (2, 3)


def test_attributes_record_preset_weights_and_source(tmp_path):
    frames = _frames(tmp_path / "frames.h5", 17)
    attrs = extract(frames, tmp_path / "f.h5", "arnet", allow_random_weights=True, spatial_scale=SMALL, seed=3)
    with FeatureReader(tmp_path / "f.h5") as reader:
        stored = reader.attrs
    assert stored["backbones"] == {"inception_k400_rgb": "random-init"} == attrs["backbones"]
    assert stored["preset_params"]["squash_hw"] == [16, 16] and stored["preset_params"]["pixel_std"] == 1.0
    assert stored["tail"] == "drop" and stored["spatial_scale"] == SMALL and stored["seed"] == 3
    assert stored["missing_streams"] == ["flow"] and "not requested" in stored["flow"] and "flow_params" not in stored
    assert stored["source_frames"] == str(frames) and stored["source_frames_attrs"]["source"] == "noise_17.mp4"
    assert stored["versions"]["torch"].startswith("2.")
    described = FeatureSource.from_attrs(stored).describe("arnet")
    assert "NOT COMPARABLE" in described and "randomly initialised" in described and "no flow stream" in described


def _texture_frames(path, n, step, height=24, width=32):
    """A smooth texture moving ``step`` px to the right per frame (still for 0), as a frames file."""
    noise = np.random.default_rng(0).integers(0, 256, (height, width + 2 * n)).astype(np.float32)
    texture = np.clip(cv2.GaussianBlur(noise, (0, 0), 1.5) * 3 - 255, 0, 255).astype(np.uint8)
    frames = np.stack([texture[:, 2 * n - step * i:][:, :width] for i in range(n)])
    with FrameWriter(path, height, width, 3, "lz4") as writer:
        writer.append(np.repeat(frames[..., None], 3, axis=-1))
        writer.set_attrs({"source": f"texture_{step}.mp4", "source_sha256": "cd" * 32, "fps": 25.0})
    return path


def test_flow_stream_is_concatenated_after_rgb(tmp_path):
    moving, still = _texture_frames(tmp_path / "moving.h5", 33, 1), _texture_frames(tmp_path / "still.h5", 33, 0)
    attrs = extract(moving, tmp_path / "m.h5", "arnet", allow_random_weights=True, spatial_scale=SMALL, flow=True)
    extract(moving, tmp_path / "m1.h5", "arnet", allow_random_weights=True, spatial_scale=SMALL, flow=True,
            batch_size=1)
    extract(still, tmp_path / "s.h5", "arnet", allow_random_weights=True, spatial_scale=SMALL, flow=True)
    extract(moving, tmp_path / "rgb.h5", "arnet", allow_random_weights=True, spatial_scale=SMALL)
    with FeatureReader(tmp_path / "m.h5") as m, FeatureReader(tmp_path / "m1.h5") as m1, \
            FeatureReader(tmp_path / "s.h5") as s, FeatureReader(tmp_path / "rgb.h5") as rgb:
        assert m.features().shape == (2, 1, 2048) and rgb.features().shape == (2, 1, 1024)
        np.testing.assert_allclose(m.features()[..., :1024], rgb.features(), rtol=1e-4, atol=1e-5)
        # Batches of one snippet (each with the frame after it) give the same flow features as batches of two.
        np.testing.assert_allclose(m1.features(), m.features(), rtol=1e-4, atol=1e-5)
        moving_flow, still_flow = m.features()[..., 1024:], s.features()[..., 1024:]
        # A random backbone's features are small: compare with their own size.
        assert np.abs(moving_flow - still_flow).max() > 0.01 * np.abs(still_flow).max() > 0
        stored = m.attrs
    assert stored["missing_streams"] == [] == attrs["missing_streams"]
    assert stored["backbones"] == {"inception_k400_rgb": "random-init", "inception_k400_flow": "random-init"}
    assert stored["flow_params"]["tau"] == 0.25 and stored["flow_params"]["bound"] == 20
    assert "TV-L1" in stored["flow"] and "last frame repeats" in stored["flow"]
    assert "no flow stream" not in FeatureSource.from_attrs(stored).describe("arnet")
    with pytest.raises(ValueError, match="preset rtfm has no flow stream"):
        extract(moving, tmp_path / "r.h5", "rtfm", allow_random_weights=True, spatial_scale=SMALL, flow=True)


def test_patch_features_share_t_and_are_marked_reconstructed(tmp_path):
    out = tmp_path / "f.h5"
    extract(_frames(tmp_path / "frames.h5", 17), out, "rtfm_ssrl_patches", allow_random_weights=True,
            spatial_scale=SMALL)
    with FeatureReader(out) as reader:
        assert reader.features().shape == (2, 10, 2048)
        assert reader.grids == ((2, 3), (3, 5), (4, 7))
        for rows, cols in reader.grids:
            assert reader.patches((rows, cols)).shape == (2, rows * cols, 2048)
        assert reader.attrs["patches_reconstructed"] is True or reader.attrs["patches_reconstructed"] == 1
        assert "RECONSTRUCTED" in reader.attrs["patch_provenance"]
        assert reader._file["patches_4x7"].attrs["reconstructed"]


def test_features_are_the_backbone_on_the_loop_padded_snippets_whatever_the_batch(tmp_path):
    frames = _frames(tmp_path / "frames.h5", 17)
    for batch in (1, 2):
        extract(frames, tmp_path / f"b{batch}.h5", "rtfm", allow_random_weights=True, spatial_scale=SMALL,
                batch_size=batch, seed=5)
    with FeatureReader(tmp_path / "b1.h5") as one, FeatureReader(tmp_path / "b2.h5") as two:
        np.testing.assert_allclose(one.features(), two.features(), rtol=1e-4, atol=1e-5)
        extracted = one.features()
    # The last snippet is frame 16 repeated 16 times (loop padding of a one-frame tail).
    preset = scale_preset(RTFM, SMALL)
    last = snippet_frame_indices(preset, 17)[-1]
    assert last.tolist() == [16] * 16
    backbone = load_backbone("r50_nonlocal_k400", allow_random=True, seed=5)
    with FrameReader(frames) as reader, torch.inference_mode():
        expected = backbone(preprocess_clip(preset, reader.clip(0, 17)[last])).numpy()
    np.testing.assert_allclose(extracted[-1], expected, rtol=1e-4, atol=1e-5)


def test_reads_only_the_frames_of_one_batch(tmp_path, monkeypatch):
    frames = _frames(tmp_path / "frames.h5", 70)
    lengths = []
    original = FrameReader.clip

    def recording_clip(self, start, length):
        lengths.append(length)
        return original(self, start, length)

    monkeypatch.setattr(FrameReader, "clip", recording_clip)
    extract(frames, tmp_path / "f.h5", "arnet", allow_random_weights=True, spatial_scale=SMALL, batch_size=2)
    assert lengths == [32, 32]  # 4 snippets of 16 frames in batches of 2; the 6-frame tail is dropped


def test_full_geometry_one_view(tmp_path):
    """AR-Net's preset at its real size (224x224, one view) on a 17-frame video: one snippet."""
    out = tmp_path / "f.h5"
    extract(_frames(tmp_path / "frames.h5", 17, height=36, width=44), out, "arnet", allow_random_weights=True)
    with FeatureReader(out) as reader:
        assert reader.features().shape == (1, 1, 1024)
        assert reader.attrs["preset_params"]["squash_hw"] == [224, 224] and reader.attrs["spatial_scale"] == 1.0
        assert np.isfinite(reader.features()).all() and reader.features().std() > 0


@pytest.mark.slow
def test_full_geometry_ten_crop(tmp_path):
    """RTFM's preset at its real size (short side 256, ten 224 crops) on a 16-frame video: one snippet."""
    out = tmp_path / "f.h5"
    extract(_frames(tmp_path / "frames.h5", 16, height=30, width=40), out, "rtfm", allow_random_weights=True)
    with FeatureReader(out) as reader:
        assert reader.features().shape == (1, 10, 2048)
        assert reader.attrs["preset_params"]["crop_size"] == 224
        views = reader.features()[0]
    # Distinct crops of a noise video give distinct features.
    assert np.abs(views[0] - views[4]).max() > 0


def test_scaled_preset_keeps_the_geometry_rules():
    small = scale_preset(RTFM, 0.1)
    assert (small.short_side, small.crop_size, small.crop, small.snippets) == (26, 22, "ten_crop", RTFM.snippets)
    assert scale_preset(ARNET, 1.0) is ARNET
    patches = scale_preset(parse_feature_set("rtfm_ssrl_patches")[1], 0.1)
    assert patches.frame_hw == (48, 84) and patches.patch_size == 22
    assert set(FEATURE_SETS) >= {"rtfm", "arnet", "i3d_standard", "rtfm_ssrl_patches"}


def test_wrong_checksum_weights_are_refused(tmp_path, capsys):
    frames = _frames(tmp_path / "frames.h5", 16)
    bad = tmp_path / "rgb_imagenet.pt"
    torch.save(load_backbone("inception_k400_rgb", allow_random=True).state_dict(), bad)
    out = tmp_path / "f.h5"
    code = main([str(frames), str(out), "--feature-set", "arnet", "--weights", f"inception_k400_rgb={bad}",
                 "--spatial-scale", str(SMALL)])
    err = capsys.readouterr().err
    assert code == 1 and "checksum mismatch" in err and str(bad) in err
    assert "73a4fd1d87eb3dbd97f33a9779fa1caa3d28111a" in err
    assert not out.exists() and not list(tmp_path.glob(".f.h5.*"))


def test_missing_weights_stop_with_where_to_put_them(tmp_path, capsys):
    frames = _frames(tmp_path / "frames.h5", 16)
    out = tmp_path / "f.h5"
    code = main([str(frames), str(out), "--feature-set", "rtfm", "--weights-dir", str(tmp_path / "weights")])
    err = capsys.readouterr().err
    assert code == 1 and str(tmp_path / "weights" / "i3d_baseline_32x2_IN_pretrain_400k.pkl") in err
    assert not out.exists()


def _caffe2_blob(key: str) -> str:
    """The video-nonlocal-net blob name of a ResNet-50 I3D state-dict key (the inverse of the registry's map)."""
    bn = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
    parts = key.split(".")
    if parts[0] == "conv1":
        return "conv1_w"
    if parts[0] == "bn1":
        return f"res_conv1_bn_{bn[parts[1]]}"
    if parts[0] == "fc":
        return {"weight": "pred_w", "bias": "pred_b"}[parts[1]]
    stage, block = int(parts[0].removeprefix("layer")) + 1, parts[1]
    if parts[2] == "downsample":
        return f"res{stage}_{block}_branch1_" + ("w" if parts[3] == "0" else f"bn_{bn[parts[4]]}")
    unit = "abc"[int(parts[2][-1]) - 1]
    return f"res{stage}_{block}_branch2{unit}_" + ("w" if parts[2].startswith("conv") else f"bn_{bn[parts[3]]}")


def test_weights_found_in_the_weights_dir_are_used_and_hashed(tmp_path):
    frames = _frames(tmp_path / "frames.h5", 16)
    folder = tmp_path / "weights"
    folder.mkdir()
    state = load_backbone("r50_nonlocal_k400", allow_random=True, seed=1).state_dict()
    blobs = {_caffe2_blob(key): value.numpy() for key, value in state.items()}
    assert all(caffe2_r50_key(blob) == key for key, blob in zip(state, blobs))
    path = folder / REGISTRY["r50_nonlocal_k400"].file_name
    path.write_bytes(pickle.dumps({"blobs": blobs}, protocol=2))
    # No checksum was published for this file: it is refused, with its sha256, until one is pinned.
    digest = file_digest(path, "sha256")
    with pytest.raises(UnpinnedWeightsError, match=f"{re.escape(str(path))}: no checksum was published.*{digest}"):
        extract(frames, tmp_path / "f.h5", "rtfm", weights_dir=folder, spatial_scale=SMALL)
    with pytest.raises(ChecksumMismatchError, match=re.escape(str(path))):
        extract(frames, tmp_path / "f.h5", "rtfm", weights_dir=folder, weights_sha256={"r50_nonlocal_k400": "0" * 64},
                spatial_scale=SMALL)
    assert not (tmp_path / "f.h5").exists()
    attrs = extract(frames, tmp_path / "f.h5", "rtfm", weights_dir=folder,
                    weights_sha256={"r50_nonlocal_k400": digest}, spatial_scale=SMALL)
    assert attrs["backbones"]["r50_nonlocal_k400"] == f"sha256:{digest}"
    preset = scale_preset(RTFM, SMALL)
    saved_from = load_backbone("r50_nonlocal_k400", allow_random=True, seed=1)
    with FeatureReader(tmp_path / "f.h5") as loaded, FrameReader(frames) as reader, torch.inference_mode():
        # The numbers of the network the file was saved from.
        expected = saved_from(preprocess_clip(preset, reader.clip(0, 16))).numpy()
        np.testing.assert_allclose(loaded.features()[0], expected, rtol=1e-4, atol=1e-5)


def test_published_clip_features_with_extracted_patches(tmp_path):
    frames = _frames(tmp_path / "frames.h5", 17)
    published = np.random.default_rng(0).random((2, 10, 2048), dtype=np.float32)
    np.save(tmp_path / "v_i3d.npy", published)
    attrs = extract(frames, tmp_path / "f.h5", "rtfm_ssrl_patches", allow_random_weights=True, spatial_scale=SMALL,
                    published_clip=tmp_path / "v_i3d.npy")
    with FeatureReader(tmp_path / "f.h5") as reader:
        assert np.array_equal(reader.features(), published)
        assert reader.patches((4, 7)).shape == (2, 28, 2048) and np.isfinite(reader.patches((4, 7))).all()
    assert attrs["origin"] == "published clip, extracted patches" and "upstream extractor" in attrs["backbones"]
    described = FeatureSource.from_attrs(attrs).describe("rtfm_ssrl_patches")
    assert "r50_nonlocal_k400 random-init" in described and "NOT COMPARABLE" in described
    np.save(tmp_path / "w_i3d.npy", published[:1])
    with pytest.raises(PublishedFeaturesError, match="1 snippets, but the rtfm rule gives 2"):
        extract(frames, tmp_path / "g.h5", "rtfm_ssrl_patches", allow_random_weights=True, spatial_scale=SMALL,
                published_clip=tmp_path / "w_i3d.npy")
    with pytest.raises(ValueError, match="no patch features"):
        extract(frames, tmp_path / "g.h5", "rtfm", published_clip=tmp_path / "v_i3d.npy")
    assert not (tmp_path / "g.h5").exists()
