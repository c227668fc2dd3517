"""Audio front end: file I/O, resampling and Kaldi-compatible features."""

from speechrep.audio.features import (
    FeatureExtractor,
    FrameOptions,
    cmvn,
    deltas,
    fbank,
    mel_banks,
    mel_spectrogram,
    mfcc,
    num_frames,
    spectrogram,
)
from speechrep.audio.augment import (add_noise, apply_eq, band_limit, clip, coloured_noise, random_eq,
                                      reverberate, snr_db, speed_perturb, synthetic_rir)
from speechrep.audio.io import AudioInfo, audio_info, load_audio, resample, save_audio
from speechrep.audio.pitch import PitchTrack, frame_energy_db, pitch_track
