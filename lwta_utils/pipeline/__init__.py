"""The pipeline: the steps the notebooks call, the headless chain of notebooks, the report, and
the command lines (``python -m lwta_utils.pipeline``, ``python -m lwta_utils.pipeline.launch``)."""

import sys

# jsonschema (imported by nbformat, papermill's and the report's notebook reader) imports
# rfc3987_syntax when it is installed, only to check the 'iri' string format, which no notebook
# schema uses; that import builds a parser grammar: 1.5 s of every chain, report and test process
# on 2 CPU cores. Marked absent unless something imported it already: jsonschema then skips that format.
sys.modules.setdefault("rfc3987_syntax", None)
