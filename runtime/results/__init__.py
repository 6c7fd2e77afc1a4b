"""Analysis of finished results across specs: not a stage.

`table` reads the finished evaluate, attack and score folders the planner's run rows name into one tidy
table (`mixsteer results`); `compare` matches the runs of two specs and computes OTHER − BASE per measure
with paired bootstrap intervals where both scored the same items, pooled over seeds (`mixsteer compare`,
and the report's `report.compare_to` section); `render` writes the comparison as Markdown and HTML;
`items` holds the per-item readers they share with the report stage; `scorer_check_tables` the scorer
check's tables, which its stage writes and the report shows. Imports only the runtime's shared
helpers (stats, artifacts) and the compiler's errors, never a stage module.
"""
