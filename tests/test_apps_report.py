"""The report's synthesis section: tables from synthesis.json, audio players with files beside the page."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from speechrep.bench.report.synthesis import copy_samples, synthesis_section


def test_section_tables_players_and_copied_samples(tmp_path: Path) -> None:
    assert synthesis_section(tmp_path) is None
    folder = tmp_path / "synthesis"
    (folder / "samples").mkdir(parents=True)
    for name in ("knn_0_before.wav", "knn_0_after.wav"):
        sf.write(folder / "samples" / name, np.zeros(160, np.float32), 16000)
    data = {"copy_synthesis": [{"system": "griffin-lim", "mcd_db": 1.5, "per": 0.2, "target_accept": 0.9}],
            "knn_vc": [{"vocoder": "mh2", "seconds": 30, "k": 4, "lambda": 1.0, "mcd_db": 4.0, "per": 0.3,
                        "target_accept": 0.7, "source_accept": 0.1}],
            "knn_vc_source": {"vocoder": "source (unconverted)", "mcd_db": 5.0, "per": 0.25,
                              "target_accept": 0.05, "source_accept": 0.9},
            "vc_task": [{"upstream": "fbank", "dev_mcd": 3.2, "test_mcd": 3.3}],
            "samples": [{"section": "knn", "title": "a <b> → c", "before": "samples/knn_0_before.wav",
                         "after": "samples/knn_0_after.wav"}]}
    (folder / "synthesis.json").write_text(json.dumps(data))
    body = synthesis_section(tmp_path)
    assert "griffin-lim" in body and "20.0" in body and "30" in body and "3.30" in body
    assert body.count("<audio") == 2 and 'src="synthesis/samples/knn_0_after.wav"' in body
    assert "a &lt;b&gt; → c" in body  # titles are escaped
    page_dir = tmp_path / "elsewhere"
    copy_samples(tmp_path, page_dir)
    assert (page_dir / "synthesis" / "samples" / "knn_0_after.wav").is_file()
