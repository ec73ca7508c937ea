"""Services of checkpoint images: the only writers of CheckpointImage rows and image files."""
