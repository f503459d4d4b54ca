"""condorlab: JupyterLab sessions that run as ordinary HTCondor jobs."""

__version__ = "0.1.0"
