"""contrastlab.report"""
