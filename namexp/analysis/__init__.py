"""`namexp analyze`: NAM's weight distributions and gates, and channel masking by NAM / BN / random rankings.

- `weights`: per-layer statistics of the normalised weights and the mean gates on test images;
- `masking`: block-level sites, rankings, masks by forward hooks, the masking study and the fine-tune;
- `report`: tables (terminal, Markdown, CSV, JSON), PNG plots and TensorBoard logging;
- `command`: the `analyze` Typer command and `run_analyze`, the same as a plain function, in steps: plan (the
  checked options), run (the study), record (analysis.json), publish (analysis/, TensorBoard) and show.
"""
