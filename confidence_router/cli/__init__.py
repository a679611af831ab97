"""The `confidence-router` command: one entry point (`.main`), one module per
subcommand, and the argument types they share (`._args`)."""
