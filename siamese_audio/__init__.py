"""siamese-audio: few-shot audio learning with Siamese networks on log-mel spectrograms.

The stages are subpackages, each importing only the ones below it
(``manifests`` → ``features`` → ``pipeline`` → ``training`` / ``evaluation``);
this top package holds what belongs to no stage: the console script
(:mod:`siamese_audio.cli`), the demo, the exception family
(:mod:`siamese_audio.errors`), atomic file writes (:mod:`siamese_audio.files`),
library versions (:mod:`siamese_audio.versions`) and logging
(:mod:`siamese_audio.logs`). Importing it imports nothing else.
"""
