# I3D snippet features, one file per video, for the methods whose input_kind is "features". Each method reads
# the feature set of its clip preset (features.presets) plus its own patch grids (SSRL). Per dataset the
# features are made one of three ways:
#   extracted from the frames here (rule extract_features, a GPU job)   results/features/<set>/...
#   read from published files (features.published_dirs, rule published_features)   results/features/published/<set>/...
#   published clip features with patch features extracted here, where only the clip preset is published
#   (rule published_clip_features, a GPU job)   results/features/published_clip/<set>/...
# A video in several splits is done once, under the split that holds its frames.
include: "feature_inputs.smk"


rule extract_features:
    """I3D features of one video: the clip views and, for sets with patches, every patch grid."""
    input:
        frames=video_frames,
        weights=extraction_weights,
    output:
        "results/features/{feature_set}/{dataset}/{split}/{video}.h5",
    wildcard_constraints:
        feature_set="|".join(sorted(FEATURE_SETS)),
    params:
        args=extraction_args,
    resources:
        **gpu_resources(extraction_gpus),
        **EXTRACTION_RUNTIME,
    log:
        "logs/extract_features/{feature_set}/{dataset}/{split}/{video}.log",
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m pipelines.features.extract {input.frames:q} {output:q} {params.args}"
        " --batch-size {resources.feature_batch_size} --device {resources.feature_device:q}"
        " --weights-sha256 {resources.weights_sha256:q} > {log:q} 2>&1"


rule published_features:
    """One video's published I3D features in the features layout, checked against its frame count."""
    input:
        frames=video_frames,
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


rule published_clip_features:
    """One video's published clip features with its patch features extracted here."""
    input:
        frames=video_frames,
        clip=published_clip,
        weights=extraction_weights,
    output:
        "results/features/published_clip/{feature_set}/{dataset}/{split}/{video}.h5",
    wildcard_constraints:
        feature_set="|".join(sorted(name for name, (_, patches) in FEATURE_SETS.items() if patches)),
    params:
        args=extraction_args,
    resources:
        **gpu_resources(extraction_gpus),
        **EXTRACTION_RUNTIME,
    log:
        "logs/published_clip_features/{feature_set}/{dataset}/{split}/{video}.log",
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m pipelines.features.extract {input.frames:q} {output:q} --published-clip {input.clip:q}"
        " {params.args} --batch-size {resources.feature_batch_size} --device {resources.feature_device:q}"
        " --weights-sha256 {resources.weights_sha256:q} > {log:q} 2>&1"
