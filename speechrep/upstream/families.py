"""Imports every upstream family module so that their registrations run; add new families here."""
from speechrep.upstream import baselines  # noqa: F401
from speechrep.upstream import apc  # noqa: F401
from speechrep.upstream import npc  # noqa: F401
from speechrep.upstream import mockingjay  # noqa: F401
from speechrep.upstream import cpc  # noqa: F401
from speechrep.upstream import wav2vec2  # noqa: F401
from speechrep.upstream import hubert  # noqa: F401
from speechrep.upstream import wavlm  # noqa: F401
from speechrep.upstream import data2vec  # noqa: F401
from speechrep.upstream import distilhubert  # noqa: F401
from speechrep.upstream import melhubert  # noqa: F401
from speechrep.upstream import best_rq  # noqa: F401
from speechrep.upstream import byol_a  # noqa: F401
from speechrep.upstream import wav2vec  # noqa: F401
from speechrep.upstream import discrete_bert  # noqa: F401
