"""``python -m lwta_utils.pipeline``: the headless chain (see ``lwta_utils.pipeline.chain``)."""
from lwta_utils.pipeline.chain import main

raise SystemExit(main())
