"""Loading and saving of base pipelines (MiniSD or any SD 1.x/2.x directory), tokenizer, tiny test models."""
