"""contrastlab.encoders"""
