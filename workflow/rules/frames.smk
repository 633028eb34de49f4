rule extract_frames:
    """Decode one video or frame folder into a frames HDF5 file."""
    input:
        source=frame_source_input,
    output:
        "results/frames/{dataset}/{split}/{video}.h5",
    params:
        args=frame_args,
    log:
        "logs/extract_frames/{dataset}/{split}/{video}.log",
    conda:
        "../../envs/frames.yaml"
    shell:
        "python -m pipelines.frames {params.args} {output:q} > {log:q} 2>&1"
