"""Research runs: the paper's tables rerun over seeds, with paired statistics.

    python -m research.paper_tables --table all   # Tables 2-4 on the phantom

`tables` names every row (its flags and the paper's numbers) and the five claims;
`paired` holds the statistics; `paper_tables` is the resumable command.
"""
