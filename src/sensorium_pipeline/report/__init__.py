"""The HTML report's items: plots (PNG), tables (HTML) and the software versions.

``inputs`` reads the pipeline's outputs into plain tables and arrays, ``plots`` turns those
into matplotlib figures (pure functions, no pyplot state) written atomically as PNG,
``tables`` renders the scores as HTML, ``versions`` records software and config. The
Snakemake rules in ``workflow/rules/report.smk`` wire them to ``snakemake --report``.
"""
