"""One-line summaries of a record's calibration and rank search (pure; the CLI prints them)."""

from __future__ import annotations

from convtool.report import ConversionRecord


def summary_lines(record: ConversionRecord) -> list[str]:
    """Human-readable lines about the refit and the ``--max-drift`` search, if any ran."""
    cal = record.calibration or {}
    lines = []
    if "layers_refitted" in cal:
        total = cal["layers_refitted"] + cal["layers_kept_data_free"]
        lines.append(
            f"calibration: {cal['samples']} samples ({cal['held_out_samples']} held out) from {cal['source']}; "
            f"{cal['layers_refitted']} of {total} layers refitted, in {cal['seconds']:.1f} s"
        )
    search = cal.get("search")
    if search:
        agree = search.get("top1_agreement")
        lines.append(
            f"max-drift search ({search['metric']}): drift {search['drift']:.4g} (budget {search['max_drift']:g}; "
            f"rel L2 {search['rel_l2']:.4g}" + (f", top-1 agreement {agree:.1%}" if agree is not None else "")
            + f") on {search['samples']} samples ({search['data']}), {search['evaluations']} evaluations, "
            f"{search['seconds']:.1f} s"
        )
    return lines
