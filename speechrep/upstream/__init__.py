"""The upstream hub: one interface to every SSL model family, baseline and published checkpoint."""
from speechrep.upstream.base import Upstream, UpstreamOutput
from speechrep.upstream.featurizer import Featurizer
from speechrep.upstream.registry import list_upstreams, register_upstream

__all__ = ["Featurizer", "Upstream", "UpstreamOutput", "list_upstreams", "register_upstream"]
