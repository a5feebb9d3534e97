"""contrastlab.views"""
