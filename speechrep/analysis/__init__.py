"""Layer analysis: what each hidden state of an upstream holds.

- `probe`: one frozen-upstream run of a task per hidden state, the learned weighted sum and two
  feature-integration setups chosen on dev (`speechrep probe`, OUT/probe.json).
- `similarity`: linear CKA of every hidden state with log-mel frames, phone identity and word identity.
- `invariance`: per hidden state, NMI of k-means clusters of frames rendered under several distortion
  conditions with the condition and with the phone (`speechrep analyze invariance`, docs/robustness.md).

`docs/layer_analysis.md` describes the command, the estimator and the outputs.
"""
