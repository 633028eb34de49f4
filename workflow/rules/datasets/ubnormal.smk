# UBnormal: Scene folders of videos; inverted .npy test labels named <video>_tracks.txt.
# Its layout and label formats are read by pipelines/datasets/ubnormal.py; its config entry is datasets.ubnormal.


rule ubnormal_labels:
    """Canonical frame labels of one ubnormal split, checked against the decoded frame counts."""
    input:
        unpack(labels_inputs("ubnormal")),
    output:
        "results/labels/ubnormal/{split}.h5",
    params:
        name="ubnormal",
        dataset=dataset_json("ubnormal"),
    log:
        "logs/ubnormal_labels/{split}.log",
    conda:
        "../../../envs/frames.yaml"
    shell:
        LABELS_COMMAND
