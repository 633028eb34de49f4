# CUHK Avenue: videos; labels from the .mat pixel masks or the liu2018 .npy (config: label_convention).
# Its layout and label formats are read by pipelines/datasets/avenue.py; its config entry is datasets.avenue.


rule avenue_labels:
    """Canonical frame labels of one avenue split, checked against the decoded frame counts."""
    input:
        unpack(labels_inputs("avenue")),
    output:
        "results/labels/avenue/{split}.h5",
    params:
        name="avenue",
        dataset=dataset_json("avenue"),
    log:
        "logs/avenue_labels/{split}.log",
    conda:
        "../../../envs/frames.yaml"
    shell:
        LABELS_COMMAND
