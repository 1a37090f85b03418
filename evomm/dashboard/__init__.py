"""The run dashboard: ``evomm serve RUN_DIR`` (a live page over a JSON API) and ``report.html``
(the same page, its data embedded). It reads a run directory and writes nothing into it except
the explicit export action (``evomm export`` into ``RUN_DIR/exports/``); it imports the run's
readers (rundir, front, archive records) and never the runner or the search."""
