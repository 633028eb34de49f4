# Input functions and path builders of the skeleton rules (rules/poses.smk): which backend makes a
# dataset's skeletons, what each job reads, and the shell commands; registers the input kinds "poses"
# and "person_tubes".

import functools
import os

from pipelines.poses.alphapose_weights import settings_problems as alphapose_settings_problems
from pipelines.poses.source import POSE_SOURCE_KEY, backend_of, describe_pose_source
from pipelines.provenance import sha256_file
from pipelines.presets import resolve_params


POSES = config["poses"]


def pose_backend(dataset):
    """alphapose, blazepose, ground_truth or precomputed, for one dataset."""
    backend = backend_of(POSES, dataset)
    if backend == "ground_truth" and dataset != "synthetic":
        raise WorkflowError(f"poses: dataset {dataset} has no ground-truth skeletons; choose another backend")
    if backend == "alphapose":
        if not POSES["alphapose"]["checkout"]:
            raise WorkflowError("poses.alphapose.checkout: set it to an AlphaPose checkout to use the alphapose backend")
        problems = alphapose_settings_problems(POSES["alphapose"])
        if problems:
            raise WorkflowError("; ".join(problems))
        check_alphapose_pins()
    return backend


ALPHAPOSE_WEIGHTS_RECORD = "results/alphapose/weights.json"


def alphapose_path(relative):
    return os.path.join(POSES["alphapose"]["checkout"], relative)


def alphapose_weight_files():
    """AlphaPose's weights files in use, by their config key."""
    settings = POSES["alphapose"]
    keys = ["checkpoint", "detector_weights"] + (["tracker_weights"] if settings["tracker_weights"] else [])
    return {key: alphapose_path(settings[key]) for key in keys}


@functools.cache
def check_alphapose_pins():
    """Stop before anything runs when a weights file AlphaPose will read has no pinned sha256."""
    pinned = POSES["alphapose"]["weights_sha256"]
    missing = {key: path for key, path in alphapose_weight_files().items() if key not in pinned}
    if missing:
        found = "; ".join(f"{key}: {path} " + (f"has sha256 {sha256_file(path)}" if os.path.isfile(path)
                                                else "does not exist yet") for key, path in missing.items())
        raise WorkflowError(
            f"config keys poses.alphapose.weights_sha256.{{{', '.join(missing)}}} are needed: AlphaPose unpickles "
            f"its weights and its model zoo publishes no checksums. {found}. Check each against a copy you "
            f"trust, then pin it there")


@functools.cache
def tube_weights_file(method, dataset):
    """The I3D weights a method's person tubes of a dataset read (i3d_weights, else the one in
    i3d_cache_dir), None for a random backbone: an input of the tube jobs, so the cache folder itself is
    no param of theirs."""
    from pipelines.poses.tubes import tube_weights  # imported here: the module loads OpenCV and torch

    return tube_weights(resolve_params(config["methods"][method], dataset))


def pose_source(method, dataset):
    """The phrase a pose method's report rows carry about the dataset's skeletons (and tubes)."""
    backend = pose_backend(dataset)
    random_tubes = get_method_class(method).input_kind == "person_tubes" and tube_weights_file(method, dataset) is None
    settings = POSES[backend] if backend in ("alphapose", "blazepose") else None
    return describe_pose_source(backend, settings, POSES["precomputed"].get(dataset), random_tubes)


# Every pose method's entry gets the description of its skeletons per dataset, which its report rows
# carry and its config hash covers (an evaluation-only key: see the methods' protocol_params).
for _method, _dataset, _ in runs():
    if get_method_class(_method).input_kind in ("poses", "person_tubes"):
        config["methods"][_method].setdefault(POSE_SOURCE_KEY, {})[_dataset] = pose_source(_method, _dataset)


def pose_gpus(wildcards):
    """One GPU per AlphaPose or person-tube job, asked for in the profile's style."""
    return 1


def poses_file(dataset, split, video):
    return f"results/poses/{dataset}/{frames_home(dataset, split, video)}/{video}.h5"


INPUT_FILES["poses"] = lambda method, dataset, split, video: poses_file(dataset, split, video)


@functools.cache
def ground_truth_poses(dataset, split):
    return adapter(dataset).pose_files(split)


@functools.cache
def pose_json(dataset, split, video):
    """The JSON skeletons a non-BlazePose backend converts; cached, since both a job's input and its
    command ask for it and a precomputed backend searches a folder to answer."""
    backend = pose_backend(dataset)
    if backend == "alphapose":
        return f"results/alphapose/{dataset}/{split}/{video}/alphapose-results.json"
    if backend == "ground_truth":
        return str(ground_truth_poses(dataset, split)[video])
    # Imported here: the converter's module loads h5py, Blosc and OpenCV, which building the DAG
    # otherwise does without (a third of a second at every start).
    from pipelines.poses.convert import PoseFormatError, find_pose_json

    try:
        return str(find_pose_json(POSES["precomputed"][dataset], video, split))
    except PoseFormatError as err:
        raise WorkflowError(f"poses.precomputed.{dataset}: {err}") from None


def pose_inputs(wildcards):
    d, s, v = wildcards.dataset, wildcards.split, wildcards.video
    inputs = {"frames": frames_file(d, s, v)}
    if pose_backend(d) == "blazepose":
        settings = POSES["blazepose"]
        for key in ("detector_weights", "landmark_weights"):
            if settings[key]:
                inputs[key] = settings[key]
    else:
        inputs["json"] = str(adapter(d).rule_output(pose_json(d, s, v)))
        if pose_backend(d) == "alphapose":
            inputs["weights"] = ALPHAPOSE_WEIGHTS_RECORD
    return inputs


def pose_command(wildcards):
    """The shell command that writes one poses file, for the dataset's backend. Built from the
    wildcards alone, like every params function that carries settings: Snakemake leaves params
    computed from a job's input or output out of its params-changed trigger, so a changed backend
    setting would not re-extract the poses. The paths are those pose_inputs and the rule name."""
    d, s, v = wildcards.dataset, wildcards.split, wildcards.video
    frames, out = frames_file(d, s, v), poses_file(d, s, v)
    backend = pose_backend(d)
    if backend == "blazepose":
        settings = {k: v for k, v in POSES["blazepose"].items() if k not in ("detector_weights", "landmark_weights", "cache_dir")}
        args = ["python", "-m", "pipelines.poses.blazepose", frames, out,
                "--settings-json", json.dumps(settings, sort_keys=True), "--cache-dir", POSES["blazepose"]["cache_dir"],
                "--dataset", d]
        for key in ("detector_weights", "landmark_weights"):
            if POSES["blazepose"][key]:
                args += [f"--{key.replace('_', '-')}", POSES["blazepose"][key]]
        return shlex.join(args)
    json_path = pose_json(d, s, v)
    args = ["python", "-m", "pipelines.poses.convert", json_path, out, "--frames", frames,
            "--backend", backend, "--dataset", d]
    source = videos(d, s)[v].source
    if backend in ("alphapose", "precomputed") and source.is_dir():
        # alphapose-results.json names frames by their files: their place in the folder is the index
        args += ["--image-dir", str(source)]
    if backend == "alphapose":
        settings = {k: v for k, v in POSES["alphapose"].items() if k != "weights_sha256"}  # in the record
        args += ["--settings-json", json.dumps(settings, sort_keys=True), "--weights-json", ALPHAPOSE_WEIGHTS_RECORD]
    return shlex.join(args)


def alphapose_weights_command(wildcards):
    """The check of AlphaPose's weights against their pins (from the config alone, so a new pin reruns it)."""
    args = ["python", "-m", "pipelines.poses.alphapose_weights", ALPHAPOSE_WEIGHTS_RECORD,
            "--pinned-json", json.dumps(POSES["alphapose"]["weights_sha256"], sort_keys=True)]
    for key, path in alphapose_weight_files().items():
        args += ["--file", f"{key}={path}"]
    return shlex.join(args)


def alphapose_inputs(wildcards):
    settings = POSES["alphapose"]
    inputs = {
        "source": frame_source_input(wildcards),
        "cfg": alphapose_path(settings["cfg"]),
        "checkpoint": alphapose_path(settings["checkpoint"]),
        "detector_weights": alphapose_path(settings["detector_weights"]),
    }
    if settings["tracker_weights"]:
        inputs["tracker_weights"] = alphapose_path(settings["tracker_weights"])
    inputs["weights_checked"] = ALPHAPOSE_WEIGHTS_RECORD  # AlphaPose reads them only once they are checked
    return inputs


def alphapose_args(wildcards):
    """demo_inference.py arguments; paths absolute, since the script runs inside the checkout. From
    the wildcards alone (see pose_command); the paths are those alphapose_inputs and the rule name."""
    settings = POSES["alphapose"]
    source = os.path.abspath(frame_source(wildcards))
    out = pose_json(wildcards.dataset, wildcards.split, wildcards.video)
    args = ["--cfg", os.path.abspath(alphapose_path(settings["cfg"])),
            "--checkpoint", os.path.abspath(alphapose_path(settings["checkpoint"])),
            "--indir" if os.path.isdir(source) else "--video", source,
            "--outdir", os.path.abspath(os.path.dirname(out)), "--detector", settings["detector"],
            f"--{settings['tracker']}", "--sp", "--min_box_area", str(settings["min_box_area"]),
            *settings["extra_args"]]
    return shlex.join(args)


# Person tubes (GENet) --------------------------------------------------------------------


def tubes_file(method, dataset, split, video):
    return f"results/tubes/{method}/{dataset}/{frames_home(dataset, split, video)}/{video}.h5"


INPUT_FILES["person_tubes"] = tubes_file


def tube_inputs(wildcards):
    d, s, v = wildcards.dataset, wildcards.split, wildcards.video
    inputs = {"poses": poses_file(d, s, v), "frames": frames_file(d, s, v)}
    weights = tube_weights_file(wildcards.method, d)
    if weights:
        inputs["weights"] = weights
    return inputs


def tube_batch_size(wildcards):
    """Segments per I3D forward pass: a resource, not a param, since no feature depends on it (I3D runs
    in evaluation mode, segment by segment)."""
    return int(resolve_params(config["methods"][wildcards.method], wildcards.dataset)["tube_batch_size"])


def tube_command(wildcards):
    """Arguments of pipelines.poses.tubes from the method's parameters for this dataset (from the
    wildcards alone, see pose_command)."""
    params = resolve_params(config["methods"][wildcards.method], wildcards.dataset)
    stride = params["train_stride"] if wildcards.split == method_splits(wildcards.method)[0] else params["test_stride"]
    settings = {"seg_len": params["seg_len"], "stride": stride, "max_missing": params["max_missing"],
                "released_rule": params["released_continuity_rule"], "frame_size": params["frame_size"],
                "margin": params["tube_margin"], "crop_size": params["tube_crop_size"]}
    args = ["--settings-json", json.dumps(settings, sort_keys=True), "--dataset", wildcards.dataset]
    weights = tube_weights_file(wildcards.method, wildcards.dataset)  # tube_inputs' weights
    if weights:
        args += ["--weights", weights]
    if params["allow_random_backbone"]:
        # The seed draws the random backbone only: with Kinetics weights it changes nothing.
        args += ["--allow-random-backbone", "--seed", str(DATA_SEED)]
    return shlex.join(args)
