"""contrastlab.data"""
