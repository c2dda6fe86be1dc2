"""The benchmark behind ``tools/bench.py``, one module per section.

``common`` holds what every section shares (the run's sizes, timing, peak memory, the model, the frames, the
question); ``ceilings``, ``prototype``, ``eager`` (the ``livewatch`` section), ``fastpath``, ``agreement``,
``oom``, ``kernels``, ``scaling`` and ``ingest`` each measure one thing and return its JSON; ``report`` sets the
figures against their floors and writes the markdown table. ``tools/bench.py`` parses the command line and runs
the section table. Frames come from ``livewatch.engine.synthetic`` and clips from ``tools/clips.py``, the makers
the warm-up and the tests use. No module here is named ``livewatch``: tools/ is on sys.path in the tests.
"""
