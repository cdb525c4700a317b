"""Plotly figures of a run, shared by the dashboard (`app/views`) and the guided notebooks.

Pure functions: rows as `esper_lab.runs.RunReader` returns them (metrics records, events, snapshot and baselines
dicts) in, a `plotly.graph_objects.Figure` (or a table row) out. No Streamlit, no file access, no torch code;
imports only numpy, plotly and esper_lab.actions / config / runs.

- `common`: the shared look (`layout`, `make`, palette, stage colours) and the row helpers `col` / `updates`;
- `curves`: one run's training curves (return and accuracy with baselines, losses, entropy, KL, EV, speed, Q health);
- `compare`: several runs on one metric (`overlay`, `overlay_grid`), the EMA `smooth`, the comparison table row;
- `embeddings`: the blueprint-embedding table in 2-D (`pca_2d`, one snapshot or trails over snapshots), cosine
  similarity, per-blueprint outcomes from events;
- `ops`: Q(s, op) on the probe states (over updates, per snapshot, one decision) and a bar per op;
- `seeds`: stage segments and the swimlane, blend-alpha curves.
- `truth`: the critic's Q(s, op) beside its Monte Carlo ground truth (snapshots/truth.jsonl): one probe state's ops
  with intervals, the ranking table and a verdict, calibration (mean |Q - truth|, pair agreement) over updates.
- `rewards`: what a run's reward paid for: the per-term breakdown over env steps (`term_breakdown`), the term the
  policy farms (`dominant_term`, `farming_note`), the outcome table row (`outcome`).
"""
