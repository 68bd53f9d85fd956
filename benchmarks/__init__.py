"""asv benchmark suite of ebflow-bench (see ``asv.conf.json``; run with ``ebflow-bench track``)."""
