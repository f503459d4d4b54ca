"""condorlab's session job executable (wrapper.py), installed in the JupyterLab runtime on the execute nodes."""
