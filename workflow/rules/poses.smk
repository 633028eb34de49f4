# Skeletons for the pose-based methods: one poses file per video (pipelines/poses/store.py), made by
# the backend the config's `poses` section names for the dataset, and the person-tube I3D features
# GENet explores (pipelines/poses/tubes.py). The functions these rules call are in poses_inputs.smk.


include: "poses_inputs.smk"


rule poses:
    """One video's tracked skeletons as a poses file, from the dataset's pose backend."""
    input:
        unpack(pose_inputs),
    output:
        "results/poses/{dataset}/{split}/{video}.h5",
    params:
        command=pose_command,
    log:
        "logs/poses/{dataset}/{split}/{video}.log",
    conda:
        "../../envs/poses.yaml"
    shell:
        "{params.command} > {log:q} 2>&1"


rule alphapose_weights:
    """AlphaPose's weights checked against the sha256 pinned in the config, once per run, before any
    AlphaPose job reads (unpickles) them."""
    input:
        lambda wildcards: list(alphapose_weight_files().values()),
    output:
        ALPHAPOSE_WEIGHTS_RECORD,
    params:
        command=alphapose_weights_command,
    log:
        "logs/alphapose/weights.log",
    conda:
        "../../envs/poses.yaml"
    shell:
        "{params.command} > {log:q} 2>&1"


rule alphapose:
    """AlphaPose with tracking on one video (GPU node); its own script, in its own environment."""
    input:
        unpack(alphapose_inputs),
    output:
        "results/alphapose/{dataset}/{split}/{video}/alphapose-results.json",
    params:
        checkout=lambda wildcards: os.path.abspath(POSES["alphapose"]["checkout"]),
        args=alphapose_args,
    resources:
        **gpu_resources(pose_gpus),
    log:
        "logs/alphapose/{dataset}/{split}/{video}.log",
    conda:
        "../../envs/alphapose.yaml"
    shell:
        # demo_inference.py reports some failures and still exits 0: no results file is a failure.
        "(cd {params.checkout:q} && python scripts/demo_inference.py {params.args}) > {log:q} 2>&1"
        " && test -s {output:q}"


rule person_tubes:
    """I3D Mixed_5c maps of one video's person tubes, one per pose segment (GENet's input)."""
    input:
        unpack(tube_inputs),
    output:
        "results/tubes/{method}/{dataset}/{split}/{video}.h5",
    params:
        args=tube_command,
    resources:
        **gpu_resources(pose_gpus),
        tube_batch_size=tube_batch_size,
    log:
        "logs/person_tubes/{method}/{dataset}/{split}/{video}.log",
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m pipelines.poses.tubes {input.poses:q} {input.frames:q} {output:q} {params.args}"
        " --batch-size {resources.tube_batch_size} > {log:q} 2>&1"
