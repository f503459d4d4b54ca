# JupyterHub for condorlab: every session is an HTCondor job on an execute
# node, submitted as the user. The site's settings are in condorlab-hub.json
# beside this file, which site.yml writes from the inventory (jupyterhub_*
# variables, jupyterhub_config_overrides); change them there, not here.
from condorlab.settings import configure

configure(get_config())  # noqa: F821 - get_config is JupyterHub's
