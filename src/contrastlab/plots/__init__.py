"""contrastlab.plots"""
