"""Each stage kind as the compiler sees it, one module per row of `compiler.kinds.KINDS`:

- `VERSION`: bump by hand whenever a change of `runtime.<kind>` changes results (it changes every id);
- `Config`: the frozen stage config, every field of which (but those marked NOT_IN_ID) enters the id;
- `plan(run)`: the instances the kind adds to one run (`compiler.planning.RunPlanning`), in table order;
  a kind of scope `spec` (the report) plans once over all runs instead.

The runtime (`runtime.<kind>`) reads the same `Config` from the stage JSON and runs it.
"""
