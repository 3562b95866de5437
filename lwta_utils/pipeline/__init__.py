"""The pipeline: the steps the notebooks call, the headless chain of notebooks, the report, and
the command lines (``python -m lwta_utils.pipeline``, ``python -m lwta_utils.pipeline.launch``)."""
