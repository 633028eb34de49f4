"""Validate the configuration before the DAG is built, with one message that names the key.

JSON-schema validation (``workflow/schemas/config.schema.yaml``, with each method's keys in
``workflow/schemas/methods/<method>.schema.yaml``) fills defaults and rejects misspelled or
unknown keys; then every enabled dataset must have a rule file and an adapter,
and its raw paths must exist: the label files and every video its splits list.
"""
from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

from pipelines.datasets import DatasetError, LabelError, adapter_names, get_adapter


# libyaml's safe loader when PyYAML was built with it (same rules as yaml.safe_load, about 7x faster on the
# schemas, which every snakemake start reads); the pure-Python one otherwise.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_REPO = Path(__file__).resolve().parents[1]


def _load_yaml(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_SAFE_LOADER)


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the offending key."""


def _extend_with_defaults(validator_class):
    """A validator that fills each object's missing properties with their schema defaults."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _strict_integers(validator_class):
    """JSON Schema counts 64.0 as an integer; a float where a count, size or seed belongs passed the
    check and then failed inside a job (``--size 64.0``) or as a bare traceback. Here it is refused."""
    checker = validator_class.TYPE_CHECKER.redefine(
        "integer", lambda _, instance: isinstance(instance, int) and not isinstance(instance, bool)
    )
    return jsonschema.validators.extend(validator_class, type_checker=checker)


_Validator = _strict_integers(_extend_with_defaults(jsonschema.Draft7Validator))


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _message(error: jsonschema.ValidationError) -> str:
    where = list(error.absolute_path)
    if error.validator == "additionalProperties" and where in (["datasets"], ["methods"]):
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        known = ", ".join(sorted(error.schema.get("properties", {})))
        kind = where[0].removesuffix("s")
        module = _REPO / "models" / f"{unknown[0]}.py"
        if where == ["methods"] and module.is_file() and "@register" in module.read_text():
            return (f"config key 'methods.{unknown[0]}': models/{unknown[0]}.py exists, but "
                    f"workflow/schemas/methods/{unknown[0]}.schema.yaml does not: every method needs the "
                    f"schema of its config entry (README: Adding a method)")
        return f"config key '{where[0]}.{unknown[0]}': unknown {kind}; known {where[0]}: {known}"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unexpected = sorted(set(error.instance) - set(allowed))
        key = _key(where + [unexpected[0]]) if unexpected else _key(where)
        return f"config key '{key}' is not allowed here; allowed keys: {', '.join(allowed)}"
    if "propertyNames" in error.absolute_schema_path:  # a section keyed by dataset or preset name
        known = ", ".join(map(str, error.validator_value)) if error.validator == "enum" else error.message
        return f"config key '{_key(where + [error.instance])}': unknown name; known: {known}"
    if error.validator == "required":
        return f"config key '{_key(where)}': {error.message}"
    return f"config key '{_key(where)}': {error.message}"


def load_schema(schema_path: Path) -> dict:
    """The config schema with every method's schema file placed under ``methods``."""
    schema = _load_yaml(schema_path)
    methods = schema["properties"]["methods"]["properties"]
    for path in sorted((schema_path.parent / "methods").glob("*.schema.yaml")):
        methods[path.name.removesuffix(".schema.yaml")] = _load_yaml(path)
    schema["definitions"]["dataset_name"]["enum"] = sorted(schema["properties"]["datasets"]["properties"])
    return schema


EVALUATION_SPLITS = ("test", "weak_test")


def no_videos_message(adapter, entry: dict, split: str) -> str:
    """What to say of a split without videos. Every run needs its evaluation split; a training split
    only when an enabled method trains on it (the workflow checks those: it knows the methods)."""
    where = f" under {entry['root']}" if entry.get("root") else ""
    hint = f" (expected: {adapter.expects['root']})" if "root" in adapter.expects else ""
    return f"datasets.{adapter.name}: no videos of its {split} split found{where}{hint}"


def dataset_config_error(name: str, err: DatasetError | LabelError) -> ConfigError:
    """A dataset adapter's error as a config error naming the key: the one the message starts with
    (``datasets.<name>.<key>: ...``), or the dataset's entry."""
    key, _, problem = str(err).partition(": ")
    if not key.startswith(f"datasets.{name}"):
        key, problem = f"datasets.{name}", str(err)
    return ConfigError(f"config key '{key}': {problem}")


def validate(config: dict, schema_path: Path, rules_dir: Path) -> dict:
    """Return ``config`` with defaults filled, or raise ConfigError naming the first bad key."""
    schema = load_schema(Path(schema_path))
    errors = sorted(_Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(_message(errors[0]))
    for name, entry in config["datasets"].items():
        if not entry.get("enabled"):
            continue
        rule_file = Path(rules_dir) / "datasets" / f"{name}.smk"
        if name not in adapter_names() or not rule_file.is_file():
            raise ConfigError(f"config key 'datasets.{name}': no rule file {rule_file} or adapter for this dataset")
        adapter = get_adapter(name, entry)
        try:
            absent: dict[str, str] = {}  # a listed video's missing source -> its split
            for split in adapter.splits():
                videos = adapter.videos(split)
                if adapter.generated_by_workflow:
                    break  # rendered by its own rules: one listing checks its parameters, nothing is on disk yet
                if not videos and split in EVALUATION_SPLITS:  # training splits: see no_videos_message
                    raise DatasetError(no_videos_message(adapter, entry, split))
                for video in videos:  # videos named by a list (UCF-Crime, the weak ShanghaiTech split)
                    if not Path(video.source).exists():
                        absent.setdefault(str(video.source), split)
                missing = [str(p) for p in adapter.label_files(split) if not Path(p).exists()]
                if missing:
                    raise DatasetError(f"datasets.{name}.labels: label file {missing[0]} not found")
            if absent:
                first = next(iter(absent))
                raise adapter.missing_videos(list(absent), f" (of the {absent[first]} split)")
        except (DatasetError, LabelError) as err:
            raise dataset_config_error(name, err) from err
    if not any(entry.get("enabled") for entry in config["datasets"].values()):
        raise ConfigError("config key 'datasets': no dataset is enabled")
    check_method_files(config)
    check_method_settings(config)
    return config


# Method keys that name a file the method reads (a released checkpoint, backbone weights): checked
# here, so that a wrong path stops the run naming its key, not as a missing input of a job.
METHOD_FILE_KEYS = {"stg_nf": ("pretrained",), "genet": ("guidance_pretrained", "i3d_weights")}


def check_method_files(config: dict) -> None:
    for method, keys in METHOD_FILE_KEYS.items():
        entry = config["methods"].get(method) or {}
        if not entry.get("enabled"):
            continue
        places = [(f"methods.{method}", entry)] + [
            (f"methods.{method}.per_dataset.{dataset}", values)
            for dataset, values in (entry.get("per_dataset") or {}).items()]
        for where, values in places:
            for key in keys:
                check_file_key(f"{where}.{key}", values.get(key))


def check_file_key(key: str, value) -> None:
    """A config key naming a file (None: unset) must name one that exists."""
    if value is not None and not Path(value).is_file():
        raise ConfigError(f"config key '{key}': {value} {'is not a file' if Path(value).exists() else 'does not exist'}")


def check_method_settings(config: dict) -> None:
    """An enabled method's settings that contradict each other (its ``Method.config_problem``, for each
    enabled dataset's values), and BlazePose's model files where a pose method reads its skeletons: a
    job would fail on them only after the expensive steps before it."""
    from models import get_method_class  # imported here: a method's module loads its libraries
    from pipelines.poses.source import backend_of
    from pipelines.presets import resolve_params

    datasets = sorted(name for name, entry in config["datasets"].items() if entry.get("enabled"))
    reads_poses = False
    for method, entry in sorted(config["methods"].items()):
        if not entry.get("enabled"):
            continue
        found = get_method_class(method)
        reads_poses |= found.input_kind in ("poses", "person_tubes")
        for dataset in datasets:
            problem = found.config_problem(resolve_params(entry, dataset))
            if problem:
                key, text = problem
                own = key in ((entry.get("per_dataset") or {}).get(dataset) or {})
                where = f"methods.{method}.per_dataset.{dataset}" if own else f"methods.{method}"
                raise ConfigError(f"config key '{where}.{key}': {text}")
    if reads_poses and any(backend_of(config["poses"], dataset) == "blazepose" for dataset in datasets):
        for key in ("detector_weights", "landmark_weights"):
            check_file_key(f"poses.blazepose.{key}", config["poses"]["blazepose"].get(key))
