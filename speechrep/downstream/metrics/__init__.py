"""Downstream metrics for every SUPERB task, one module per family of metrics.

| task | metric | function |
|---|---|---|
| PR, ASR, SF | PER / WER / CER (jiwer edit distance) | `error_rate`, `word_error_rate`, `char_error_rate` |
| KS, SID, ER, PF | accuracy | `accuracy` |
| IC | accuracy, all slots right | `all_slots_accuracy` |
| ASV | EER, minDCF (p_target 0.01, C_miss = C_fa = 1) | `equal_error_rate`, `min_dcf` |
| SD | DER (frames, collar, overlap, Hungarian mapping) | `der_from_segments`, `combine_der` |
| QbE | MTWV (QUESST 2014 costs), MAP | `maximum_term_weighted_value`, `mean_average_precision` |
| SF | slot-type F1, slot-value CER | `slot_type_f1`, `slot_value_cer` |
| SE, SS | SI-SDR(i), PESQ (wb), STOI, PIT | `si_sdr`, `si_sdr_improvement`, `pesq_wb`, `stoi`, `pit_loss` |
"""
from speechrep.downstream.metrics.classification import accuracy, all_slots_accuracy
from speechrep.downstream.metrics.diarization import (
    DERResult,
    Segment,
    combine_der,
    der_from_segments,
    diarization_error_rate,
    read_rttm,
    segments_to_frames,
)
from speechrep.downstream.metrics.qbe import (
    QUESST_COST_FA,
    QUESST_COST_MISS,
    QUESST_P_TARGET,
    maximum_term_weighted_value,
    mean_average_precision,
)
from speechrep.downstream.metrics.separation import (
    pesq_wb,
    pit_assign,
    pit_loss,
    reorder_sources,
    si_sdr,
    si_sdr_improvement,
    stoi,
)
from speechrep.downstream.metrics.slots import parse_slots, slot_type_f1, slot_value_cer
from speechrep.downstream.metrics.text import char_error_rate, error_rate, word_error_rate
from speechrep.downstream.metrics.verification import equal_error_rate, min_dcf

__all__ = [
    "DERResult", "QUESST_COST_FA", "QUESST_COST_MISS", "QUESST_P_TARGET", "Segment", "accuracy",
    "all_slots_accuracy", "char_error_rate", "combine_der", "der_from_segments", "diarization_error_rate",
    "equal_error_rate", "error_rate", "maximum_term_weighted_value", "mean_average_precision", "min_dcf",
    "parse_slots", "pesq_wb", "pit_assign", "pit_loss", "read_rttm", "reorder_sources", "segments_to_frames",
    "si_sdr", "si_sdr_improvement", "slot_type_f1", "slot_value_cer", "stoi", "word_error_rate",
]
