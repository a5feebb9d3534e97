"""contrastlab.evaluation"""
