rule evaluate:
    """Frame-level AUC (micro, macro) and AP of one seed's run of a method on a dataset split, with its protocol."""
    input:
        labels="results/labels/{dataset}/{split}.h5",
        scores=split_scores,
        checkpoint=curve_checkpoint,
    output:
        "results/eval/{method}/{dataset}/seed_{seed}/{split}.json",
    params:
        method=method_protocol_json,
        run_config=run_config,
        curve=lambda wildcards, input: optional_path("--checkpoint", input.checkpoint),
    log:
        "logs/evaluate/{method}/{dataset}/seed_{seed}/{split}.log",
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m pipelines.evaluate {wildcards.method} {wildcards.dataset} {wildcards.split} {input.labels:q}"
        " {output:q} {input.scores:q} --params-json {params.method:q} --run-config {params.run_config:q} --seed {wildcards.seed}"
        " {params.curve} > {log:q} 2>&1"


rule plot_timelines:
    """Score timelines of a few test videos (of the method's first seed) with their abnormal frames shaded."""
    input:
        labels="results/labels/{dataset}/{split}.h5",
        scores=first_seed_scores,
    output:
        report(
            "results/report/timelines/{dataset}_{split}_{method}.png",
            category="Timelines",
            caption="../report/timeline.rst",
        ),
    wildcard_constraints:
        # shortest dataset first, so that "<dataset>_weak_test_<method>" is not read as dataset "<dataset>_weak"
        dataset=r"[a-z0-9_]+?",
    params:
        method=method_protocol_json,
        videos=config["report"]["timeline_videos"],
    log:
        "logs/plot_timelines/{dataset}_{split}_{method}.log",
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m pipelines.timeline {wildcards.method} {input.labels:q} {output:q} {input.scores:q}"
        " --params-json {params.method:q} --videos {params.videos} > {log:q} 2>&1"


rule report_tables:
    """The AUC table (CSV, Markdown, HTML; mean and std over seeds) beside the papers' numbers, each seed's
    numbers, and a ROC plot per dataset."""
    input:
        papers=workflow.source_path("../resources/paper_results.csv"),
        evals=eval_files(),
    output:
        table=report("results/report/auc_table.csv", category="Tables", caption="../report/table.rst"),
        markdown="results/report/auc_table.md",
        provenance="results/report/provenance.json",
        by_seed=report("results/report/auc_by_seed.csv", category="Tables", caption="../report/by_seed.rst"),
        html=report("results/report/auc_table.html", category="Tables", caption="../report/table.rst"),
        roc=[
            report(f"results/report/roc_{d}.png", category="ROC curves", caption="../report/roc.rst")
            for d in sorted({d for _, d, _ in runs()})
        ],
    log:
        "logs/report_tables/report.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m pipelines.report results/report {input.papers:q} {input.evals:q} > {log:q} 2>&1"

