rule train_stage:
    """Run one training stage of a method on a dataset's training split."""
    input:
        unpack(evaluation_inputs),
        inputs=train_inputs,
        labels=train_labels,
        previous=previous_checkpoint,
        released=released_checkpoint,
    output:
        "results/models/{method}/{dataset}/seed_{seed}/{stage}.pt",
    params:
        method=training_json,
        previous=lambda wildcards, input: optional_path("--previous", input.previous),
        labels=lambda wildcards, input: optional_path("--labels", input.labels),
        evaluation=evaluation_args,
    threads: 2  # profiles raise it (set-threads) on cluster nodes
    resources:
        **gpu_resources(method_resources),
        method_runtime=method_runtime,
    log:
        "logs/train_stage/{method}/{dataset}/seed_{seed}/{stage}.log",
    conda:
        "../../envs/torch.yaml"
    shell:
        "OMP_NUM_THREADS={threads} python -m pipelines.train {wildcards.method} {wildcards.stage} {output:q} {input.inputs:q}"
        " {params.previous} {params.labels} {params.evaluation} --params-json {params.method:q}"
        " --runtime-json {resources.method_runtime:q} --seed {wildcards.seed} > {log:q} 2>&1"


rule score_video:
    """Score every frame of one test video."""
    input:
        unpack(score_inputs),
    output:
        "results/scores/{method}/{dataset}/seed_{seed}/{split}/{video}.h5",
    params:
        checkpoint=checkpoint_arg,
        previous=previous_arg,
        method=method_json,
    threads: 1
    resources:
        **gpu_resources(method_resources),
        method_runtime=method_runtime,
    log:
        "logs/score_video/{method}/{dataset}/seed_{seed}/{split}/{video}.log",
    conda:
        "../../envs/torch.yaml"
    shell:
        "OMP_NUM_THREADS={threads} python -m pipelines.score {wildcards.method} {input.video:q} {output:q} {params.checkpoint}"
        " {params.previous} --params-json {params.method:q} --runtime-json {resources.method_runtime:q}"
        " --seed {wildcards.seed} > {log:q} 2>&1"
