"""The upstream hub: one interface to every SSL model family, baseline and published checkpoint."""
# families first: importing them fills the registry before anything can look a name up
from speechrep.upstream import families  # noqa: F401
from speechrep.upstream.base import Upstream, UpstreamOutput
from speechrep.upstream.featurizer import Featurizer
from speechrep.upstream.registry import list_upstreams, register_upstream
from speechrep.upstream.loading import export_upstream, load_upstream

__all__ = [
    "Featurizer", "Upstream", "UpstreamOutput", "export_upstream", "list_upstreams", "load_upstream",
    "register_upstream",
]
