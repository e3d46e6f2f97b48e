"""The train state and its storage, below the trainer and the evaluators.

`state` (TrainState: what a checkpoint holds and the step updates), `checkpointer` (a run's saves as it
trains: periodic async saves, keep-N, resume, damaged steps set aside), `restore` (a step read back into a
target, which steps are intact, a finished run's weights read partially), `config_file` (the config saved
beside the steps), `config_changes` (a resumed run's config against the saved one: refused, or taken on and
recorded), `legacy` (the layout before `TrainState.aux`, read and upgraded), and `runs` (reading a
finished run: the one way every reader of another run gets its config and weights).
"""
