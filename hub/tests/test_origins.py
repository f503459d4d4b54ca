import pytest
from condorlab.origins import labs_subdomain_hook


def test_labs_live_under_the_labs_domain_not_the_hubs():
    hook = labs_subdomain_hook("labs.localhost")
    assert hook("alice", "hub.localhost", "user") == "alice.labs.localhost"
    assert hook("alice", "hub.localhost", "service") == "alice--service.labs.localhost"


def test_a_name_that_is_no_dns_label_is_encoded_as_jupyterhub_does():
    host = labs_subdomain_hook("Labs.Example.NET.")("erin.lee", "jupyter.example.org", "user")
    assert host.endswith(".labs.example.net") and host.startswith("u-erinlee--"), host
    assert host.count(".") == 3


@pytest.mark.parametrize("domain", ["", "labs", "."])
def test_the_labs_domain_must_be_a_dns_domain(domain):
    with pytest.raises(ValueError, match="labs' domain"):
        labs_subdomain_hook(domain)
