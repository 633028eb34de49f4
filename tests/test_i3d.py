"""I3D backbones and the weights registry: published key layouts, shapes, checksums and loading rules.

Checkpoints here are written by the tests under the parameter names of the published files, built from the
layouts spelled out below (not from the models' own state dicts); no test downloads anything.
"""
from __future__ import annotations

import dataclasses
import hashlib
import pickle

import numpy as np
import pytest
import torch

from models.i3d_inception import InceptionI3d, _same_padding
from models.i3d_resnet50 import ResNet50I3d
from pipelines.features import caffe2, weights
from pipelines.features.weights import Checksum, ChecksumMismatchError, WeightsMissingError

# ---- published layouts -------------------------------------------------------------------------------------

# piergiaj rgb_imagenet.pt / flow_imagenet.pt: Unit3D -> conv3d + bn (no num_batches_tracked: saved by PyTorch 0.3).
_INCEPTION_BLOCKS = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)), "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)), "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)), "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)), "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


def _unit(prefix: str, cin: int, cout: int, k: int) -> dict[str, tuple[int, ...]]:
    keys = {f"{prefix}.conv3d.weight": (cout, cin, k, k, k)}
    keys.update({f"{prefix}.bn.{name}": (cout,) for name in ("weight", "bias", "running_mean", "running_var")})
    return keys


def published_inception_layout(in_channels: int) -> dict[str, tuple[int, ...]]:
    layout = {**_unit("Conv3d_1a_7x7", in_channels, 64, 7), **_unit("Conv3d_2b_1x1", 64, 64, 1),
              **_unit("Conv3d_2c_3x3", 64, 192, 3)}
    for name, (cin, (c0, c1a, c1b, c2a, c2b, c3)) in _INCEPTION_BLOCKS.items():
        layout.update({**_unit(f"{name}.b0", cin, c0, 1), **_unit(f"{name}.b1a", cin, c1a, 1),
                       **_unit(f"{name}.b1b", c1a, c1b, 3), **_unit(f"{name}.b2a", cin, c2a, 1),
                       **_unit(f"{name}.b2b", c2a, c2b, 3), **_unit(f"{name}.b3b", cin, c3, 1)})
    layout.update({"logits.conv3d.weight": (400, 1024, 1, 1, 1), "logits.conv3d.bias": (400,)})
    return layout


# Tushar-N i3d_r50_kinetics.pth keys, and the Caffe2 blob names of the video-nonlocal-net file they come from.
_R50_STAGES = ((64, 3, (1, 1, 1)), (128, 4, (1, 0, 1, 0)), (256, 6, (1, 0, 1, 0, 1, 0)), (512, 3, (0, 1, 0)))
_BN_FIELDS = (("weight", "s"), ("bias", "b"), ("running_mean", "rm"), ("running_var", "riv"))


def published_r50_layout() -> dict[str, tuple[tuple[int, ...], str]]:
    """PyTorch key -> (shape, Caffe2 blob name)."""
    layout = {"conv1.weight": ((64, 3, 5, 7, 7), "conv1_w"), "fc.weight": ((400, 2048), "pred_w"),
              "fc.bias": ((400,), "pred_b")}
    layout.update({f"bn1.{torch_name}": ((64,), f"res_conv1_bn_{c2}") for torch_name, c2 in _BN_FIELDS})
    cin = 64
    for stage, (width, blocks, inflate) in enumerate(_R50_STAGES, start=1):
        for block in range(blocks):
            c2 = f"res{stage + 1}_{block}"
            convs = ((cin, width, (1 + 2 * inflate[block], 1, 1)), (width, width, (1, 3, 3)),
                     (width, 4 * width, (1, 1, 1)))
            for unit, (a, b, kernel) in enumerate(convs, start=1):
                branch = f"{c2}_branch2{'abc'[unit - 1]}"
                layout[f"layer{stage}.{block}.conv{unit}.weight"] = ((b, a, *kernel), f"{branch}_w")
                layout.update({f"layer{stage}.{block}.bn{unit}.{t}": ((b,), f"{branch}_bn_{c}")
                               for t, c in _BN_FIELDS})
            if block == 0:
                layout[f"layer{stage}.0.downsample.0.weight"] = ((4 * width, cin, 1, 1, 1), f"{c2}_branch1_w")
                layout.update({f"layer{stage}.0.downsample.1.{t}": ((4 * width,), f"{c2}_branch1_bn_{c}")
                               for t, c in _BN_FIELDS})
            cin = 4 * width
    return layout


def _random_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    # Positive values keep running_var valid; the content only has to be recognisable after loading.
    return {key: torch.rand(shape, generator=generator) + 0.5 for key, shape in shapes.items()}


def _pinned(name: str, path) -> weights.WeightsRecord:
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    return dataclasses.replace(weights.REGISTRY[name], checksum=Checksum("sha256", sha256))


# ---- loading published layouts -----------------------------------------------------------------------------

@pytest.mark.parametrize("name, in_channels", [("inception_k400_rgb", 3), ("inception_k400_flow", 2)])
def test_inception_loads_published_layout_strictly(tmp_path, name, in_channels):
    state = _random_state(published_inception_layout(in_channels), seed=in_channels)
    path = tmp_path / weights.REGISTRY[name].file_name
    torch.save(state, path)

    model = weights.load_backbone(_pinned(name, path), path=path)

    assert len(state) == 287
    assert set(model.state_dict()) == set(state)
    assert torch.equal(model.Mixed_4e.b2b.conv3d.weight, state["Mixed_4e.b2b.conv3d.weight"])
    assert torch.equal(model.Conv3d_1a_7x7.bn.running_var, state["Conv3d_1a_7x7.bn.running_var"])
    assert model.weights_checksum == f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    assert not model.training


def test_resnet50_loads_converted_layout_strictly(tmp_path):
    state = _random_state({key: shape for key, (shape, _) in published_r50_layout().items()}, seed=5)
    path = tmp_path / "i3d_r50_kinetics.pth"
    torch.save(state, path)

    model = ResNet50I3d()
    model.load_state_dict(torch.load(path, weights_only=True), strict=True)

    assert len(state) == 267
    assert set(model.state_dict()) == set(state)
    assert torch.equal(model.layer3[4].conv1.weight, state["layer3.4.conv1.weight"])


def test_resnet50_loads_caffe2_checkpoint_through_registry(tmp_path):
    layout = published_r50_layout()
    rng = np.random.default_rng(0)
    blobs = {c2: rng.random(shape, dtype=np.float32) + 0.5 for shape, c2 in layout.values()}
    # Solver state that must be ignored.
    blobs.update({"conv1_w_momentum": np.zeros((64, 3, 5, 7, 7), np.float32), "lr": np.float32(0.01)})
    path = tmp_path / weights.REGISTRY["r50_nonlocal_k400"].file_name
    path.write_bytes(pickle.dumps({"blobs": blobs}, protocol=2))

    model = weights.load_backbone(_pinned("r50_nonlocal_k400", path), path=path)

    assert set(model.state_dict()) == set(layout)
    assert np.array_equal(model.layer2[0].downsample[1].running_var.numpy(), blobs["res3_0_branch1_bn_riv"])
    assert np.array_equal(model.layer4[2].bn3.weight.numpy(), blobs["res5_2_branch2c_bn_s"])
    assert np.array_equal(model.fc.weight.detach().numpy(), blobs["pred_w"])


def test_a_non_local_checkpoint_or_another_format_is_refused_by_name(tmp_path):
    """The non-local checkpoint holds the baseline's blobs too: dropping its non-local blocks would
    load and give features of another network, so it is refused; so is a file of another format."""
    layout = published_r50_layout()
    blobs = {c2: np.ones(shape, np.float32) for shape, c2 in layout.values()}
    blobs["nonlocal_conv3_1_theta_w"] = np.ones((512, 1024, 1, 1, 1), np.float32)
    path = tmp_path / "i3d_nonlocal_32x2_IN_pretrain_400k.pkl"
    path.write_bytes(pickle.dumps({"blobs": blobs}, protocol=2))
    with pytest.raises(weights.WeightsFormatError, match=r"non-local I3D checkpoint .*nonlocal_conv3_1_theta_w") as refused:
        weights.load_backbone(_pinned("r50_nonlocal_k400", path), path=path)
    assert "is not video-nonlocal-net's Caffe2 pickle" not in str(refused.value)  # its own message, not rewrapped
    other = tmp_path / "i3d_r50_kinetics.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, other)
    with pytest.raises(weights.WeightsFormatError, match=r"i3d_r50_kinetics.pth for backbone 'r50_nonlocal_k400' is not video-nonlocal-net's Caffe2 pickle"):
        weights.load_backbone(_pinned("r50_nonlocal_k400", other), path=other)
    # Damaged or foreign pickles raised ValueError, TypeError or AttributeError from inside the reader.
    for name, content in (("garbage.pkl", b"garbage\n"), ("list.pkl", pickle.dumps([1, 2, 3], protocol=2)),
                          ("no_blobs.pkl", pickle.dumps({"blobs": [1, 2]}, protocol=2)),
                          ("other_keys.pkl", pickle.dumps({"model": {}}, protocol=2))):
        damaged = tmp_path / name
        damaged.write_bytes(content)
        with pytest.raises(weights.WeightsFormatError, match=rf"{name}"):
            weights.load_backbone(_pinned("r50_nonlocal_k400", damaged), path=damaged)


def test_a_download_cut_short_is_refused_and_removed(tmp_path):
    import http.server
    import threading

    class Short(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 30000)  # then the connection closes

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Short)
    threading.Thread(target=server.handle_request, daemon=True).start()
    record = dataclasses.replace(weights.REGISTRY["r50_nonlocal_k400"], url=f"http://127.0.0.1:{server.server_port}/w.pkl")
    cache = tmp_path / "cache"
    with pytest.raises(WeightsMissingError, match="stopped at 30000 of 100000 bytes"):
        weights.fetch(record, cache)
    server.server_close()
    assert not (cache / record.file_name).exists() and [p.name for p in cache.iterdir()] == []


def test_caffe2_reader_refuses_code(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(pickle.UnpicklingError, match="os.system"):
        caffe2.caffe2_r50_state_dict(path)


# ---- shapes and behaviour ----------------------------------------------------------------------------------

def test_same_padding_is_tensorflow_same():
    # 7x7x7 stride 2 on 16x224x224 pads 5 per axis, the extra one at the end.
    assert _same_padding((16, 224, 224), (7, 7, 7), (2, 2, 2)) == (2, 3, 2, 3, 2, 3)
    assert _same_padding((5, 7, 7), (3, 3, 3), (2, 2, 2)) == (1, 1, 1, 1, 1, 1)
    assert _same_padding((4, 8, 8), (1, 3, 3), (1, 2, 2)) == (0, 1, 0, 1, 0, 0)


@pytest.mark.parametrize("name, in_channels, dim", [("inception_k400_rgb", 3, 1024), ("inception_k400_flow", 2, 1024),
                                                     ("r50_nonlocal_k400", 3, 2048)])
def test_backbone_shapes(name, in_channels, dim):
    model = weights.load_backbone(name, allow_random=True)
    small = torch.randn(2, in_channels, 8, 64, 64)
    with torch.no_grad():
        feature_map = model.feature_map(small)
        assert feature_map.shape == (2, dim, 1, 2, 2)
        torch.testing.assert_close(model(small), feature_map.mean(dim=(2, 3, 4)))
        assert model.kinetics_logits(small).shape == (2, 400)
    # The 16x224x224 snippet, shape-checked on the meta device so no arithmetic is spent on it.
    clip = torch.empty(1, in_channels, 16, 224, 224, device="meta")
    assert model.to("meta").feature_map(clip).shape == (1, dim, 2, 7, 7)
    assert model(clip).shape == (1, dim)


def test_inception_pooling_matches_reference_avgpool():
    """On the 16x224x224 snippet's Mixed_5c map the reference AvgPool3d((2, 7, 7), stride 1) is the global mean."""
    feature_map = torch.randn(2, 1024, 2, 7, 7)
    reference = torch.nn.functional.avg_pool3d(feature_map, (2, 7, 7), stride=1).flatten(1)
    torch.testing.assert_close(feature_map.mean(dim=(2, 3, 4)), reference)


@pytest.mark.parametrize("model_class", [InceptionI3d, ResNet50I3d])
def test_frozen_batch_norm_ignores_mode_and_batch(model_class):
    torch.manual_seed(0)
    model = model_class()
    for buffer_name, buffer in model.named_buffers():
        if buffer_name.endswith("running_mean"):
            buffer.normal_()
    batch = torch.randn(3, 3, 8, 32, 32)
    with torch.no_grad():
        in_train_mode = model.train()(batch)
        alone = model.eval()(batch[:1])
    torch.testing.assert_close(in_train_mode[:1], alone, rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in model.parameters()) == (12_682_704 if model_class is InceptionI3d else 27_990_352)


def test_flow_model_takes_two_channels():
    assert InceptionI3d(in_channels=2).Conv3d_1a_7x7.conv3d.weight.shape == (64, 2, 7, 7, 7)


# ---- weights registry --------------------------------------------------------------------------------------

def test_git_blob_sha1_matches_git_hash_object(tmp_path):
    path = tmp_path / "hello.txt"
    path.write_bytes(b"hello\n")
    # `printf 'hello\n' | git hash-object --stdin`
    assert weights.file_digest(path, "git-blob-sha1") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_wrong_checksum_local_file_is_refused_and_named(tmp_path):
    path = tmp_path / "rgb_imagenet.pt"
    torch.save({"x": torch.zeros(3)}, path)
    with pytest.raises(ChecksumMismatchError) as caught:
        weights.fetch(weights.REGISTRY["inception_k400_rgb"], tmp_path / "cache", local_path=path)
    message = str(caught.value)
    assert str(path) in message
    assert "73a4fd1d87eb3dbd97f33a9779fa1caa3d28111a" in message
    assert weights.file_digest(path, "git-blob-sha1") in message
    assert path.exists(), "a configured local file is never deleted"
    with pytest.raises(ChecksumMismatchError, match="rgb_imagenet.pt"):
        weights.load_backbone("inception_k400_rgb", path=path)


def test_corrupted_file_is_refused(tmp_path):
    path = tmp_path / "flow_imagenet.pt"
    torch.save(_random_state({"Conv3d_1a_7x7.conv3d.weight": (64, 2, 7, 7, 7)}, seed=1), path)
    record = _pinned("inception_k400_flow", path)
    assert weights.fetch(record, tmp_path, local_path=path) == path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="flow_imagenet.pt"):
        weights.fetch(record, tmp_path, local_path=path)


def test_fetch_downloads_once_and_verifies(tmp_path):
    source = tmp_path / "published" / "rgb_imagenet.pt"
    source.parent.mkdir()
    source.write_bytes(b"weights v1")
    record = dataclasses.replace(_pinned("inception_k400_rgb", source), url=source.as_uri())
    cache = tmp_path / "cache"

    first = weights.fetch(record, cache)
    assert first == cache / "rgb_imagenet.pt" and first.read_bytes() == b"weights v1"
    source.write_bytes(b"weights v2")
    assert weights.fetch(record, cache).read_bytes() == b"weights v1", "a verified cached file is not downloaded again"

    first.write_bytes(b"tampered")
    with pytest.raises(ChecksumMismatchError, match="cached download, deleted"):
        weights.fetch(record, cache)
    assert not first.exists()
    with pytest.raises(ChecksumMismatchError, match="rgb_imagenet.pt downloaded from file:") as caught:
        weights.fetch(record, cache)
    assert caught.value.found == hashlib.sha256(b"weights v2").hexdigest()
    assert list(cache.iterdir()) == [], "a download that fails verification leaves nothing behind"


def test_weights_released_without_a_checksum_are_refused_until_the_user_pins_one(tmp_path):
    record, path = weights.REGISTRY["r50_nonlocal_k400"], tmp_path / "model.pkl"
    path.write_bytes(b"caffe2 blobs")
    digest = hashlib.sha256(b"caffe2 blobs").hexdigest()
    with pytest.raises(weights.UnpinnedWeightsError, match=f"{path}: no checksum was published.*{digest}"):
        weights.fetch(record, tmp_path, local_path=path)
    with pytest.raises(ChecksumMismatchError, match=str(path)):
        weights.fetch(record, tmp_path, local_path=path, pinned_sha256="f" * 64)
    assert weights.fetch(record, tmp_path, local_path=path, pinned_sha256=digest) == path
    inception = weights.REGISTRY["inception_k400_rgb"]  # a pin adds to a published checksum, never replaces it
    with pytest.raises(ChecksumMismatchError, match="git-blob-sha1"):
        weights.verify(inception, path, pinned_sha256=digest)


def test_missing_weights_error_says_where_to_put_them(tmp_path):
    with pytest.raises(WeightsMissingError) as caught:
        weights.load_backbone("inception_k400_rgb", cache_dir=tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "rgb_imagenet.pt") in message
    assert weights.REGISTRY["inception_k400_rgb"].url in message
    with pytest.raises(WeightsMissingError, match="nowhere.pt"):
        weights.load_backbone("r50_nonlocal_k400", path=tmp_path / "nowhere.pt")
    with pytest.raises(KeyError, match="registered"):
        weights.load_backbone("c3d_sports1m", allow_random=True)


def test_weights_found_in_cache_dir(tmp_path):
    path = tmp_path / "flow_imagenet.pt"
    torch.save(_random_state(published_inception_layout(2), seed=9), path)
    model = weights.load_backbone(_pinned("inception_k400_flow", path), cache_dir=tmp_path)
    assert model.weights_checksum.startswith("sha256:")


def test_random_init_is_marked_and_seeded():
    first = weights.load_backbone("inception_k400_rgb", allow_random=True, seed=3)
    again = weights.load_backbone("inception_k400_rgb", allow_random=True, seed=3)
    other = weights.load_backbone("inception_k400_rgb", allow_random=True, seed=4)
    assert first.weights_checksum == weights.RANDOM_INIT == "random-init"
    weight = "Mixed_3b.b1b.conv3d.weight"
    assert torch.equal(first.state_dict()[weight], again.state_dict()[weight])
    assert not torch.equal(first.state_dict()[weight], other.state_dict()[weight])


def test_registry_records_are_complete():
    for name, record in weights.REGISTRY.items():
        assert record.name == name
        assert record.url.startswith("https://") and record.url.endswith(record.file_name)
        assert record.feature_dim == (1024 if record.architecture == "inception_i3d" else 2048)
        assert record.checksum is None or len(record.checksum.value) in (40, 64)
