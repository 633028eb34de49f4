# ShanghaiTech Campus: training videos, test frame folders, per-video masks; Zhong et al.'s weak split.
# Its layout and label formats are read by pipelines/datasets/shanghaitech.py; its config entry is datasets.shanghaitech.


rule shanghaitech_labels:
    """Canonical frame labels of one shanghaitech split, checked against the decoded frame counts."""
    input:
        unpack(labels_inputs("shanghaitech")),
    output:
        "results/labels/shanghaitech/{split}.h5",
    params:
        name="shanghaitech",
        dataset=dataset_json("shanghaitech"),
    log:
        "logs/shanghaitech_labels/{split}.log",
    conda:
        "../../../envs/frames.yaml"
    shell:
        LABELS_COMMAND
