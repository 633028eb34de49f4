# I3D snippet features, one file per video, for the methods whose input_kind is "features". A video's
# features are extracted from its frames (rule extract_features, a GPU job) unless features.published_dirs
# names published feature folders for the dataset (rule published_features). Each method reads the feature
# set of its preset (features.presets) plus its own patch grids (SSRL); a video in several splits is
# extracted once, under the split that holds its frames.
import shlex

from pipelines.features.extract import FEATURE_SETS, backbones_needed, feature_set_name, missing_streams
from pipelines.features.presets import SSRL_PATCHES
from pipelines.features.published import find_clip_file, find_patch_file
from pipelines.features.store import FeatureSource
from pipelines.features.weights import REGISTRY
from pipelines.weak_methods import FEATURE_SOURCE_KEY

FEATURES = config["features"]


def feature_set(method):
    """The feature set a method reads: its configured clip preset, with its patch preset if it has one."""
    presets = FEATURES["presets"]
    if method not in presets:
        raise WorkflowError(f"config key 'features.presets.{method}': not set; {method} reads features")
    return feature_set_name(presets[method], getattr(get_method_class(method), "feature_patches", None))


def published_folders(dataset, set_name):
    """{preset: folder} of a dataset's published feature set, or None when it is extracted here."""
    clip, patches = FEATURE_SETS[set_name]
    given = FEATURES["published_dirs"].get(dataset, {})
    if clip not in given:
        return None
    if patches and patches not in given:
        raise WorkflowError(
            f"config key 'features.published_dirs.{dataset}': {set_name} needs published {patches} as well as "
            f"{clip} features (published RTFM features carry no patch features)"
        )
    return given


def weights_file(backbone):
    """The weights file of a backbone: features.weights, else weights_dir/<released name> when present."""
    configured = FEATURES["weights"].get(backbone)
    if configured:
        return configured
    default = Path(FEATURES["weights_dir"]) / REGISTRY[backbone].file_name
    return str(default) if default.is_file() else None


def features_file(method, dataset, split, video):
    set_name = feature_set(method)
    home = frames_home(dataset, split, video)
    prefix = "results/features/published" if published_folders(dataset, set_name) else "results/features"
    return f"{prefix}/{set_name}/{dataset}/{home}/{video}.h5"


INPUT_FILES["features"] = features_file


def planned_source(method, dataset):
    """What the features a method reads on a dataset will be, for its report rows."""
    set_name = feature_set(method)
    clip, patches = FEATURE_SETS[set_name]
    folders = published_folders(dataset, set_name)
    if folders:
        return FeatureSource(set_name, "published", (("upstream extractor", f"published features from {folders[clip]}"),))
    weights = tuple((b, Path(weights_file(b)).name if weights_file(b) else "random-init") for b in backbones_needed(set_name))
    return FeatureSource(set_name, "extracted", weights, float(FEATURES["spatial_scale"]), missing_streams(set_name),
                         patches_reconstructed=patches is not None)


def check_weights(method, dataset):
    """Stop before anything runs when extraction would need weights that are not there."""
    set_name = feature_set(method)
    for backbone in backbones_needed(set_name):
        configured = FEATURES["weights"].get(backbone)
        if configured and not Path(configured).is_file():
            raise WorkflowError(f"config key 'features.weights.{backbone}': {configured} does not exist")
        if weights_file(backbone) is None and not FEATURES["allow_random_weights"]:
            record = REGISTRY[backbone]
            raise WorkflowError(
                f"features: no weights for backbone '{backbone}' ({set_name} features, read by {method} on "
                f"{dataset}). Put the file at {Path(FEATURES['weights_dir']) / record.file_name} (released at "
                f"{record.url}, checksum {record.checksum or 'not published: its sha256 is logged on first use'}) "
                f"or name it in features.weights.{backbone}; or set features.allow_random_weights: true for a "
                f"smoke run whose numbers are marked not comparable to the papers"
            )


# Every feature method's entry gets the description of its features per dataset, which its report rows carry.
for _method, _dataset, _ in runs():
    if get_method_class(_method).input_kind == "features":
        if not published_folders(_dataset, feature_set(_method)):
            check_weights(_method, _dataset)
        _paper = get_method_class(_method).paper_features
        config["methods"][_method].setdefault(FEATURE_SOURCE_KEY, {})[_dataset] = planned_source(_method, _dataset).describe(_paper)


def extraction_weights(wildcards):
    return [f for f in map(weights_file, backbones_needed(wildcards.feature_set)) if f]


def extraction_args(wildcards):
    args = [
        f"--batch-size {FEATURES['batch_size']}",
        f"--device {FEATURES['device']}",
        f"--spatial-scale {FEATURES['spatial_scale']}",
        f"--seed {config['seed']}",
        f"--weights-dir {shlex.quote(FEATURES['weights_dir'])}",
    ]
    for backbone in backbones_needed(wildcards.feature_set):
        if weights_file(backbone):
            args.append("--weights " + shlex.quote(f"{backbone}={weights_file(backbone)}"))
    if FEATURES["allow_random_weights"]:
        args.append("--allow-random-weights")
    return " ".join(args)


def extraction_gpus(wildcards):
    """One GPU per extraction job; the profile maps it to a partition or gres (the step runs on CPU too)."""
    return 1


rule extract_features:
    """I3D features of one video: the clip views and, for sets with patches, every patch grid."""
    input:
        frames=lambda wildcards: frames_file(wildcards.dataset, wildcards.split, wildcards.video),
        weights=extraction_weights,
    output:
        "results/features/{feature_set}/{dataset}/{split}/{video}.h5",
    wildcard_constraints:
        feature_set="|".join(sorted(FEATURE_SETS)),
    params:
        args=extraction_args,
    resources:
        gpu=extraction_gpus,
    log:
        "logs/extract_features/{feature_set}/{dataset}/{split}/{video}.log",
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m pipelines.features.extract {input.frames:q} {output:q} --feature-set {wildcards.feature_set}"
        " {params.args} > {log:q} 2>&1"


def published_clip(wildcards):
    clip = FEATURE_SETS[wildcards.feature_set][0]
    return str(find_clip_file(published_folders(wildcards.dataset, wildcards.feature_set)[clip], wildcards.video))


def published_patches(wildcards):
    patches = FEATURE_SETS[wildcards.feature_set][1]
    if patches is None:
        return []
    folder = published_folders(wildcards.dataset, wildcards.feature_set)[patches]
    return [str(find_patch_file(folder, wildcards.video, grid)) for grid in SSRL_PATCHES.grids]


def patch_args(wildcards, input):
    pairs = zip(SSRL_PATCHES.grids, input.patches)
    return " ".join("--patch " + shlex.quote(f"{rows}x{cols}={path}") for (rows, cols), path in pairs)


rule published_features:
    """One video's published I3D features in the features layout, checked against its frame count."""
    input:
        frames=lambda wildcards: frames_file(wildcards.dataset, wildcards.split, wildcards.video),
        clip=published_clip,
        patches=published_patches,
    output:
        "results/features/published/{feature_set}/{dataset}/{split}/{video}.h5",
    wildcard_constraints:
        feature_set="|".join(sorted(FEATURE_SETS)),
    params:
        preset=lambda wildcards: FEATURE_SETS[wildcards.feature_set][0],
        patches=patch_args,
    log:
        "logs/published_features/{feature_set}/{dataset}/{split}/{video}.log",
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m pipelines.features.published convert {input.clip:q} {output:q} --frames {input.frames:q}"
        " --preset {params.preset} {params.patches} > {log:q} 2>&1"
