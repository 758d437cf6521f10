"""Paper-ready results from runs and sweeps: ``python -m undertale.report <dir>...`` (see ``docs/report.md``).

- :mod:`.jobs`: find the run directories and read what each wrote (metrics, config, overrides, environment,
  evaluation and similarity results);
- :mod:`.history`: the metrics logged over steps (offline W&B runs, or the CSV log);
- :mod:`.versions`: the code version of each job; mixed versions are refused;
- :mod:`.values`: the swept values (the overrides that differ between jobs);
- :mod:`.table`: one row per job, sorted by the objective; markdown and CSV;
- :mod:`.scaling`: speed-up and efficiency against the number of processes;
- :mod:`.figures`: the PNG figures;
- :mod:`.build`: all of it, written to the output directory;
"""
