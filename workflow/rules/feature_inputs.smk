# Look-ups of the feature rules (workflow/rules/features.smk): which feature set a method reads, how a
# dataset's features are made (extracted, published, or published clip features with extracted patches),
# the weights they need, and the per-video input file of every feature-reading method.
import shlex

from pipelines.features.feature_sets import FEATURE_SETS, backbones_needed, missing_streams
from pipelines.features.presets import PRESETS, SSRL_PATCHES
from pipelines.features.store import FEATURE_SOURCE_KEY, FEATURE_TAIL_KEY, FeatureSource, feature_set_name
from pipelines.features.registry import REGISTRY
from pipelines.provenance import sha256_file

FEATURES = config["features"]
# How a dataset's feature set is made, and the folder under results/features/ it goes to.
FEATURE_MODES = {"extracted": "", "published": "published/", "published_clip": "published_clip/"}


def feature_set(method):
    """The feature set a method reads: its configured clip preset, with its patch preset if it has one."""
    presets = FEATURES["presets"]
    if method not in presets:
        raise WorkflowError(f"config key 'features.presets.{method}': not set; {method} reads features")
    return feature_set_name(presets[method], getattr(get_method_class(method), "feature_patches", None))


def published_folders(dataset, preset):
    """The published folders of a preset's features of a dataset (one or several), or [] when none."""
    given = FEATURES["published_dirs"].get(dataset, {}).get(preset, [])
    return [given] if isinstance(given, str) else list(given)


def feature_mode(dataset, set_name):
    """"extracted", "published" or "published_clip" (published clip features, patch features extracted)."""
    clip, patches = FEATURE_SETS[set_name]
    if not published_folders(dataset, clip):
        if patches and published_folders(dataset, patches):
            raise WorkflowError(f"config key 'features.published_dirs.{dataset}.{patches}': published patch "
                                f"features are used with published {clip} features only; add those too")
        return "extracted"
    return "published_clip" if patches and not published_folders(dataset, patches) else "published"


def weights_file(backbone):
    """The weights file of a backbone: features.weights, else weights_dir/<released name> when present."""
    configured = FEATURES["weights"].get(backbone)
    if configured:
        return configured
    default = Path(FEATURES["weights_dir"]) / REGISTRY[backbone].file_name
    return str(default) if default.is_file() else None


def extracts_flow(dataset, set_name):
    """Whether the features of a dataset get the preset's TV-L1 flow stream here (features.flow, extracted
    clip features, a preset with a flow backbone)."""
    clip = FEATURE_SETS[set_name][0]
    return FEATURES["flow"] and feature_mode(dataset, set_name) == "extracted" and bool(PRESETS[clip].flow_backbone)


def extracted_backbones(dataset, set_name):
    """Backbones the features of a dataset need here: none when published, the patch backbone alone when
    only the clip features are, the flow backbone too when the flow stream is extracted."""
    mode = feature_mode(dataset, set_name)
    if mode == "published":
        return []
    return backbones_needed(set_name, published_clip=mode == "published_clip", flow=extracts_flow(dataset, set_name))


def features_file(method, dataset, split, video):
    set_name = feature_set(method)
    folder = FEATURE_MODES[feature_mode(dataset, set_name)]
    return f"results/features/{folder}{set_name}/{dataset}/{frames_home(dataset, split, video)}/{video}.h5"


INPUT_FILES["features"] = features_file


def planned_source(method, dataset):
    """What the features a method reads on a dataset will be, for its report rows."""
    set_name = feature_set(method)
    clip, patches = FEATURE_SETS[set_name]
    tail = PRESETS[clip].snippets.tail
    mode = feature_mode(dataset, set_name)
    weights = [(b, Path(weights_file(b)).name if weights_file(b) else "random-init")
               for b in extracted_backbones(dataset, set_name)]
    if mode == "extracted":
        return FeatureSource(set_name, "extracted", tuple(weights), tail, float(FEATURES["spatial_scale"]),
                             missing_streams(set_name, extracts_flow(dataset, set_name)),
                             patches_reconstructed=patches is not None)
    upstream = ("upstream extractor", f"published features from {', '.join(published_folders(dataset, clip))}")
    if mode == "published":
        return FeatureSource(set_name, "published", (upstream,), tail)
    return FeatureSource(set_name, "published clip, extracted patches", (upstream, *weights), tail,
                         float(FEATURES["spatial_scale"]), patches_reconstructed=True)


def check_weights(method, dataset):
    """Stop before anything runs when extraction would need weights that are not there."""
    set_name = feature_set(method)
    for backbone in extracted_backbones(dataset, set_name):
        configured = FEATURES["weights"].get(backbone)
        if configured and not Path(configured).is_file():
            raise WorkflowError(f"config key 'features.weights.{backbone}': {configured} does not exist")
        record = REGISTRY[backbone]
        if weights_file(backbone) is None and not FEATURES["allow_random_weights"]:
            raise WorkflowError(
                f"features: no weights for backbone '{backbone}' ({set_name} features, read by {method} on "
                f"{dataset}). Put the file at {Path(FEATURES['weights_dir']) / record.file_name} (released at "
                f"{record.url}, checksum {record.checksum or 'not published: pin its sha256 in features.weights_sha256'}) "
                f"or name it in features.weights.{backbone}; or set features.allow_random_weights: true for a "
                f"smoke run whose numbers are marked not comparable to the papers"
            )
        if weights_file(backbone) and record.checksum is None and backbone not in FEATURES["weights_sha256"]:
            raise WorkflowError(
                f"config key 'features.weights_sha256.{backbone}' is needed: no checksum was published for "
                f"{record.url}, and every weights file is checked before it is read. "
                f"{weights_file(backbone)} has sha256 {sha256_file(weights_file(backbone))}: check it against a "
                f"copy you trust, then set features.weights_sha256: {{{backbone}: <that sha256>}}"
            )


for _dataset, _presets in FEATURES["published_dirs"].items():
    for _preset in _presets:
        for _folder in published_folders(_dataset, _preset):
            if not Path(_folder).is_dir():
                raise WorkflowError(
                    f"config key 'features.published_dirs.{_dataset}.{_preset}': {_folder} is not a folder"
                )

# Every feature method's entry gets the description of its features per dataset, which its report rows carry,
# and their snippet tail, which decides how its frames are counted (evaluation-only keys: see the methods'
# protocol_params).
for _method, _dataset, _ in runs():
    if get_method_class(_method).input_kind == "features":
        check_weights(_method, _dataset)
        _planned = planned_source(_method, _dataset)
        config["methods"][_method].setdefault(FEATURE_SOURCE_KEY, {})[_dataset] = _planned.describe(
            get_method_class(_method).paper_features)
        config["methods"][_method].setdefault(FEATURE_TAIL_KEY, {})[_dataset] = _planned.tail


def extraction_weights(wildcards):
    return [f for f in map(weights_file, extracted_backbones(wildcards.dataset, wildcards.feature_set)) if f]


# How an extraction job runs, not what it computes: passed as resources (which a profile may set
# per rule) rather than params, so that changing them (another GPU, a smaller batch) reruns nothing.
# The weights pins go the same way: a pin checks the weights file, whose digest the features record,
# and changes no feature (pinning a file already in use must not redo its extractions).
EXTRACTION_RUNTIME = {
    "feature_batch_size": int(FEATURES["batch_size"]),
    "feature_device": str(FEATURES["device"]),
    "weights_sha256": ",".join(f"{name}={digest}" for name, digest in sorted(FEATURES["weights_sha256"].items()))
    or "none",
}


def extraction_args(wildcards):
    """What an extraction job computes (its params, so a change reruns it)."""
    args = [
        f"--feature-set {wildcards.feature_set}",
        f"--spatial-scale {FEATURES['spatial_scale']}",
        f"--weights-dir {shlex.quote(FEATURES['weights_dir'])}",
    ]
    for backbone in extracted_backbones(wildcards.dataset, wildcards.feature_set):
        if weights_file(backbone):
            args.append(f"--weights {shlex.quote(f'{backbone}={weights_file(backbone)}')}")
    if FEATURES["allow_random_weights"]:
        # The seed draws a random backbone only: with real weights it changes nothing.
        args += ["--allow-random-weights", f"--seed {DATA_SEED}"]
    if extracts_flow(wildcards.dataset, wildcards.feature_set):
        args.append("--flow")
    return " ".join(args)


def extraction_gpus(wildcards):
    """One GPU per extraction job, none with features.device cpu (the step runs there, slowly), so a
    CPU run asks the cluster for no GPU."""
    return 0 if FEATURES["device"] == "cpu" else 1


def video_frames(wildcards):
    return frames_file(wildcards.dataset, wildcards.split, wildcards.video)


def published_clip(wildcards):
    # Imported here, as in the pose rules: the module loads Blosc and OpenCV, which the DAG does without.
    from pipelines.features.published import find_clip_file

    clip = FEATURE_SETS[wildcards.feature_set][0]
    return str(find_clip_file(published_folders(wildcards.dataset, clip), wildcards.video))


def published_patches(wildcards):
    patches = FEATURE_SETS[wildcards.feature_set][1]
    if patches is None:
        return []
    from pipelines.features.published import find_patch_file

    folders = published_folders(wildcards.dataset, patches)
    return [str(find_patch_file(folders, wildcards.video, grid)) for grid in SSRL_PATCHES.grids]


def patch_args(wildcards, input):
    pairs = zip(SSRL_PATCHES.grids, input.patches)
    return " ".join(f"--patch {shlex.quote(f'{rows}x{cols}={path}')}" for (rows, cols), path in pairs)
