"""Configuration validation: one clear message naming the key, before any DAG is built."""
from __future__ import annotations

import copy

import pytest
import yaml

from pipelines.config_check import ConfigError, validate
from tests.conftest import REPO

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
RULES = REPO / "workflow" / "rules"


@pytest.fixture
def config():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_shipped_config_is_valid_and_defaults_are_filled(config):
    del config["report"]
    checked = validate(copy.deepcopy(config), SCHEMA, RULES)
    assert checked["report"]["timeline_videos"] == 4
    assert checked["frames"]["compression"] == "lz4"
    assert checked["datasets"]["synthetic"]["root"] == "results/raw/synthetic"
    assert checked["features"]["flow"] is False
    config["features"]["flow"] = True
    assert validate(config, SCHEMA, RULES)["features"]["flow"] is True


def test_a_datasets_frames_section_overrides_only_the_keys_it_sets(config):
    """Defaults fill the top-level frames section only: a dataset's own section that got them too
    would put back lz4 over a user's top-level `compression: none` (what configs/ped2.yaml's
    grey override must not do)."""
    config["frames"] = {"compression": "none"}
    config["datasets"]["synthetic"]["frames"] = {"pixel_format": "gray"}
    checked = validate(config, SCHEMA, RULES)
    assert checked["frames"] == {"size": None, "pixel_format": "rgb24", "compression": "none"}
    assert checked["datasets"]["synthetic"]["frames"] == {"pixel_format": "gray"}
    config["datasets"]["synthetic"]["frames"] = {"pixel_fromat": "gray"}
    with pytest.raises(ConfigError, match=r"'datasets\.synthetic\.frames\.pixel_fromat' is not allowed"):
        validate(config, SCHEMA, RULES)


@pytest.mark.parametrize("seed", [0, 7, [0], [2, 0, 1]])
def test_seed_is_one_integer_or_a_list_of_distinct_ones(config, seed):
    config["seed"] = seed
    assert validate(config, SCHEMA, RULES)["seed"] == seed


@pytest.mark.parametrize("path", [REPO / "config.yaml", *sorted((REPO / "configs").glob("*.yaml"))],
                         ids=lambda p: p.name)
def test_every_key_of_the_shipped_configs_has_a_comment(path):
    """Every key of config.yaml; every key with a value in the overlays (their section headers
    repeat config.yaml's, commented there)."""
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or ":" not in stripped:
            continue
        if path.parent.name == "configs" and stripped.endswith(":"):
            continue
        previous = lines[number - 1].strip()
        assert "#" in line or previous.startswith("#"), f"{path.name} line {number + 1} has no comment: {line}"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["datasets"]["synthetic"].update(n_trian=3), r"'datasets\.synthetic\.n_trian' is not allowed"),
        (lambda c: c.update(sed=1), r"'sed' is not allowed"),
        (lambda c: c["datasets"].update(mydata={"enabled": True}), r"'datasets\.mydata': unknown dataset"),
        (lambda c: c["methods"].update(lgn={"enabled": True}), r"'methods\.lgn': unknown method"),
        (lambda c: c["frames"].update(compression="brotli"), r"'frames\.compression'"),
        (lambda c: c["features"].update(flow="yes"), r"'features\.flow'"),
        (lambda c: c["datasets"]["synthetic"].update(enabled=False), r"no dataset is enabled"),
        (lambda c: c["datasets"]["ped2"].update(enabled=True, root="/no/such/ped2"), r"'datasets\.ped2\.root': /no/such/ped2 does not exist"),
        (lambda c: c.update(seed=-1), r"'seed': -1 is less than the minimum of 0"),
        (lambda c: c.update(seed=[0, 1, 0]), r"'seed': \[0, 1, 0\] has non-unique elements"),
        (lambda c: c.update(seed=[]), r"'seed': \[\] should be non-empty|'seed': \[\] is too short"),
        (lambda c: c.update(seed=[0, "1"]), r"'seed\.1': '1' is not of type 'integer'"),
        (lambda c: c.update(seed=True), r"'seed': True is not of type 'integer', 'array'"),
        # JSON Schema's integer takes 0.0 and 64.0: such floats failed later, inside jobs or as bare tracebacks
        (lambda c: c.update(seed=0.0), r"'seed': 0\.0 is not of type 'integer', 'array'"),
        (lambda c: c["frames"].update(size=[64.0, 80.0]), r"'frames\.size\.0': 64\.0 is not of type 'integer'"),
        (lambda c: c["datasets"]["synthetic"].update(n_frames=48.0), r"'datasets\.synthetic\.n_frames': 48\.0 is not of type 'integer'"),
        (lambda c: c["datasets"]["shanghaitech"].update(weak_lists=""), r"'datasets\.shanghaitech\.weak_lists': '' (should be non-empty|is too short)"),
        (lambda c: c["datasets"]["synthetic"].update(walkers=[5, 2]), r"'datasets\.synthetic\.walkers': must be \[min, max\] with 0 <= min <= max"),
        # released checkpoints and weights: a bare MissingInputException of a job, after the DAG was built
        (lambda c: c["methods"]["stg_nf"].update(enabled=True, pretrained="/no/such.tar"), r"'methods\.stg_nf\.pretrained': /no/such\.tar does not exist"),
        (lambda c: c["methods"]["genet"].update(enabled=True, i3d_weights="/tmp"), r"'methods\.genet\.i3d_weights': /tmp is not a file"),
        (lambda c: c["methods"]["genet"].update(enabled=True, per_dataset={"synthetic": {"guidance_pretrained": "x.tar"}}),
         r"'methods\.genet\.per_dataset\.synthetic\.guidance_pretrained': x\.tar does not exist"),
    ],
)
def test_bad_config_names_the_key(config, edit, message):
    edit(config)
    with pytest.raises(ConfigError, match=message):
        validate(config, SCHEMA, RULES)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # each failed only inside a job, after the frames, features or tubes it needed were made
        (lambda c, _: c["methods"]["ssrl"].update(enabled=True, stage_init="best_on_test"),
         r"'methods\.ssrl\.stage_init': stage_init best_on_test needs test_eval_every > 0"),
        (lambda c, _: c["methods"]["ssrl"].update(enabled=True, stage_init="best_on_test", test_eval_every=5, iterations=40),
         r"'methods\.ssrl\.test_eval_after': stage_init best_on_test: with iterations 40, test_eval_every 5 and "
         r"test_eval_after 50 no stage evaluates"),
        (lambda c, _: c["methods"]["genet"].update(enabled=True),
         r"'methods\.genet\.i3d_weights': not set: the person tubes need the Kinetics RGB I3D weights"),
        (lambda c, tmp: c["methods"]["genet"].update(enabled=True, i3d_cache_dir=str(tmp)),
         r"'methods\.genet\.i3d_weights': not set, and .* holds no rgb_imagenet\.pt"),
        (lambda c, tmp: (c["methods"]["stg_nf"].update(enabled=True), c["poses"].update(dataset_backends={}),
                         c["poses"]["blazepose"].update(landmark_weights=str(tmp / "lite.tflite"))),
         r"'poses\.blazepose\.landmark_weights': .*lite\.tflite does not exist"),
    ],
)
def test_settings_a_job_would_refuse_are_named_before_the_dag(config, tmp_path, edit, message):
    edit(config, tmp_path)
    with pytest.raises(ConfigError, match=message):
        validate(config, SCHEMA, RULES)


def test_settings_that_fit_pass_the_check(config, tmp_path):
    """GENet's weights in its cache folder, BlazePose's models for a dataset whose skeletons come from
    elsewhere, best-on-test with a test split followed in time."""
    (tmp_path / "rgb_imagenet.pt").write_bytes(b"")
    config["methods"]["genet"].update(enabled=True, i3d_cache_dir=str(tmp_path))
    config["poses"]["blazepose"]["detector_weights"] = str(tmp_path / "missing.tflite")  # synthetic: ground truth
    config["methods"]["ssrl"].update(enabled=True, stage_init="best_on_test", test_eval_every=5, iterations=60)
    validate(config, SCHEMA, RULES)


def test_a_method_module_without_its_schema_says_what_is_missing(config, tmp_path, monkeypatch):
    """Adding a method without its schema file said "unknown method", of a method that is there."""
    import pipelines.config_check as config_check

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mean_change.py").write_text("@register\nclass MeanChange(Method): ...\n")
    (tmp_path / "models" / "backbone.py").write_text("class Backbone(nn.Module): ...\n")  # not a method
    monkeypatch.setattr(config_check, "_REPO", tmp_path)
    config["methods"]["mean_change"] = {"enabled": True}
    with pytest.raises(ConfigError, match=r"'methods\.mean_change': models/mean_change\.py exists, but "
                                          r"workflow/schemas/methods/mean_change\.schema\.yaml does not"):
        validate(config, SCHEMA, RULES)
    del config["methods"]["mean_change"]
    config["methods"]["backbone"] = {"enabled": True}
    with pytest.raises(ConfigError, match=r"'methods\.backbone': unknown method; known methods: arnet"):
        validate(config, SCHEMA, RULES)


def test_a_module_that_registers_no_method_of_its_name_is_named():
    from models import get_method_class

    with pytest.raises(KeyError, match=r"models/base\.py registers no method named 'base'.*@register"):
        get_method_class("base")
    with pytest.raises(KeyError, match=r"unknown method 'lgn'; known methods: arnet, genet, lgn_net"):
        get_method_class("lgn")


def test_missing_label_file_names_it(config, shared_data, tmp_path):
    config["datasets"]["ped2"].update(enabled=True, root=str(shared_data / "ped2"), labels=str(tmp_path / "labels.npy"))
    with pytest.raises(ConfigError, match=r"datasets\.ped2\.labels.*labels\.npy"):
        validate(config, SCHEMA, RULES)


def test_a_split_without_videos_is_refused_before_the_dag_is_built(config, shared_data, tmp_path):
    """An empty folder passed every check and the DAG, and its labels job failed with argparse's
    usage message, naming neither the folder nor the cause."""
    (tmp_path / "training" / "frames" / "01").mkdir(parents=True)
    (tmp_path / "testing" / "frames").mkdir(parents=True)
    labels = shared_data / "ped2" / "frame_labels_ped2.npy"
    config["datasets"]["ped2"].update(enabled=True, root=str(tmp_path), labels=str(labels))
    with pytest.raises(ConfigError, match=rf"config key 'datasets.ped2': no videos of its test split found under "
                                          rf"{tmp_path} \(expected: the UCSD Ped2 folder"):
        validate(config, SCHEMA, RULES)


def test_avenue_videos_not_named_by_number_are_refused_by_name(config, shared_data, tmp_path):
    """Avenue's test videos are its published 01 .. 21, whose mask files are found by number; `Test001`
    stopped the DAG build with int()'s ValueError."""
    for folder, name in (("training_videos", "01.avi"), ("testing_videos", "Test001.avi")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_bytes(b"")
    masks = shared_data / "gt" / "avenue" / "testing_label_mask"
    config["datasets"]["avenue"].update(enabled=True, root=str(tmp_path), labels=str(masks))
    with pytest.raises(ConfigError, match=r"config key 'datasets.avenue.root': .*testing_videos does not hold the 21 published "
                                          r"test videos \(01 \.\. 21\); missing 21: 01, 02, .*; not published: Test001"):
        validate(config, SCHEMA, RULES)


@pytest.mark.parametrize("overlay", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_shipped_overlay_fits_the_schema(config, overlay):
    """Each configs/*.yaml over config.yaml passes the schema (its data folders may be absent here,
    so only the schema part of the validation runs)."""
    import jsonschema

    from pipelines.config_check import load_schema
    from tests.workflow_helpers import merge_config

    merged = merge_config(config, yaml.safe_load((REPO / "configs" / overlay).read_text()))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in jsonschema.Draft7Validator(load_schema(SCHEMA)).iter_errors(merged)]
    assert errors == []


@pytest.mark.parametrize(
    ("section", "entry"),
    [
        (("poses", "precomputed"), "x"),
        (("poses", "dataset_backends"), "blazepose"),
        (("features", "published_dirs"), {"rtfm": "x"}),
        (("methods", "stg_nf", "per_dataset"), {"seg_len": 16}),
    ],
)
def test_a_misspelled_dataset_in_a_section_keyed_by_dataset_is_named(config, section, entry):
    """Ignored, such a key would run the dataset with the wrong settings without a word."""
    target = config
    for key in section:
        target = target.setdefault(key, {})
    target["synthetc"] = entry
    with pytest.raises(ConfigError, match=rf"config key '{'.'.join(section)}.synthetc': unknown name; known: avenue, ped2"):
        validate(config, SCHEMA, RULES)


def _avenue_root(root, test=range(1, 22)):
    """Avenue's layout with empty placeholder videos: one training video, test videos numbered as published."""
    for folder, numbers in (("training_videos", [1]), ("testing_videos", test)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in numbers:
            (root / folder / f"{i:02d}.avi").write_bytes(b"")
    return root


@pytest.mark.parametrize(("convention", "labels", "problem"), [
    ("masks", "frame_labels_avenue.npy", r"frame_labels_avenue.npy is not a folder, but label_convention masks reads"),
    ("liu2018", "testing_label_mask", r"testing_label_mask is a folder, but label_convention liu2018 reads the file"),
])
def test_avenue_labels_of_the_wrong_kind_for_the_convention_are_refused_before_the_dag(config, shared_data, tmp_path,
                                                                                         convention, labels, problem):
    """The file given for masks passed as 'label file .../frame_labels_avenue.npy/1_label.mat not found';
    the folder given for liu2018 passed, and its labels job failed."""
    config["datasets"]["avenue"].update(enabled=True, root=str(_avenue_root(tmp_path)), label_convention=convention,
                                        labels=str(shared_data / "gt" / "avenue" / labels))
    with pytest.raises(ConfigError, match=rf"config key 'datasets.avenue.labels': .*{problem}"):
        validate(config, SCHEMA, RULES)


def test_a_test_subset_names_its_videos_as_quoted_strings(config, shared_data, tmp_path):
    """YAML reads an unquoted 01 as the number 1, which names no video."""
    masks = shared_data / "gt" / "avenue" / "testing_label_mask"
    config["datasets"]["avenue"].update(enabled=True, root=str(_avenue_root(tmp_path, test=[1, 2])), labels=str(masks))
    with pytest.raises(ConfigError, match=r"config key 'datasets.avenue.root': .*testing_videos does not hold the 21 published "
                                          r"test videos \(01 \.\. 21\); missing 19: 03, .* name it in datasets.avenue.test_subset"):
        validate(copy.deepcopy(config), SCHEMA, RULES)
    config["datasets"]["avenue"]["test_subset"] = [1, 2]
    with pytest.raises(ConfigError, match=r"config key 'datasets.avenue.test_subset.0': 1 is not of type 'string'"):
        validate(copy.deepcopy(config), SCHEMA, RULES)
    config["datasets"]["avenue"]["test_subset"] = ["01", "02"]
    assert validate(config, SCHEMA, RULES)["datasets"]["avenue"]["test_subset"] == ["01", "02"]


def _enable_only(config, name, **entry):
    for other in config["datasets"].values():
        other["enabled"] = False
    config["datasets"][name].update(enabled=True, **entry)


def test_videos_named_by_lists_must_be_under_the_root_before_the_dag(config, shared_data, tmp_path):
    """UCF-Crime's and the weak ShanghaiTech split's videos come from lists: under a wrong root the
    DAG build ended in Snakemake's MissingInputException, naming no config key."""
    gt = shared_data / "gt" / "ucf_crime"
    _enable_only(config, "ucf_crime", root=str(tmp_path / "ucf"), lists=str(gt),
                 labels=str(gt / "Temporal_Anomaly_Annotation.txt"))
    (tmp_path / "ucf").mkdir()
    with pytest.raises(ConfigError, match=rf"config key 'datasets.ucf_crime.root': 1900 listed videos not found, e.g. "
                                          rf"{tmp_path}/ucf/\S+\.mp4 \(of the \w+ split\); expected: the UCF-Crime folder holding"):
        validate(copy.deepcopy(config), SCHEMA, RULES)
    listed = [line for name in ("Anomaly_Train.txt", "Anomaly_Test.txt") for line in (gt / name).read_text().split()]
    for entry in listed:
        (tmp_path / "ucf" / entry).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ucf" / entry).touch()
    validate(copy.deepcopy(config), SCHEMA, RULES)
    (tmp_path / "ucf" / "Abuse" / "Abuse028_x264.mp4").unlink()
    with pytest.raises(ConfigError, match=rf"1 listed videos not found, e.g. {tmp_path}/ucf/Abuse/Abuse028_x264.mp4 \(of the test split\)"):
        validate(copy.deepcopy(config), SCHEMA, RULES)

    root = tmp_path / "shanghaitech"
    (root / "training" / "videos").mkdir(parents=True)
    for mask in (shared_data / "gt" / "shanghaitech" / "test_frame_mask").glob("*.npy"):
        (root / "testing" / "frames" / mask.stem).mkdir(parents=True)
    _enable_only(config, "shanghaitech", root=str(root), labels=str(shared_data / "gt" / "shanghaitech" / "test_frame_mask"),
                 weak_lists=str(shared_data / "lists" / "shanghaitech_weak"))
    with pytest.raises(ConfigError, match=rf"config key 'datasets.shanghaitech.root': 330 listed videos not found, e.g. "
                                          rf"{root}/training/videos/\d\d_\d\d\d.avi \(of the weak_train split\); expected: "):
        validate(config, SCHEMA, RULES)
