# UCSD Ped2: frame folders; labels from frame_labels_ped2.npy, test videos end to end.
# Its layout and label formats are read by pipelines/datasets/ped2.py; its config entry is datasets.ped2.


rule ped2_labels:
    """Canonical frame labels of one ped2 split, checked against the decoded frame counts."""
    input:
        unpack(labels_inputs("ped2")),
    output:
        "results/labels/ped2/{split}.h5",
    params:
        name="ped2",
        dataset=dataset_json("ped2"),
    log:
        "logs/ped2_labels/{split}.log",
    conda:
        "../../../envs/frames.yaml"
    shell:
        LABELS_COMMAND
