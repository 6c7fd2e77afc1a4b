"""`mixsteer check`: find every problem a run would hit before a GPU starts, and report them at once.

Validation (`compiler.validate`) knows only the spec; preflight looks at the world the spec points to:

- every source of every section (pretraining data, probe data, prompt sets, detection and
  cross-entropy data, post-training data, attack prompts, scorer-check references): a local one is
  opened and its first records are checked for every field the spec asks for (`local`); a Hub one must
  be reachable, its token present when it is gated, its revision pinned (`hub`);
- credentials (the Perspective key where a Perspective scorer is used), the GPUs visible against the
  largest `resources.*.gpus`, and free disk against the estimate of the outputs not yet written
  (`machine`, `estimates`).

Each finding names the spec key it comes from, located at file:line:col like a validation problem.
`check.preflight` runs them all (`mixsteer check`); the workflow runs only `check.local_source_problems`
before its first job: no network, no GPU query.
"""
