"""contrastlab.training"""
