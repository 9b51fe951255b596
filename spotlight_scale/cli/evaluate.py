"""``spotlight-scale evaluate``: pixel, segmentation and feature metrics, and a report."""

from __future__ import annotations

from pathlib import Path

import click

from .options import cluster_options, overwrite_option, store_argument


def _floats(ctx, param, value):
    if not value:
        return None
    try:
        return [float(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None


@click.command(epilog="""\b
Labels: each prediction's labels come from --labels NAME=LABELS; without it,
labels named seg-<NAME> are used when `segment` wrote them (and seg-target for
--target-labels). Post-thresholding sweep: labels named <LABELS>-t<T> (from
`segment --image prediction:NAME --threshold T --name <LABELS>-t<T>`) are
found automatically; --sweep adds PSNR-only thresholds. AP at the model's own
threshold: labels named <LABELS>-model (from `segment --image prediction:NAME
--foreground model --name <LABELS>-model`) are found automatically and reported
beside the AP of <LABELS> (Otsu recomputed on the prediction).
Profiles: --profiles DIR reads DIR/target and DIR/<NAME> (`profile --out`),
or give --profiles target=DIR --profiles NAME=DIR.
\b
Example:
  spotlight-scale evaluate demo/store.ome --prediction fnet --prediction spotlight \\
      --profiles demo/profiles --out demo/report""")
@store_argument
@click.option("--prediction", "predictions", multiple=True, required=True,
              help="Prediction name (`predict --name`); repeat for several models.")
@click.option("--gt-labels", default="gt", show_default=True, help="Ground-truth labels name.")
@click.option("--labels", "labels", multiple=True,
              help="NAME=LABELS: labels segmented from prediction NAME (repeatable).")
@click.option("--target-labels", default=None,
              help="Labels segmented from the real target [default: seg-target if present].")
@click.option("--profiles", multiple=True,
              help="Profiles: DIR (with target/ and <NAME>/), or NAME=DIR (repeatable).")
@click.option("--split", default="test", show_default=True,
              help="Fields to evaluate (train, val, test, or all).")
@click.option("--out", "out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Report directory [default: STORE/reports/evaluate].")
@click.option("--bin-delta", type=float, default=5, show_default=True,
              help="FRC/FSC ring width in frequency samples (the paper: 5).")
@click.option("--sweep", callback=_floats, default=None,
              help="Extra post-thresholding intensities T1,T2,... (raw target units).")
@click.option("--no-report", is_flag=True, help="Write the tables only, no figures.")
@overwrite_option
@cluster_options
def evaluate(store, predictions, gt_labels, labels, target_labels, profiles, split, out,
             bin_delta, sweep, no_report, overwrite, cluster, cluster_config, workers):
    """Score predictions against the target: PSNR/SSIM/MicroMS3IM/FRC (whole field and
    foreground), segmentation AP vs ground truth, and feature cosine distances; write
    metrics.parquet, summary.json and report.md with figures to REPORT_DIR."""
    from ..io.store import Store
    from ..pipelines.evaluate import evaluate as run, parse_mapping

    out = out or Path(store) / "reports" / "evaluate"
    st = Store(store)
    summary = run(
        st, list(predictions), out=out, gt_labels=gt_labels,
        labels=parse_mapping(labels, "labels", list(predictions)),
        target_labels=target_labels, profiles=list(profiles) or None, split=split,
        bin_delta=bin_delta, sweep=sweep, cluster=cluster, workers=workers,
        cluster_config=str(cluster_config) if cluster_config else None,
        overwrite=overwrite, report=not no_report)
    for model, stats in summary["models"].items():
        parts = []
        for m in ("psnr", "ssim", "ap50"):
            v = stats[m]["mean"]
            if v is not None:
                parts.append(f"{m} {v:.3f}")
        click.echo(f"{model}: " + (", ".join(parts) or "-"))
    target = out / ("report.md" if not no_report else "summary.json")
    click.echo(f"evaluated {summary['n_fields']} fields; report: {target}")
