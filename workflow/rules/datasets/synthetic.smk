# The synthetic demo dataset: rendered here in shards of videos_per_job videos (one job each),
# deterministic from its seed.
# Its layout is read by pipelines/datasets/synthetic.py; its config entry is datasets.synthetic.


rule synthetic_shard:
    """Render one shard: datasets.synthetic.videos_per_job consecutive videos of a generator split,
    each with its frame labels and ground-truth skeleton tracks, into one folder."""
    output:
        directory(f"{SYNTHETIC_ROOT}/{{part}}/{{shard}}"),
    params:
        generator=lambda wildcards: synthetic_json(wildcards.part),
        version=GENERATOR_VERSION,  # not passed on: a new generator version renders again
        videos_per_job=get_adapter("synthetic", SYNTHETIC).videos_per_job,
    wildcard_constraints:
        part=r"train|test|train_abnormal",
        shard=r"shard_\d+",
    log:
        "logs/synthetic_shard/{part}/{shard}.log",
    conda:
        "../../../envs/frames.yaml"
    shell:
        "python -m pipelines.synthetic.generate shard --params-json {params.generator:q} --split {wildcards.part}"
        " --shard {wildcards.shard} --videos-per-job {params.videos_per_job} --out {output:q} > {log:q} 2>&1"


rule synthetic_splits:
    """The weakly-supervised split (video labels) and the manifest of every rendered video."""
    output:
        weak_split=f"{SYNTHETIC_ROOT}/weak_split.csv",
        manifest=f"{SYNTHETIC_ROOT}/manifest.json",
    params:
        generator=synthetic_json(),
        version=GENERATOR_VERSION,  # not passed on: a new generator version plans again
    log:
        "logs/synthetic_splits/splits.log",
    conda:
        "../../../envs/frames.yaml"
    shell:
        "python -m pipelines.synthetic.generate splits --params-json {params.generator:q}"
        " --weak-split {output.weak_split:q} --manifest {output.manifest:q} > {log:q} 2>&1"


rule synthetic_labels:
    """Canonical frame labels of one synthetic split, checked against the decoded frame counts."""
    input:
        unpack(labels_inputs("synthetic")),
        manifest=f"{SYNTHETIC_ROOT}/manifest.json",
    output:
        "results/labels/synthetic/{split}.h5",
    params:
        name="synthetic",
        dataset=dataset_json("synthetic"),
    log:
        "logs/synthetic_labels/{split}.log",
    conda:
        "../../../envs/frames.yaml"
    shell:
        LABELS_COMMAND
