# How a job asks Slurm for its GPUs. Clusters take either `--gpus=N` (Snakemake's `gpu`
# resource; Slurm's select/cons_tres) or `--gres=gpu:N` (the `gres` resource; every Slurm,
# and the only form a select/cons_res cluster accepts). The profile picks one with its
# `gpu_request` default resource: "gpus" (also when unset) or "gres". Its `gpu_type` default
# resource (e.g. a100; unset: any GPU) names the GPU model, asked for by GPU jobs only
# (`--gpus=a100:1` or `--gres=gpu:a100:1`). A rule that may use GPUs declares
# `resources: **gpu_resources(count)`, with count(wildcards) -> GPUs (0 = none).
import re

from snakemake.exceptions import WorkflowError

GPU_REQUEST_STYLES = ("gpus", "gres")


def gpu_request_style():
    """The profile's `gpu_request` default resource, "gpus" when it sets none."""
    style = _default_resource_text("gpu_request") or "gpus"
    if style not in GPU_REQUEST_STYLES:
        raise WorkflowError(f"default resource gpu_request={style!r}: use one of {', '.join(GPU_REQUEST_STYLES)}")
    return style


def _default_resource_text(name):
    """A string default resource of the profile as written (unquoted), None when unset."""
    setting = (workflow.resource_settings.default_resources or {}).get(name)
    # a string resource is kept as written: `gres`, or `'gres'` when quoted for Snakemake
    raw = None if setting is None else getattr(setting, "raw", setting)
    return None if raw is None else str(raw).strip("'\"")


def gpu_type():
    """The profile's `gpu_type` default resource (a GPU model such as a100), None when unset."""
    model = _default_resource_text("gpu_type")
    if model is not None and not re.fullmatch(r"[A-Za-z0-9_.]+", model):
        raise WorkflowError(f"default resource gpu_type={model!r}: a GPU model name such as a100 or h100")
    return model or None


def gpu_resources(count):
    """The resources that ask for ``count(wildcards)`` GPUs, of the profile's `gpu_type` if it
    names one, in the profile's style; a job without GPUs asks for neither."""
    model = gpu_type()
    if gpu_request_style() == "gres":

        def gres(wildcards):
            gpus = count(wildcards)
            return (f"gpu:{model}:{gpus}" if model else f"gpu:{gpus}") if gpus else None

        return {"gres": gres}
    if model is None:
        return {"gpu": count}
    # The plugin's gpu_model set for every job would ask for a GPU for CPU jobs too (--gpus=a100:0).
    return {"gpu": count, "gpu_model": lambda wildcards: model if count(wildcards) else None}
