rule extract_frames:
    """Decode one video or frame folder into a frames HDF5 file."""
    input:
        source=frame_source_input,
    output:
        frames="results/frames/{dataset}/{split}/{video}.h5",
        # the frame count, which the labels job reads: a frames file deleted once the features are
        # made (feature methods) is not extracted again when only the labels must be redone
        n_frames=count_file("results/frames/{dataset}/{split}/{video}.h5"),
    params:
        args=frame_args,
    log:
        "logs/extract_frames/{dataset}/{split}/{video}.log",
    conda:
        "../../envs/frames.yaml"
    shell:
        "python -m pipelines.frames {params.args} {output.frames:q} --count-out {output.n_frames:q} > {log:q} 2>&1"
