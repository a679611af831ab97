"""The ``confidence-router`` command: one entry point (:mod:`.main`), one module per
subcommand, and the argument types they share (:mod:`._args`)."""
