"""The ``layerfreeze`` command: freeze and inspect checkpoints locally, or start the service."""
