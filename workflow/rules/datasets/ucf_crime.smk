# UCF-Crime: class folders of videos, official split lists, temporal annotation of the test videos.
# Its layout and label formats are read by pipelines/datasets/ucf_crime.py; its config entry is datasets.ucf_crime.


rule ucf_crime_labels:
    """Canonical frame labels of one ucf_crime split, checked against the decoded frame counts."""
    input:
        unpack(labels_inputs("ucf_crime")),
    output:
        "results/labels/ucf_crime/{split}.h5",
    params:
        name="ucf_crime",
        dataset=dataset_json("ucf_crime"),
    log:
        "logs/ucf_crime_labels/{split}.log",
    conda:
        "../../../envs/frames.yaml"
    shell:
        LABELS_COMMAND
