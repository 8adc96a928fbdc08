"""How results are shown. Modules in reading order:

============  ============================================================================================
``style``     one figure style, the zone colours, the RANDOM WEIGHTS flag, ``save_figure``
``plots``     the figures: each function takes a results table and returns a matplotlib Figure
``explore``   tables about tasks and neurons (baselines, scores, overlap, top prompts) for notebooks 01-02
``report``    the reproduction report: one self-contained HTML page and its Markdown twin, from saved results
============  ============================================================================================
"""

MODULES = ("style", "plots", "explore", "report")
