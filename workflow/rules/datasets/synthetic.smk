# The synthetic demo dataset: rendered here, one job per video, deterministic from its seed.
# Its layout is read by pipelines/datasets/synthetic.py; its config entry is datasets.synthetic.


rule synthetic_video:
    """Render one synthetic video with its frame labels and ground-truth skeleton tracks."""
    output:
        video=f"{SYNTHETIC_ROOT}/videos/{{part}}/{{name}}.mp4",
        labels=f"{SYNTHETIC_ROOT}/labels/{{part}}/{{name}}.npy",
        poses=f"{SYNTHETIC_ROOT}/poses/{{part}}/{{name}}_alphapose_tracked_person.json",
    params:
        generator=synthetic_json(),
    wildcard_constraints:
        part=r"train|test|train_abnormal",
        name=r"[a-z]+_\d+",
    log:
        "logs/synthetic_video/{part}/{name}.log",
    conda:
        "../../../envs/frames.yaml"
    shell:
        "python -m pipelines.synthetic.generate video --params-json {params.generator:q} --split {wildcards.part}"
        " --name {wildcards.name} --video {output.video:q} --labels {output.labels:q} --poses {output.poses:q}"
        " > {log:q} 2>&1"


rule synthetic_splits:
    """The weakly-supervised split (video labels) and the manifest of every rendered video."""
    output:
        weak_split=f"{SYNTHETIC_ROOT}/weak_split.csv",
        manifest=f"{SYNTHETIC_ROOT}/manifest.json",
    params:
        generator=synthetic_json(),
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
