"""Build stages: each module has ``run(ctx: BuildContext)``; see generator/build.py."""
