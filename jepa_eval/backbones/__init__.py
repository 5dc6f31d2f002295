"""Stage 1: checkpoint files and model names -> a timm ViT backbone."""
