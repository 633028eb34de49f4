# How a job asks Slurm for its GPUs. Clusters take either `--gpus=N` (Snakemake's `gpu`
# resource; Slurm's select/cons_tres) or `--gres=gpu:N` (the `gres` resource; every Slurm,
# and the only form a select/cons_res cluster accepts). The profile picks one with its
# `gpu_request` default resource: "gpus" (also when unset) or "gres". A rule that may use
# GPUs declares `resources: **gpu_resources(count)`, with count(wildcards) -> GPUs (0 = none).
from snakemake.exceptions import WorkflowError

GPU_REQUEST_STYLES = ("gpus", "gres")


def gpu_request_style():
    """The profile's `gpu_request` default resource, "gpus" when it sets none."""
    setting = (workflow.resource_settings.default_resources or {}).get("gpu_request")
    # a string resource is kept as written: `gres`, or `'gres'` when quoted for Snakemake
    raw = None if setting is None else getattr(setting, "raw", setting)
    style = "gpus" if raw is None else str(raw).strip("'\"")
    if style not in GPU_REQUEST_STYLES:
        raise WorkflowError(f"default resource gpu_request={style!r}: use one of {', '.join(GPU_REQUEST_STYLES)}")
    return style


def gpu_resources(count):
    """The one resource that asks for ``count(wildcards)`` GPUs in the profile's style."""
    if gpu_request_style() == "gres":

        def gres(wildcards):
            gpus = count(wildcards)
            return f"gpu:{gpus}" if gpus else None

        return {"gres": gres}
    return {"gpu": count}
