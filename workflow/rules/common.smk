"""Helpers shared by the rules: config validation, dataset and method look-ups, path builders."""
import functools
import json
import os
import shlex
import sys
import time
from pathlib import Path

REPO = Path(workflow.basedir).parent
RUN_STARTED = time.time()  # when this Snakemake process read the workflow: the table printed at the end is one written since
sys.path.insert(0, str(REPO))
# Jobs (local, Slurm or in a conda env) import the pipeline's steps from the checkout.
shell.prefix(f"export PYTHONPATH={shlex.quote(str(REPO))}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")

from snakemake.exceptions import WorkflowError

from models import get_method, get_method_class
from pipelines.config_check import ConfigError, dataset_config_error, no_videos_message, validate
from pipelines.datasets import DatasetError, get_adapter
from pipelines.features.store import FEATURE_SOURCE_KEY, FEATURE_TAIL_KEY
from pipelines.frame_count import count_file
from pipelines.poses.source import POSE_SOURCE_KEY
from pipelines.presets import resolve_params
from pipelines.provenance import config_hash
from pipelines.synthetic.params import GENERATOR_VERSION

try:
    validate(config, REPO / "workflow" / "schemas" / "config.schema.yaml", REPO / "workflow" / "rules")
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None

ONE_CLASS_SPLITS = {"one_class": ("train", "test"), "weak": ("weak_train", "weak_test")}


wildcard_constraints:
    dataset=r"[a-z0-9_]+",
    method=r"[a-z0-9_]+",
    split=r"train|test|weak_train|weak_test",
    video=r"[^/]+",
    stage=r"[a-z0-9_]+",
    seed=r"\d+",


def dataset_rule_files():
    return sorted(str(p.relative_to(Path(workflow.basedir))) for p in (REPO / "workflow" / "rules" / "datasets").glob("*.smk"))


def configured_seeds():
    """The run's seeds: `seed` is one integer or a list of them."""
    seed = config["seed"]
    return [seed] if isinstance(seed, int) else list(seed)


SEEDS = configured_seeds()
# Random choices in data preparation (a seeded random backbone in smoke runs) are shared by every
# training seed, so that the seeds differ only in training.
DATA_SEED = SEEDS[0]


def enabled_datasets():
    return sorted(name for name, entry in config["datasets"].items() if entry.get("enabled"))


def enabled_methods():
    return sorted(name for name, entry in config["methods"].items() if entry.get("enabled"))


@functools.cache
def adapter(dataset):
    return get_adapter(dataset, config["datasets"][dataset])


@functools.cache
def videos(dataset, split):
    return {video.name: video for video in adapter(dataset).videos(split)}


def dataset_json(dataset):
    """A dataset's config entry as JSON, for the steps that read its label files."""
    return json.dumps(config["datasets"][dataset], sort_keys=True)


# What the workflow adds to a method's entry about each dataset (the description of its features or
# skeletons, its snippet tail), keyed by dataset: one dataset's jobs and rows see their own only.
PER_DATASET_KEYS = (POSE_SOURCE_KEY, FEATURE_SOURCE_KEY, FEATURE_TAIL_KEY)


def method_entry(method, dataset, skip, keep=None):
    """A method's config entry without the keys in ``skip`` or its runtime keys (given to its jobs as
    resources: ``method_runtime``), only those in ``keep`` when given, and with only the
    ``per_dataset`` overrides and descriptions of ``dataset``: what one dataset's jobs read, so that a
    value changed for another dataset, or one these jobs do not read, leaves them be."""
    skip = {*skip, *get_method_class(method).runtime_params}

    def wanted(key):
        return key not in skip and (keep is None or key in keep)

    entry = {k: v for k, v in config["methods"][method].items() if wanted(k) and k != "per_dataset"}
    own = {k: v for k, v in ((config["methods"][method].get("per_dataset") or {}).get(dataset) or {}).items() if wanted(k)}
    if own:
        entry["per_dataset"] = {dataset: own}
    for key in PER_DATASET_KEYS:
        if key in entry:
            entry[key] = {k: v for k, v in entry[key].items() if k == dataset}
    return entry


def method_json(wildcards):
    """The method's config entry as JSON for scoring: without its evaluation-only keys, so changing
    those reruns only the evaluation."""
    skip = {"enabled", *get_method_class(wildcards.method).protocol_params}
    return json.dumps(method_entry(wildcards.method, wildcards.dataset, skip), sort_keys=True)


def training_json(wildcards):
    """The method's config entry as JSON for one training stage: without the keys only scoring or the
    evaluation read, so changing those never retrains, and with only the keys the stage reads where
    the method lists them (``stage_params``), so a key of a later stage leaves the earlier ones be."""
    method = get_method_class(wildcards.method)
    skip = {"enabled", *method.protocol_params, *method.scoring_params}
    keep = method.stage_params.get(wildcards.stage)
    return json.dumps(method_entry(wildcards.method, wildcards.dataset, skip, keep), sort_keys=True)


def method_runtime(wildcards):
    """The method's runtime keys (``Method.runtime_params``) for the dataset, as JSON: a resource of its
    jobs, not a param, so that changing them reruns nothing (they change how a job runs, not a number)."""
    params = resolve_params(config["methods"][wildcards.method], wildcards.dataset)
    keys = get_method_class(wildcards.method).runtime_params
    return json.dumps({k: params[k] for k in keys if params.get(k) is not None}, sort_keys=True)


def method_protocol_json(wildcards):
    """The method's config entry as JSON for evaluation and plots: every key, with only the
    dataset's own ``per_dataset`` overrides (another dataset's do not rerun them)."""
    return json.dumps(method_entry(wildcards.method, wildcards.dataset, {"enabled"}), sort_keys=True)


def frames_config(dataset):
    """The frames section with the dataset's own overrides applied."""
    merged = dict(config["frames"])
    merged.update(config["datasets"][dataset].get("frames", {}))
    return merged


# Frames -----------------------------------------------------------------------------------


def frames_home(dataset, split, video):
    """The split whose frames folder holds a video: weak splits reuse one-class extractions."""
    if split.startswith("weak_"):
        source = videos(dataset, split)[video].source
        for one_class in ("train", "test"):
            if one_class in adapter(dataset).splits():
                found = videos(dataset, one_class).get(video)
                if found is not None and found.source == source:
                    return one_class
    return split


def frames_file(dataset, split, video):
    return f"results/frames/{dataset}/{frames_home(dataset, split, video)}/{video}.h5"


def split_frame_counts(dataset, split):
    """The frame counts the frames jobs write beside their files (pipelines.frame_count), of a split's
    videos: what its labels job reads."""
    return [count_file(frames_file(dataset, split, video)) for video in videos(dataset, split)]


def frame_source(wildcards):
    """The video file or frame folder that one frames file is decoded from."""
    return str(videos(wildcards.dataset, wildcards.split)[wildcards.video].source)


def frame_source_input(wildcards):
    """What the frames job depends on: the source itself, or the rendering rule's folder holding it."""
    return str(adapter(wildcards.dataset).rule_output(frame_source(wildcards)))


def frame_args(wildcards):
    """The frames step's options, then its source (quoted): one params function per job, not two."""
    cfg = frames_config(wildcards.dataset)
    size = f"--size {cfg['size'][0]} {cfg['size'][1]} " if cfg["size"] else ""
    fps = adapter(wildcards.dataset).folder_fps
    return f"{size}--pixel-format {cfg['pixel_format']} --compression {cfg['compression']}" + (
        f" --fps {fps}" if fps else ""
    ) + f" {shlex.quote(frame_source(wildcards))}"


# Labels (one rule per dataset, in rules/datasets/) ---------------------------------------

LABELS_COMMAND = (
    "python -m pipelines.labels {params.name} {wildcards.split} {output:q} {input.frames:q}"
    " --config-json {params.dataset:q} > {log:q} 2>&1"
)


def labels_inputs(dataset):
    """Input function of a dataset's labels rule: the split's frame counts and its label files."""

    def inputs(wildcards):
        found = adapter(dataset)
        return {
            "frames": split_frame_counts(dataset, wildcards.split),
            "label_files": sorted({str(found.rule_output(p)) for p in found.label_files(wildcards.split)}),
        }

    return inputs


# The synthetic dataset's generator parameters (everything in its entry but what the DAG uses).

SYNTHETIC = config["datasets"].get("synthetic", {})
SYNTHETIC_ROOT = SYNTHETIC.get("root", "results/raw/synthetic")


SYNTHETIC_COUNTS = {"train": "n_train", "test": "n_test", "train_abnormal": "n_train_abnormal"}


def synthetic_json(part=None):
    """The generator's settings as JSON; for one part's shards without the other parts' video counts,
    which do not change a video (it depends on the seed, its part and its index), so that adding test
    videos leaves the training shards be."""
    layout = ("enabled", "frames", "root", "videos_per_job")
    others = {key for name, key in SYNTHETIC_COUNTS.items() if part is not None and name != part}
    return json.dumps({k: v for k, v in SYNTHETIC.items() if k not in layout and k not in others}, sort_keys=True)


# Methods ----------------------------------------------------------------------------------


def method_splits(method):
    """(training split, evaluation split) of a method, from its supervision."""
    return ONE_CLASS_SPLITS[get_method_class(method).supervision]


def method_seeds(method):
    """The seeds a method runs with: all of them when it trains; only the first when it has no
    training stage, since its scores cannot depend on the seed."""
    return SEEDS if get_method_class(method).stages else SEEDS[:1]


def runs():
    """(method, dataset, evaluation split) of every enabled method on every dataset that fits it."""
    found = []
    for method in enabled_methods():
        train_split, test_split = method_splits(method)
        for dataset in enabled_datasets():
            if {train_split, test_split} <= set(adapter(dataset).splits()):
                found.append((method, dataset, test_split))
    return found


# Per-video input file of each input kind ("frames", and what the feature and pose rule files
# add): a function (method, dataset, split, video) -> path.
INPUT_FILES = {"frames": lambda method, dataset, split, video: frames_file(dataset, split, video)}


def method_input(method, dataset, split, video):
    """The file a method reads for one video."""
    kind = get_method_class(method).input_kind
    if kind not in INPUT_FILES:
        raise WorkflowError(f"method {method}: no rule file provides its input kind {kind!r}")
    return INPUT_FILES[kind](method, dataset, split, video)


def stage_checkpoint(method, dataset, seed, stage):
    return f"results/models/{method}/{dataset}/seed_{seed}/{stage}.pt"


def final_checkpoint(wildcards):
    stages = get_method_class(wildcards.method).stages
    return [stage_checkpoint(wildcards.method, wildcards.dataset, wildcards.seed, stages[-1])] if stages else []


def curve_checkpoint(wildcards):
    """The final checkpoint whose test curve the evaluation reports, for a method that keeps one."""
    return final_checkpoint(wildcards) if test_eval_every(wildcards.method) else []


def previous_checkpoint(wildcards):
    stages = get_method_class(wildcards.method).stages
    index = stages.index(wildcards.stage)
    return [stage_checkpoint(wildcards.method, wildcards.dataset, wildcards.seed, stages[index - 1])] if index else []


def split_inputs(method, dataset, split):
    """The file the method reads for every video of a split, in video order."""
    return [method_input(method, dataset, split, video) for video in videos(dataset, split)]


def train_inputs(wildcards):
    return split_inputs(wildcards.method, wildcards.dataset, method_splits(wildcards.method)[0])


def released_checkpoint(wildcards):
    """The released checkpoint a stage reads instead of training, when the config names one."""
    key = get_method_class(wildcards.method).released_checkpoint_params.get(wildcards.stage)
    path = resolve_params(config["methods"][wildcards.method], wildcards.dataset).get(key) if key else None
    return [path] if path else []


def test_eval_every(method):
    """Iterations between AUCs on the evaluation split while the method trains (0: none)."""
    return int(config["methods"][method].get("test_eval_every") or 0)


def evaluation_inputs(wildcards):
    """What a stage that follows its evaluation split reads: every evaluation video's input file
    and the split's labels (none for other methods)."""
    if not test_eval_every(wildcards.method):
        return {}
    split = method_splits(wildcards.method)[1]
    return {"eval_inputs": split_inputs(wildcards.method, wildcards.dataset, split),
            "eval_labels": f"results/labels/{wildcards.dataset}/{split}.h5"}


def evaluation_args(wildcards, input):
    if "eval_labels" not in input.keys():
        return ""
    return shlex.join(["--eval-every", str(test_eval_every(wildcards.method)), "--eval-labels", input.eval_labels,
                       "--eval-inputs", *input.eval_inputs])


def train_labels(wildcards):
    split = method_splits(wildcards.method)[0]
    return [f"results/labels/{wildcards.dataset}/{split}.h5"] if split.startswith("weak_") else []


def score_inputs(wildcards):
    """A scoring job's inputs: the file the method reads for the video, the final checkpoint if it
    trains, and, for a method that carries state from video to video, the previous video's scores."""
    return {
        "video": method_input(wildcards.method, wildcards.dataset, wildcards.split, wildcards.video),
        "checkpoint": final_checkpoint(wildcards),
        "previous": previous_video_scores(wildcards),
    }


@functools.cache
def carries_state(method, params_json):
    """Whether a method, with these scoring parameters, chains the scoring of a split's videos."""
    return get_method(method, json.loads(params_json)).carries_state()


@functools.cache
def previous_videos(dataset, split):
    """Each video of a split but the first -> the video before it, in name order."""
    names = sorted(videos(dataset, split))
    return dict(zip(names[1:], names[:-1]))


def previous_video_scores(wildcards):
    """The score file of the video before this one (name order) in its split, when the method carries
    state across videos (its start state is stored there); none for the first video or other methods."""
    if not carries_state(wildcards.method, method_json(wildcards)):
        return []
    previous = previous_videos(wildcards.dataset, wildcards.split).get(wildcards.video)
    w = wildcards
    return [score_file(w.method, w.dataset, w.seed, w.split, previous)] if previous else []


def previous_arg(wildcards, input):
    """A scoring job's --previous, for a chained method's videos after the first."""
    return optional_path("--previous", input.previous)


def checkpoint_arg(wildcards, input):
    """A scoring job's --checkpoint, when its method trains. Only paths come from ``input``:
    Snakemake leaves params computed from input or output out of its params-changed trigger."""
    return optional_path("--checkpoint", input.checkpoint)


def score_file(method, dataset, seed, split, video):
    return f"results/scores/{method}/{dataset}/seed_{seed}/{split}/{video}.h5"


def score_files(method, dataset, seed, split):
    return [score_file(method, dataset, seed, split, video) for video in videos(dataset, split)]


def split_scores(wildcards):
    """The score files of one seed's run on a split."""
    return score_files(wildcards.method, wildcards.dataset, wildcards.seed, wildcards.split)


def first_seed_scores(wildcards):
    """The score files of a method's first seed on a split (what the timeline plots show)."""
    return score_files(wildcards.method, wildcards.dataset, method_seeds(wildcards.method)[0], wildcards.split)


# Keys that decide how jobs run or how results are stored, never a number of the table: left out
# of a row's config and its hash.
NOT_IN_RUN_HASH = {
    "dataset": {"videos_per_job", "frames"},  # its frames overrides are in the merged frames section
    "frames": {"compression"},
    "features": {"batch_size", "device", "weights_sha256"},  # a pin checks the file, whose digest the features record
}


def dataset_poses(dataset):
    """The poses settings behind one dataset's skeletons: its backend and that backend's settings
    (its folder, for released files), not the other datasets' or backends'."""
    backend = pose_backend(dataset)
    section = {"backend": backend}
    if backend in ("alphapose", "blazepose"):
        section[backend] = POSES[backend]
    elif backend == "precomputed":
        section["precomputed"] = POSES["precomputed"][dataset]
    return section


def run_config(wildcards):
    """Every config value apart from the seed that can change a row of the table (rows average over
    seeds and list them in their own column), as JSON: the dataset, its frames, the method and the
    section that makes the method's input (features, or skeletons and tubes); of the method's
    ``per_dataset`` values only the dataset's own. The evaluation record keeps it with its hash, the
    row's config_hash."""
    record = {
        "dataset": config["datasets"][wildcards.dataset],
        "frames": frames_config(wildcards.dataset),
        "method": method_entry(wildcards.method, wildcards.dataset, {"enabled"}),
    }
    kind = get_method_class(wildcards.method).input_kind
    if kind == "features":
        published = config["features"]["published_dirs"].get(wildcards.dataset)
        record["features"] = {k: v for k, v in config["features"].items() if k != "published_dirs"}
        record["features"]["published_dirs"] = {wildcards.dataset: published} if published else {}
    elif kind in ("poses", "person_tubes"):
        record["poses"] = dataset_poses(wildcards.dataset)
    kept = {name: {k: v for k, v in section.items() if k not in NOT_IN_RUN_HASH.get(name, ())}
            for name, section in record.items()}
    return json.dumps(kept, sort_keys=True)


include: "gpu_request.smk"
include: "slurm_fit.smk"


def method_resources(wildcards):
    """GPU count of a method's jobs; rules request them with `**gpu_resources(method_resources)`."""
    return 1 if get_method_class(wildcards.method).uses_gpu else 0


def optional_path(flag, paths):
    """``flag 'path'`` (shell-quoted) when an optional input is present, else nothing."""
    return f"{flag} {shlex.quote(str(paths[0]))}" if paths else ""


# Targets ----------------------------------------------------------------------------------


def eval_files():
    """One evaluation record per method x dataset x split x seed."""
    return [f"results/eval/{m}/{d}/seed_{seed}/{s}.json" for m, d, s in runs() for seed in method_seeds(m)]


def all_targets():
    if not runs():
        raise WorkflowError("no enabled method fits any enabled dataset: nothing to run")
    timelines = [f"results/report/timelines/{d}_{s}_{m}.png" for m, d, s in runs()]
    # Per-video products are targets too, so deleting one reruns that video and what follows; and so
    # are the folders the workflow renders raw videos into, so deleting one renders its videos again.
    per_video = set()
    for method, dataset, split in runs():
        train_split = method_splits(method)[0]
        found = adapter(dataset)
        for each in (train_split, split):
            listed = videos(dataset, each)
            if each == train_split and not listed and get_method_class(method).stages:
                message = no_videos_message(found, config["datasets"][dataset], each)
                error = dataset_config_error(dataset, DatasetError(f"{message}, and method {method} trains on it"))
                raise WorkflowError(f"invalid configuration: {error}")
            per_video.update(method_input(method, dataset, each, video) for video in listed)
            if found.generated_by_workflow:
                per_video.update(str(found.rule_output(v.source)) for v in listed.values())
        for seed in method_seeds(method):
            per_video.update(score_files(method, dataset, seed, split))
    return ["results/report/auc_table.csv", "results/report/provenance.json"] + timelines + sorted(per_video)


def print_table_of_the_run():
    """Print the AUC table when a run that wrote it ends well, from Snakemake's own process: a job's
    output goes to its log (and, on a cluster, its Slurm log), so the report job cannot show it. A
    table an earlier run wrote (this run stopped before the report, with --until, say) is not
    shown as this run's. `make demo` and `make run` print it themselves, after a run with nothing
    to do too (VADBENCH_PRINT_TABLE=0 leaves it to them)."""
    table = Path("results/report/auc_table.md")
    written_now = table.is_file() and table.stat().st_mtime >= RUN_STARTED
    if written_now and os.environ.get("VADBENCH_PRINT_TABLE") != "0":
        print(f"\n{table}:\n\n{table.read_text()}", flush=True)
